"""Streamed sampling to partitioned Parquet (issue 24 item 5): the same bytes whatever the number of
processes, the rows and partitions asked for, and an output that appears whole or not at all."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from clinsynth.cli import main
from clinsynth.data.output_dir import MARKER, staging_path
from clinsynth.streaming import PART_NAME, plan, row_group_seed, sample_to_parquet

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bayesnet of the simulated trial, saved (a few seconds)."""
    import clinsynth as cs
    from clinsynth.data.datasets import simulate_trial

    df = simulate_trial(1500, seed=4).drop(columns=["participant_id"])
    model = cs.create("bayesnet", progress=False).fit(df, cs.Schema.infer(df, target="arm"))
    path = tmp_path_factory.mktemp("stream") / "model"
    model.save(path)
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))}


def test_seeds_depend_on_seed_partition_and_group_only():
    parts = plan(25, seed=7, partition_rows=10, row_group_rows=4)
    assert [p.rows for p in parts] == [10, 10, 5]
    assert [len(p.seeds) for p in parts] == [3, 3, 2]
    assert [rows for rows, _ in parts[2].groups()] == [4, 1]
    assert parts[1].seeds[2] == row_group_seed(7, 1, 2)
    seeds = [s for p in parts for s in p.seeds]
    assert len(set(seeds)) == len(seeds)
    assert plan(25, seed=8, partition_rows=10, row_group_rows=4)[0].seeds[0] != parts[0].seeds[0]


def test_one_and_two_processes_write_the_same_bytes(bundle, tmp_path):
    one = sample_to_parquet(bundle, 25_000, tmp_path / "one", partition_rows=10_000, row_group_rows=4_000, seed=3,
                            processes=1)
    two = sample_to_parquet(bundle, 25_000, tmp_path / "two", partition_rows=10_000, row_group_rows=4_000, seed=3,
                            processes=2)
    assert (one.partitions, one.rows, two.processes) == (3, 25_000, 2)
    assert list(_hashes(tmp_path / "one")) == [PART_NAME.format(i) for i in range(3)]
    assert _hashes(tmp_path / "one") == _hashes(tmp_path / "two")
    frame = pd.read_parquet(tmp_path / "one")  # the folder reads back as one table
    assert len(frame) == 25_000
    assert [len(pd.read_parquet(tmp_path / "one" / PART_NAME.format(i))) for i in range(3)] == [10_000, 10_000, 5_000]
    import clinsynth as cs

    reference = cs.load(bundle).sample(100, seed=1)
    assert list(frame.columns) == list(reference.columns)
    assert (frame.dtypes.astype(str) == reference.dtypes.astype(str)).all()
    assert frame["arm"].astype(str).value_counts(normalize=True).sub(0.5).abs().max() < 0.05
    info = json.loads((tmp_path / "one" / "_sampling.json").read_text())
    assert (info["rows"], info["partitions"], info["seed"]) == (25_000, 3, 3)
    other = sample_to_parquet(bundle, 25_000, tmp_path / "other", partition_rows=10_000, row_group_rows=4_000, seed=4,
                              processes=1)
    assert set(_hashes(tmp_path / "other").values()).isdisjoint(_hashes(tmp_path / "one").values())
    assert other.rows == 25_000


