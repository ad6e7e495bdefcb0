"""Never lose a steward's data, never ship a mixed release (issue 25, points 1-5).

Each test names the finding it guards. How they failed on the code before this change:
``fit data_dir/visits.csv --out data_dir`` deleted ``data_dir`` and exited 0; a non-empty
``--out`` was written into; a rerun killed in evaluation left the old report beside the new
model; two writers mixed their files; a read-only or file ``--out`` failed after training.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import OUTPUT_FLAGS, main
from clinsynth.data import output_dir
from clinsynth.data.output_dir import MARKER, check_file_target, inspect_output, staged_output, staging_path
from clinsynth.errors import OutputError
from clinsynth.models.bayesnet import BayesNet


def _table(n: int = 160, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, n)
    return pd.DataFrame({"age": rng.normal(60, 8, n).round(1), "sbp": (rng.normal(130, 15, n) + 5 * arm).round(0),
                         "sex": rng.choice(["F", "M"], n), "smoker": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
                         "arm": arm})


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "data_dir"
    folder.mkdir()
    _table().to_csv(folder / "visits.csv", index=False)
    (folder / "notes.txt").write_text("the steward's own notes\n")
    return folder


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: what 'nothing was touched' means."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _main(args: list) -> int:
    return main([str(a) for a in args])


def _fails(capsys, args: list, *phrases: str) -> str:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    return err


@pytest.fixture
def no_training(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("training started although the output is refused")
    monkeypatch.setattr(BayesNet, "_fit", refuse)


FIT = ["--model", "bayesnet", "--target", "arm", "--quiet"]
RUN = [*FIT, "--evaluate", "fast"]  # the release's files are what these tests check, not its scores


# -- 1. clinsynth deletes only what it wrote ----------------------------------------------------------
def test_fit_into_the_folder_holding_the_input_is_refused_and_loses_nothing(capsys, data_dir, no_training):
    before = _snapshot(data_dir)
    _fails(capsys, ["fit", data_dir / "visits.csv", "--out", data_dir, *FIT],
           "is not empty and is not a clinsynth output", "notes.txt", "visits.csv")
    assert _snapshot(data_dir) == before
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data_dir"]  # no lock or staging left behind


def test_run_into_a_folder_with_a_users_model_subfolder_is_refused(capsys, data_dir, tmp_path, no_training):
    release = tmp_path / "R"
    (release / "model").mkdir(parents=True)
    (release / "model" / "weights.bin").write_bytes(b"mine")
    _fails(capsys, ["run", data_dir / "visits.csv", "--out", release, *RUN], "model/")
    assert (release / "model" / "weights.bin").read_bytes() == b"mine"


def test_a_previous_bundle_needs_overwrite_and_keeps_the_stewards_files(capsys, data_dir, tmp_path):
    bundle = tmp_path / "bundle"
    assert _main(["fit", data_dir / "visits.csv", "--out", bundle, *FIT]) == 0
    listed = json.loads((bundle / MARKER).read_text())["files"]
    assert set(listed) == {"config.json", "schema.json", "encoder.json", "tables.npz"}
    (bundle / "README.steward").write_text("kept")
    capsys.readouterr()
    _fails(capsys, ["fit", data_dir / "visits.csv", "--out", bundle, *FIT], "--overwrite")
    assert _main(["fit", data_dir / "visits.csv", "--out", bundle, *FIT, "--seed", "3", "--overwrite"]) == 0
    assert (bundle / "README.steward").read_text() == "kept"
    assert json.loads((bundle / "config.json").read_text())["params"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "data_dir"]


def test_a_bundle_made_before_the_marker_is_recognised(data_dir, tmp_path):
    bundle = tmp_path / "old"
    model = BayesNet(seed=0).fit(_table())
    model.write_bundle(bundle)  # what save() wrote before: no marker
    found = inspect_output(bundle)
    assert found.state == "ours" and found.kind == "bundle" and "tables.npz" in found.files
    model.save(bundle)  # the API replaces its own bundle
    assert (bundle / MARKER).is_file()


def test_the_api_save_refuses_a_foreign_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"years of work")
    model = BayesNet(seed=0).fit(_table())
    with pytest.raises(OutputError, match="thesis.docx"):
        model.save(folder)
    assert (folder / "thesis.docx").read_bytes() == b"years of work"


def test_a_marker_cannot_make_clinsynth_delete_outside_its_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    (out / MARKER).write_text(json.dumps({"kind": "bundle", "files": ["../victim.txt"]}))
    assert inspect_output(out).state == "foreign"  # a marker listing ../ is not ours
    with pytest.raises(OutputError):
        BayesNet(seed=0).fit(_table()).save(out)
    assert victim.read_text() == "x"


# -- 2. whole or not at all; no stale files; one writer -----------------------------------------------
@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> tuple[Path, Path]:
    """A DP release to rerun over (bayesnet at ε = 1: a few seconds)."""
    root = tmp_path_factory.mktemp("prev")
    data = root / "visits.csv"
    _table(2000).to_csv(data, index=False)  # DP public facts need some rows at ε = 1
    release = root / "R"
    assert _main(["run", data, "--out", release, *RUN, "--epsilon", "1"]) == 0
    return data, release


def _copy(release: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "R"
    shutil.copytree(release, copy)
    return copy


def test_a_rerun_killed_in_evaluation_leaves_the_previous_release_whole(previous_release, tmp_path, monkeypatch, capsys):
    data, release = previous_release
    release = _copy(release, tmp_path)
    before = _snapshot(release)
    from clinsynth import pipeline

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline._Release, "evaluate", killed)
    assert _main(["run", data, "--out", release, *RUN, "--overwrite"]) == 130  # non-DP over DP, interrupted
    assert "aborted: --out was left as it was" in capsys.readouterr().err
    assert _snapshot(release) == before
    assert "differentially private" in (release / "share" / "guarantee.html").read_text()


def test_a_complete_rerun_in_parquet_leaves_no_stale_csv(previous_release, tmp_path):
    data, release = previous_release
    release = _copy(release, tmp_path)
    assert _main(["run", data, "--out", release, *RUN, "--overwrite", "--format", "parquet"]) == 0
    share = {p.name for p in (release / "share").iterdir()}
    assert share == {"synthetic.parquet", "model", "guarantee.html"}
    marker = json.loads((release / MARKER).read_text())
    assert set(marker["files"]) == set(_snapshot(release)) - {MARKER}
    manifest = json.loads((release / "steward" / "manifest.json").read_text())
    for entry in manifest["files"].values():  # every hash the manifest gives is of the file beside it
        if "sha256" in entry:
            assert hashlib.sha256((release / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


def test_a_second_concurrent_writer_is_refused(capsys, data_dir, tmp_path, no_training):
    out = tmp_path / "R"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from clinsynth.data.output_dir import staged_output\n"
        f"with staged_output({str(out)!r}, 'release'):\n"
        "    print('holding', flush=True); time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        _fails(capsys, ["run", data_dir / "visits.csv", "--out", out, *RUN], "another clinsynth run is writing", "pid")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


def test_the_lock_is_released_and_its_file_removed(tmp_path):
    out = tmp_path / "R"
    with staged_output(out, "release") as stage:
        (stage.dir / "a.txt").write_text("a")
    with staged_output(out, "release", overwrite=True) as stage:
        (stage.dir / "b.txt").write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.txt"]


# -- 3. preflight: refused before any data is read, write errors as one line ---------------------------
def test_an_out_that_is_a_file_is_refused_before_training(capsys, data_dir, tmp_path, no_training):
    target = tmp_path / "existing_file"
    target.write_text("keep me")
    _fails(capsys, ["fit", data_dir / "visits.csv", "--out", target, *FIT], "is a file")
    _fails(capsys, ["run", data_dir / "visits.csv", "--out", target, *RUN], "is a file")
    assert target.read_text() == "keep me"


def test_a_release_whose_manifest_is_a_folder_is_refused_before_training(capsys, data_dir, tmp_path, no_training):
    out = tmp_path / "R"
    (out / "manifest.json").mkdir(parents=True)
    _fails(capsys, ["run", data_dir / "visits.csv", "--out", out, *RUN, "--overwrite"], "not a clinsynth output")


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder nobody can write, root included (root ignores mode bits, not the immutable flag)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here, and root can write any folder")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_out_is_refused_before_training(capsys, data_dir, read_only_dir, no_training):
    _fails(capsys, ["run", data_dir / "visits.csv", "--out", read_only_dir / "R", *RUN], "not writable")


def test_too_little_room_is_refused_before_training(capsys, data_dir, tmp_path, monkeypatch, no_training):
    usage = output_dir.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(output_dir.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    _fails(capsys, ["run", data_dir / "visits.csv", "--out", tmp_path / "R", *RUN], "is free on that disk")
    assert not (tmp_path / "R").exists() and not staging_path(tmp_path / "R").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 96 kB file system: a release does not fit (a real full disk where mounting is allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_writing_is_one_line_and_keeps_the_previous_release(
        capsys, data_dir, small_disk, monkeypatch):
    out = small_disk / "R"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "release", "files": ["old.txt"]}))
    (out / "old.txt").write_text("the previous release")
    monkeypatch.setattr("clinsynth.pipeline.release_reserve", lambda inputs: 0)  # let the preflight pass
    _fails(capsys, ["run", data_dir / "visits.csv", "--out", out, *RUN, "--overwrite"],
           "No space left on device", "the previous output is intact", "--resume")
    assert (out / "old.txt").read_text() == "the previous release"
    assert json.loads((staging_path(out) / MARKER).read_text())["state"]["done"] == {"fit": {}}
    subprocess.run(["mount", "-o", "remount,size=50m", str(small_disk)], check=True)  # the steward frees space
    assert _main(["run", data_dir / "visits.csv", "--out", out, *RUN, "--overwrite", "--resume"]) == 0
    assert (out / "share" / "synthetic.csv").is_file() and not (out / "old.txt").exists()
    assert not staging_path(out).exists()


def test_single_file_outputs_are_not_overwritten_without_asking(tmp_path):
    mine = tmp_path / "synthetic.csv"
    mine.write_text("a steward's table")
    with pytest.raises(OutputError, match="overwrite=True") as refused:  # the library names its parameter
        check_file_target(mine)
    assert "--" not in str(refused.value)
    assert "add --overwrite to replace it" in refused.value.worded(OUTPUT_FLAGS)  # the CLI words it with its flag
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("a steward's notes")
    with pytest.raises(OutputError, match=r"^output '.*theirs' is not empty") as foreign:
        with staged_output(theirs, "release"):
            pass
    assert "--" not in str(foreign.value) and foreign.value.worded(OUTPUT_FLAGS).startswith(f"--out '{theirs}'")
    assert check_file_target(mine, overwrite=True) == mine
    with pytest.raises(OutputError, match="is a folder"):
        check_file_target(tmp_path)


def test_sample_refuses_to_overwrite_a_file(capsys, data_dir, tmp_path):
    bundle = tmp_path / "bundle"
    assert _main(["fit", data_dir / "visits.csv", "--out", bundle, *FIT]) == 0
    target = data_dir / "visits.csv"
    before = target.read_bytes()
    capsys.readouterr()
    _fails(capsys, ["sample", bundle, "--out", target], "already exists", "--overwrite")
    assert target.read_bytes() == before


# -- a kill between the renames of a commit is repaired by the next writer --------------------------------
def _interrupted_commit(tmp_path: Path, complete: bool) -> Path:
    """The state a SIGKILL leaves between renaming the old output away and the new one in."""
    out = tmp_path / "R"
    old = out.with_name(f".{out.name}.clinsynth-old")
    old.mkdir()
    (old / "a.txt").write_text("old")
    (old / "steward-notes.txt").write_text("mine")
    (old / MARKER).write_text(json.dumps({"kind": "release", "status": "complete", "files": ["a.txt"]}))
    staging = staging_path(out)
    staging.mkdir()
    (staging / "a.txt").write_text("new")
    (staging / MARKER).write_text(json.dumps({"kind": "release", "status": "complete" if complete else "partial",
                                              "files": ["a.txt"] if complete else []}))
    return out


@pytest.mark.parametrize("complete", [True, False])
def test_an_interrupted_commit_rolls_forward_or_back(tmp_path, complete):
    out = _interrupted_commit(tmp_path, complete)
    output_dir._recover(out)
    assert (out / "a.txt").read_text() == ("new" if complete else "old")
    assert (out / "steward-notes.txt").read_text() == "mine"
    assert not out.with_name(f".{out.name}.clinsynth-old").exists()
