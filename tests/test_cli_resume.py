"""`clinsynth fit/run --resume` after a real kill: the same model as a run never interrupted.

The CLI is SIGKILLed as soon as its staging folder holds a per-epoch checkpoint; the same command
with ``--resume`` continues from it, and the bundle samples exactly what an uninterrupted fit's
bundle samples (CPU, same seed). Without ``--resume`` the interrupted run is not thrown away.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clinsynth as cs
from clinsynth.cli import main
from clinsynth.data.output_dir import CHECKPOINT, staging_path

ARGS = ["--target", "arm", "--model", "acgan", "--epochs", "25", "--param", "batch_size=32", "--quiet", "--seed", "5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    arm = rng.integers(0, 2, n)
    path = tmp_path_factory.mktemp("resume") / "table.csv"
    pd.DataFrame({"age": rng.normal(60, 8, n).round(1), "sbp": (rng.normal(130, 15, n) + 6 * arm).round(0),
                  "sex": rng.choice(["F", "M"], n), "arm": arm}).to_csv(path, index=False)
    return path


def _kill_at_first_checkpoint(args: list[str], out: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "clinsynth.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = staging_path(out) / CHECKPOINT / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the fit ended or stalled before its first checkpoint"


def test_fit_killed_then_resumed_gives_the_uninterrupted_model(data, tmp_path, capsys):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["fit", str(data), "--out", str(whole), *ARGS]) == 0
    _kill_at_first_checkpoint(["fit", str(data), "--out", str(resumed), *ARGS], resumed)
    assert not resumed.exists()
    capsys.readouterr()
    assert main(["fit", str(data), "--out", str(resumed), *ARGS]) == 1  # not thrown away without asking
    assert "add --resume" in capsys.readouterr().err
    assert main(["fit", str(data), "--out", str(resumed), *ARGS, "--seed", "6", "--resume"]) == 1
    assert "other data or options" in capsys.readouterr().err  # a resume of another fit is refused
    assert main(["fit", str(data), "--out", str(resumed), *ARGS, "--resume"]) == 0
    a, b = cs.load(whole).sample(500, seed=1), cs.load(resumed).sample(500, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not staging_path(resumed).exists()