def test_a_failing_worker_commits_nothing_and_resume_finishes_the_same_bytes(bundle, tmp_path, monkeypatch):
    import clinsynth as cs

    monkeypatch.syspath_prepend(str(TESTS))  # the spawned workers import the wrapper by name
    from stream_models import FailsOnSeed

    model = cs.load(bundle)
    bad = FailsOnSeed(model, bad_seed=row_group_seed(5, 3, 1))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="planted failure"):
        sample_to_parquet(bad, 6_000, out, partition_rows=1_000, row_group_rows=500, seed=5, processes=2)
    assert not out.exists()  # nothing committed, nothing mixed
    staged = staging_path(out)
    done = json.loads((staged / MARKER).read_text())["state"].get("done", {}) if staged.exists() else {}
    assert PART_NAME.format(3) not in done
    resumed = sample_to_parquet(model, 6_000, out, partition_rows=1_000, row_group_rows=500, seed=5, processes=1,
                                resume=bool(done))
    assert resumed.resumed == len(done)
    assert not staged.exists()
    fresh = sample_to_parquet(model, 6_000, tmp_path / "fresh", partition_rows=1_000, row_group_rows=500, seed=5,
                              processes=1)
    assert fresh.resumed == 0 and len(_hashes(out)) == 6
    assert _hashes(out) == _hashes(tmp_path / "fresh")
    assert not list(out.glob(".*tmp"))


def _cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "clinsynth.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done(staged: Path) -> dict:
    try:
        return json.loads((staged / MARKER).read_text())["state"].get("done", {})
    except (OSError, ValueError, KeyError):
        return {}


def test_sigterm_leaves_no_output_and_resume_continues(bundle, tmp_path):
    out = tmp_path / "synth"
    args = ["sample", str(bundle), "-n", "240000", "--out", str(out), "--partition-rows", "2000", "--threads", "1",
            "--seed", "2"]
    proc = _cli(*args)
    deadline = time.monotonic() + 120
    while len(_done(staging_path(out))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the sample finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists()  # no half-written release
    kept = _done(staging_path(out))
    assert 2 <= len(kept) < 120
    # without --resume a new run is refused (the staging folder holds reusable partitions)
    refused = _cli(*args)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 1 and "--resume" in err
    resumed = _cli(*args, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{len(kept)} kept from the interrupted run" in err
    fresh = sample_to_parquet(bundle, 240_000, tmp_path / "fresh", partition_rows=2_000, seed=2, processes=1)
    assert fresh.partitions == 120
    assert _hashes(out) == _hashes(tmp_path / "fresh")
    assert sorted(os.listdir(out)) == sorted([MARKER, "_sampling.json", *_hashes(out)])


def test_an_existing_folder_is_refused_without_overwrite(bundle, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the steward's")
    base = ["sample", str(bundle), "-n", "3000", "--partition-rows", "1000", "--threads", "1"]
    assert main([*base, "--out", str(foreign)]) == 1
    assert "not a clinsynth output" in capsys.readouterr().err
    assert sorted(os.listdir(foreign)) == ["notes.txt"]
    out = tmp_path / "synth"
    assert main([*base, "--out", str(out), "--format", "parquet"]) == 0
    assert "3 Parquet partitions" in capsys.readouterr().err
    before = _hashes(out)
    (out / "readme.txt").write_text("kept")
    assert main([*base, "--out", str(out), "--seed", "9"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1
    assert _hashes(out) == before
    assert main([*base, "--out", str(out), "--seed", "9", "--overwrite", "-n", "2000"]) == 0
    after = _hashes(out)
    assert len(after) == 2 and after[PART_NAME.format(0)] != before[PART_NAME.format(0)]
    assert (out / "readme.txt").read_text() == "kept"
    assert main([*base, "--out", str(tmp_path / "x"), "--format", "csv"]) == 1
    assert "--format parquet" in capsys.readouterr().err


def test_patients_with_visits_are_refused_in_one_line(tmp_path):
    import clinsynth as cs
    from clinsynth.errors import InputError
    from long_visits import simulate_visits

    real = simulate_visits(200, seed=0)
    model = cs.create("visitchain", progress=False).fit(real, cs.Schema.infer(real, target="death", patient="pid",
                                                                              time="day"))
    with pytest.raises(InputError, match="long-format table.*ordinary tables only.*one file"):
        sample_to_parquet(model, 1_000, tmp_path / "out", processes=1)
    assert not (tmp_path / "out").exists() and not staging_path(tmp_path / "out").exists()
