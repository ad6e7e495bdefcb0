"""torchrun: one model trained by two processes (gloo on CPU) is the one-process model, split.

The two-process runs start ``torchrun --standalone --nproc_per_node 2 -m clinsynth fit`` as a
subprocess, one thread per process, and compare its bundle with the same fit in this process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import clinsynth
from clinsynth import distributed
from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import ConfigError

from distributed_worker import dp_gradient, dp_gradient_process  # small: what a spawned process imports

SRC = Path(clinsynth.__file__).resolve().parents[1]
ROWS = 800
DP_ARGS = ["--target", "arm", "--model", "dp-acgan", "--epsilon", "1", "--epochs", "3", "--select", "last"]
PLAIN_ARGS = ["--model", "vae", "--epochs", "4"]


def torchrun_fit(data: Path, out: Path, args: list[str], scratch: Path) -> subprocess.CompletedProcess:
    """``torchrun … -m clinsynth fit`` with two processes; ``scratch`` is their TMPDIR."""
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CLINSYNTH_THREADS": "1", "TMPDIR": str(scratch)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "clinsynth", "fit", str(data), "--out", str(out), "--quiet", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def one_process_fit(data: Path, out: Path, args: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(data), "--out", str(out), "--quiet", "--threads", "1", *args]) == 0


@pytest.fixture(scope="module")
def trial_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trial") / "trial.csv"
    simulate_trial(n=ROWS, seed=5).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def dp_runs(trial_csv, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dp")
    done = torchrun_fit(trial_csv, root / "two", DP_ARGS, root / "scratch")
    one_process_fit(trial_csv, root / "one", DP_ARGS)
    return {"root": root, "run": done, "csv": trial_csv,
            "one": clinsynth.load(root / "one"), "two": clinsynth.load(root / "two")}


def _weights(bundle: Path) -> dict[str, torch.Tensor]:
    def flat(d: dict, prefix: str = ""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif torch.is_tensor(v):
                yield prefix + k, v.double()
    return dict(flat(torch.load(bundle / "weights.pt", weights_only=True)))


def _largest_change(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _categorical(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != "participant_id" and (df[c].dtype == object or df[c].nunique() <= 5)]


def _shares_error(synthetic: pd.DataFrame, real: pd.DataFrame) -> float:
    """Mean total variation distance between the synthetic and the real categories' shares."""
    columns = _categorical(real)
    assert len(columns) >= 3
    return float(np.mean([0.5 * synthetic[c].astype(str).value_counts(normalize=True)
                          .sub(real[c].astype(str).value_counts(normalize=True), fill_value=0).abs().sum()
                          for c in columns]))


# -- the process group, without processes ------------------------------------------------------
def test_one_process_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launch() == distributed.Launch(0, 1, 0)
    assert not distributed.active() and distributed.is_writer()
    batches = [np.arange(5), np.arange(3)]
    assert [list(b) for b in distributed.shard(batches)] == [[0, 1, 2, 3, 4], [0, 1, 2]]


