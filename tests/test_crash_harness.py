"""Crash consistency: kill `clinsynth` anywhere, and nothing of the steward's is lost or mixed.

The CLI runs as a real process and is SIGKILLed after a random delay spread over a measured
uninterrupted run (so kills land in start-up, fit, sample, evaluation, report and commit), into a
fresh ``--out``, into one holding a previous release (with a file of the steward's inside), and
with two writers at once. After each kill the harness checks:

* the input table and the steward's files are byte-identical;
* ``--out`` is absent, or the previous release untouched, or a complete new release — every file
  it lists present, nothing else of ours, and every hash its manifest gives matching the file
  beside it (so no folder mixes two runs);
* running the same command again with ``--resume`` completes and leaves one whole release.

The default run kills at a few points; ``-m slow`` kills at 50 and more.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.output_dir import MARKER, staging_path

NOTES = "steward-notes.txt"


def _table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.normal(60, 8, n).round(1), "sex": rng.choice(["F", "M"], n),
                         "arm": rng.integers(0, 2, n)})


def _command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "clinsynth.cli", "run", str(data), "--target", "arm", "--model", "bayesnet",
            "--out", str(out), "--quiet", "--evaluate", "fast", *extra]


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _hash(p) for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def check_whole(out: Path, previous: dict[str, str] | None) -> str:
    """The state of ``out`` after a kill: 'absent', 'previous' or 'new' — or an assertion error."""
    if not out.exists():
        assert previous is None, "the previous release vanished"
        return "absent"
    files = _tree(out)
    if previous is not None and files == previous:
        return "previous"
    marker = json.loads((out / MARKER).read_text())
    assert marker["status"] == "complete", marker
    ours = set(files) - {MARKER, NOTES}
    assert ours == set(marker["files"]), f"a release mixing runs: {sorted(ours ^ set(marker['files']))}"
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    metrics = json.loads((out / "steward" / "metrics.json").read_text())
    assert manifest["created"] == metrics["created"]
    for entry in manifest["files"].values():
        if "sha256" in entry:
            assert files[entry["path"]] == entry["sha256"], f"{entry['path']} is not the file its manifest hashed"
    return "new"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def _kill_after(args: list[str], delay: float) -> int:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    data = root / "visits.csv"
    _table().to_csv(data, index=False)
    previous = root / "previous"
    start = time.perf_counter()
    done = _run(_command(data, previous))
    duration = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    (previous / NOTES).write_text("the steward's own notes\n")
    return data, previous, duration


def _scenario(tmp_path: Path, setup, delay: float, used: bool) -> None:
    import shutil

    data, previous, _ = setup
    input_hash = _hash(data)
    out = tmp_path / f"R-{delay:.3f}-{int(used)}"
    before = None
    if used:
        shutil.copytree(previous, out)
        before = _tree(out)
    args = _command(data, out, "--overwrite", "--seed", "1")
    _kill_after(args, delay)
    assert _hash(data) == input_hash
    state = check_whole(out, before)
    if used:
        assert (out / NOTES).read_text() == "the steward's own notes\n"
    resumed = _run([*args, "--resume"])
    assert resumed.returncode == 0, (state, resumed.stderr)
    assert check_whole(out, None) == "new"
    assert not staging_path(out).exists()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")) == []
    if used:
        assert (out / NOTES).read_text() == "the steward's own notes\n"


def _delays(duration: float, k: int, seed: int) -> list[float]:
    """Kill points spread over a whole run: start-up, fit, sample, evaluation, report, commit."""
    rng = np.random.default_rng(seed)
    return sorted(rng.uniform(0.05, 1.05, k) * duration)


@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
def test_kills_at_a_few_points(tmp_path, setup, used):
    for delay in _delays(setup[2], 2, seed=int(used)):
        _scenario(tmp_path, setup, delay, used)


@pytest.mark.slow
@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
def test_kills_at_many_points(tmp_path, setup, used):
    for delay in _delays(setup[2], 26, seed=10 + int(used)):
        _scenario(tmp_path, setup, delay, used)


def test_two_writers_at_once_never_mix(tmp_path, setup):
    data, previous, duration = setup
    out = tmp_path / "R"
    first = subprocess.Popen(_command(data, out, "--seed", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(min(2.0, duration / 4))
    second = _run(_command(data, out, "--seed", "2", "--overwrite"))
    first_err = first.communicate(timeout=600)[1]
    codes = sorted([first.returncode, second.returncode])
    if codes == [0, 1]:  # the usual case: the second writer found the lock (or the first's output)
        refused = second.stderr if second.returncode else first_err
        assert "another clinsynth run is writing" in refused or "holds a previous" in refused, refused
    else:  # the first finished before the second started: the second replaced it whole
        assert codes == [0, 0], (first_err, second.stderr)
    assert check_whole(out, None) == "new"