def test_torchrun_environment_gives_rank_shares_and_backend(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launch() == distributed.Launch(1, 2, 1)
    assert not distributed.is_writer() and not distributed.noise_here()
    assert [list(b) for b in distributed.shard([np.arange(5)])] == [[1, 3]]
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda")) == "nccl"


def test_a_fixed_batch_smaller_than_the_processes_is_refused_in_one_line(monkeypatch):
    """Without DP a batch of 1 record split over 2 processes would leave rank 1 an empty share (its
    mean loss 0/0 = NaN, averaged into every process's weights): refused, naming both numbers. A DP
    (Poisson) batch may be that small or empty: each process's share of it is kept as it is."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"batch of 1 record\(s\) .* 2 training processes") as caught:
        list(distributed.shard([np.arange(1)]))
    assert "\n" not in str(caught.value) and "batch_size" in str(caught.value)
    assert [list(b) for b in distributed.shard([np.arange(2), np.arange(2)])] == [[1], [1]]
    assert [list(b) for b in distributed.shard([np.arange(1), np.arange(0)], private=True)] == [[], []]


def test_a_broken_torchrun_environment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not a whole number"):
        distributed.launch()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2 and WORLD_SIZE=2 do not fit"):
        distributed.launch()


def test_under_torchrun_only_fit_runs_and_resume_is_refused(monkeypatch, trial_csv, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["sample", str(tmp_path / "model"), "-n", "10", "--out", str(tmp_path / "s.csv")]) == 1
    assert "`clinsynth sample` runs in one process" in capsys.readouterr().err
    assert main(["fit", str(trial_csv), "--out", str(tmp_path / "m"), "--resume", "--model", "vae"]) == 1
    assert "--resume cannot continue a torchrun training" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# -- DP-SGD's gradient across processes -----------------------------------------------------------
def test_two_processes_give_the_one_process_dp_gradient_with_the_noise_once(tmp_path, monkeypatch):
    """Each process clips its half; rank 0 alone adds N(0, σ²C²); the sums are all-reduced and
    divided by the expected global batch; the public part is the processes' mean. So the gradient
    is the one-process gradient (noise and all). Noise in every process would add it twice."""
    import socket

    import torch.multiprocessing as mp

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    alone = dp_gradient()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(dp_gradient_process, args=(2, port, str(tmp_path / "g.pt")), nprocs=2, join=True)
    result = torch.load(tmp_path / "g.pt", weights_only=True)
    for a, b in zip(alone, result["grads"]):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    # the same processes: different weights are caught, and a broadcast gives rank 0's to all
    assert result["caught"] and float(result["broadcast"].abs().max()) == 0.0


# -- two processes -----------------------------------------------------------------------------
def test_two_process_dp_ledger_is_the_one_process_ledger(dp_runs):
    one, two = dp_runs["one"].ledger_, dp_runs["two"].ledger_
    assert (two.epsilon, two.delta, two.accountant, two.unit) == (one.epsilon, one.delta, one.accountant, one.unit)
    assert len(two.charges) == len(one.charges) == 2  # public facts, DP-SGD: charged once, not once per process
    for a, b in zip(one.charges, two.charges):
        assert (b.mechanism, b.purpose, b.steps) == (a.mechanism, a.purpose, a.steps)
        assert b.noise_multiplier == pytest.approx(a.noise_multiplier, rel=1e-12)
        assert b.sample_rate == pytest.approx(a.sample_rate, rel=1e-12)
    sgd = two.charges[1]
    assert sgd.mechanism == "dp-sgd" and sgd.sample_rate == pytest.approx((ROWS // 4) / ROWS)  # the GLOBAL rate
    assert sgd.steps == 3 * 4
    assert two.spent() == pytest.approx(one.spent(), rel=1e-9) and two.spent() <= 1.0


def test_two_process_dp_weights_are_the_one_process_weights(dp_runs):
    """The processes split the one-process Poisson batches and rank 0 draws the one-process noise, so
    the weights equal the one-process weights but for the order of float sums: a split that lost or
    repeated records, or other noise, would move them. (Noise added twice hardly moves them — Adam's
    step barely changes when the whole gradient is scaled — so that is checked on the gradient itself,
    test_two_processes_give_the_one_process_dp_gradient_with_the_noise_once.)"""
    root = dp_runs["root"]
    assert _largest_change(root / "one", root / "two") < 0.005  # 0.018 when each process took the whole batch


def test_only_rank_zero_writes_and_prints(dp_runs):
    root, run = dp_runs["root"], dp_runs["run"]
    assert sorted(p.name for p in (root / "two").iterdir()) == sorted(p.name for p in (root / "one").iterdir())
    assert list((root / "scratch").glob("clinsynth-rank*")) == []  # rank 1's scratch bundle is gone
    printed = run.stdout + run.stderr
    assert printed.count("wrote ") == 1 and "by 2 processes (torchrun)" in printed
    assert printed.count("privacy ledger") == 1


def test_two_process_dp_utility_is_the_one_process_utility(dp_runs):
    real = pd.read_csv(dp_runs["csv"])
    one = _shares_error(dp_runs["one"].sample(2000, seed=1), real)
    two = _shares_error(dp_runs["two"].sample(2000, seed=1), real)
    assert two == pytest.approx(one, abs=0.02)


def test_two_process_plain_vae_is_the_one_process_vae(trial_csv, tmp_path):
    """Without DP: DistributedDataParallel's rule (the mean of each process's mean gradient over its
    half of the same shuffled batch). The reparametrisation noise is each process's own, so the
    weights are not the one-process weights; the losses and the synthetic data are alike."""
    torchrun_fit(trial_csv, tmp_path / "two", PLAIN_ARGS, tmp_path / "scratch")
    one_process_fit(trial_csv, tmp_path / "one", PLAIN_ARGS)
    one, two = clinsynth.load(tmp_path / "one"), clinsynth.load(tmp_path / "two")
    assert len(two.history_) == len(one.history_) == 4
    assert two.history_[-1]["loss"] == pytest.approx(one.history_[-1]["loss"], rel=0.05)
    assert two.history_[-1]["loss"] < 0.8 * two.history_[0]["loss"]  # it learned
    real = pd.read_csv(trial_csv)
    error_one, error_two = _shares_error(one.sample(2000, seed=1), real), _shares_error(two.sample(2000, seed=1), real)
    assert error_two == pytest.approx(error_one, abs=0.03)
