"""`clinsynth run --codes` and `demo --ehr`: an EHR code table in long format → a release.

Long format in, long format out: the vocabulary and the column names come back, synthetic
patients carry new ids, the holdout never reaches the model, and DP spends nothing on a
declared code list. A couple of epochs on a few hundred simulated patients keep this fast.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clinsynth as cs
from clinsynth.cli import main
from clinsynth.data.datasets import simulate_ehr
from clinsynth.data.ehr import read_vocabulary
from clinsynth.errors import ConfigError, InputError
from clinsynth.models.vae import LATENT_MIXTURE, STEP_BETA
from clinsynth.pipeline import CodeInput, RunConfig, codes_hash, read_code_input, run_code_release, run_ehr_demo, split_patients


@pytest.fixture(scope="module")
def ehr_files(tmp_path_factory) -> dict[str, Path]:
    """Simulated codes in long format with the steward's own column names, demographics, a code list."""
    root = tmp_path_factory.mktemp("ehr")
    codes, people = simulate_ehr(400, 60, seed=3, binary=False)
    long = cs.to_long(codes, patient_col="pid", code_col="dx", count_col="visits")
    long.to_csv(root / "dx.csv", index=False)
    people.rename(columns={"patient_id": "pid"}).to_csv(root / "people.csv", index=False)
    (root / "codes.txt").write_text("# declared code list\n" + "\n".join(codes.vocabulary) + "\n")
    return {"root": root, "dx": root / "dx.csv", "people": root / "people.csv", "vocab": root / "codes.txt"}


def _run(args: list[str]) -> int:
    return main(["run", *map(str, args), "--quiet"])


def test_run_codes_round_trips_long_format_with_new_ids(ehr_files, tmp_path):
    out = tmp_path / "release"
    assert _run([ehr_files["dx"], "--codes", "--patient-col", "pid", "--code-col", "dx", "--count-col", "visits",
                 "--static", ehr_files["people"], "--model", "vae", "--epochs", "2", "--out", out]) == 0
    share, steward = out / "share", out / "steward"
    assert {p.name for p in share.iterdir()} == {"synthetic.csv", "synthetic_static.csv", "model", "guarantee.html"}
    assert {p.name for p in steward.iterdir()} == {"report.html", "metrics.json", "manifest.json"}
    real = pd.read_csv(ehr_files["dx"], dtype={"pid": str, "dx": str})
    synth = pd.read_csv(share / "synthetic.csv", dtype={"pid": str, "dx": str})
    static = pd.read_csv(share / "synthetic_static.csv", dtype={"pid": str})
    assert list(synth.columns) == ["pid", "dx", "visits"]            # the steward's names come back
    assert set(synth["dx"]) <= set(real["dx"])                        # only codes of the vocabulary
    assert (synth["visits"] >= 1).all() and synth["visits"].dtype.kind == "i"
    assert not set(synth["pid"]) & set(real["pid"])                   # new ids, never real ones
    assert list(static.columns) == ["pid", "age", "sex"] and len(static) == 320 and static["pid"].is_unique
    assert set(synth["pid"]) <= set(static["pid"])                    # every coded patient has demographics
    metrics = json.loads((steward / "metrics.json").read_text())
    assert metrics["dataset"]["kind"] == "codes" and metrics["dataset"]["n_train"] == 320
    assert metrics["dataset"]["n_test"] == 80 and metrics["codes"]["n_codes"] == real["dx"].nunique() == 58
    manifest = json.loads((steward / "manifest.json").read_text())
    assert manifest["model"]["name"] == "vae" and manifest["model"]["params"]["epochs"] == 2
    # what the data decided is on record too: the code defaults of batch size and β
    assert manifest["model"]["params"]["batch_size"] is None and manifest["model"]["params"]["beta"] is None
    resolved = manifest["model"]["resolved_params"]
    assert (resolved["epochs"], resolved["batch_size"], resolved["beta"]) == (2, 256, STEP_BETA)  # codes without DP
    assert resolved["latent_mixture"] == LATENT_MIXTURE
    assert manifest["long_format"] == {"patient_col": "pid", "code_col": "dx", "count_col": "visits"}
    assert manifest["input"]["patients"] == 400 and manifest["input"]["static_columns"] == ["age", "sex"]
    assert set(manifest["files"]) == {"synthetic", "synthetic_static", "model", "guarantee", "metrics", "report"}
    assert cs.load(share / "model").n_train_ == 320


def test_run_codes_under_dp_spends_nothing_on_a_declared_vocabulary(ehr_files, tmp_path):
    out = tmp_path / "dp"
    assert _run([ehr_files["dx"], "--codes", "--patient-col", "pid", "--code-col", "dx", "--vocabulary",
                 ehr_files["vocab"], "--epsilon", "1", "--model", "medgan", "--epochs", "1",
                 "--param", "pretrain_epochs=1", "--param", "batch_size=64", "--format", "parquet", "--out", out]) == 0
    guarantee = json.loads((out / "steward" / "metrics.json").read_text())["guarantee"]
    assert guarantee["differentially_private"] and guarantee["model"] == "dp-medgan"
    assert 0.5 < guarantee["spent"] <= 1.0
    purposes = " ".join(row["purpose"] for row in guarantee["charges"]).lower()
    assert "vocabulary" not in purposes and "autoencoder" in purposes
    synth = pd.read_parquet(out / "share" / "synthetic.parquet")
    assert list(synth.columns) == ["pid", "dx"]                       # presence: no count column
    assert set(synth["dx"]) <= set(read_vocabulary(ehr_files["vocab"]))


def test_the_holdout_is_a_random_patient_split_that_keeps_everyone():
    codes, people = simulate_ehr(500, 40, seed=1)
    mixed = cs.attach_static(codes, people)
    train, test = split_patients(mixed, 0.2, seed=4)
    assert (train.n_patients, test.n_patients) == (400, 100)
    ids = np.concatenate([train.patient_ids, test.patient_ids])
    assert sorted(ids) == sorted(mixed.patient_ids)
    assert train.static.shape == (400, 2) and train.vocabulary == mixed.vocabulary
    again, _ = split_patients(mixed, 0.2, seed=4)
    other, _ = split_patients(mixed, 0.2, seed=5)
    assert list(again.patient_ids) == list(train.patient_ids) != list(other.patient_ids)
    with pytest.raises(ConfigError, match="too few"):
        split_patients(codes.subset(slice(0, 3)), 0.2)


def test_the_content_hash_sees_one_changed_entry():
    codes, _ = simulate_ehr(200, 30, seed=2)
    same, _ = simulate_ehr(200, 30, seed=2)
    assert codes_hash(codes) == codes_hash(same)
    m = codes.matrix.copy()
    m.data[0] = 0
    changed = cs.CodeMatrix(m, codes.vocabulary, codes.patient_ids, True)
    assert codes_hash(changed) != codes_hash(codes)


def test_read_code_input_takes_the_schema_vocabulary_and_refuses_contradictions(ehr_files):
    spec = CodeInput(columns=cs.pipeline.CodeColumns("pid", "dx", "visits"))
    codes, schema = read_code_input(ehr_files["dx"], spec)
    assert not schema.codes.public and schema.codes.binary and codes.n_codes == 58  # the codes seen
    declared = CodeInput(columns=spec.columns, vocabulary_file=str(ehr_files["vocab"]))
    listed, public = read_code_input(ehr_files["dx"], declared)
    assert public.codes.public and listed.n_codes == 60               # the code list, seen or not
    reordered = schema.model_copy(update={"codes": schema.codes.model_copy(
        update={"vocabulary": list(reversed(schema.codes.vocabulary)) + ["X999"]})})
    again, _ = read_code_input(ehr_files["dx"], spec, reordered)
    assert again.vocabulary[-1] == "X999" and again.vocabulary[0] == codes.vocabulary[-1]
    with pytest.raises(ConfigError, match="not both"):
        read_code_input(ehr_files["dx"], declared, reordered)
    with pytest.raises(ConfigError, match="--max-count caps counts"):
        read_code_input(ehr_files["dx"], CodeInput(columns=spec.columns, max_count=5))
    counts = CodeInput(columns=spec.columns, counts=True, max_count=5)
    _, capped = read_code_input(ehr_files["dx"], counts)
    assert capped.codes.max_count == 5 and not capped.codes.binary


@pytest.mark.parametrize("args, message", [
    (["--count-col", "visits"], "add --codes"),
    (["--codes", "--target", "sex"], "--target does not apply"),
    (["--codes", "--model", "acgan"], "does not model EHR codes"),
    (["--codes", "--select", "top5"], "--select applies"),
    (["--codes", "--patient-col", "nope"], "nope"),
    (["--codes", "--patient-col", "pid", "--code-col", "dx", "--vocabulary", "missing.txt"], "does not exist"),
    (["--codes", "--patient-col", "pid", "--code-col", "dx", "--count-col", "visits", "--epsilon", "1"], "--max-count N"),
])
def test_bad_code_options_are_one_line_errors(ehr_files, tmp_path, capsys, args, message):
    assert _run([ehr_files["dx"], *args, "--out", tmp_path / "never"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()  # refused before anything is written


def test_empty_vocabulary_file_is_refused(tmp_path):
    path = tmp_path / "codes.txt"
    path.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="lists no code"):
        read_vocabulary(path)


def test_run_code_release_refuses_a_target_and_a_table():
    codes, _ = simulate_ehr(100, 30, seed=0)
    with pytest.raises(ConfigError, match="no target"):
        run_code_release(codes, RunConfig(target="sex", model="vae"), "unused")
    with pytest.raises(ConfigError, match="takes a CodeMatrix"):
        run_code_release(pd.DataFrame({"a": [1]}), RunConfig(target=None, model="vae"), "unused")


def test_ehr_demo_writes_a_release_of_codes_and_demographics(tmp_path):
    result = run_ehr_demo(tmp_path / "demo", n=600, n_codes=50, model="vae", epochs=2, progress=False)
    assert {"synthetic", "synthetic_static", "model", "guarantee", "metrics", "report", "manifest"} == set(result.files)
    assert [v["section"] for v in result.metrics["verdicts"]][:2] == ["privacy guarantee", "dimension-wise probability"]
    static = pd.read_csv(result.files["synthetic_static"])
    assert len(static) == 480 and set(static["sex"]) <= {"F", "M"}
    html = result.files["report"].read_text()
    assert "Dimension-wise probability" in html or "dimension-wise probability" in html


def test_demo_ehr_command(tmp_path, capsys):
    out = tmp_path / "ehr-demo"
    assert main(["demo", "--ehr", "--quiet", "--out", str(out)]) == 0
    assert (out / "steward" / "manifest.json").is_file() and (out / "share" / "synthetic_static.csv").is_file()
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["model"]["choice"]["chosen"] == "codetree"  # auto's choice for codes
    assert main(["demo", "--model", "medgan", "--quiet", "--out", str(tmp_path / "x")]) == 1  # the trial is a table
    assert "medgan models EHR code matrices" in capsys.readouterr().err


def test_run_codes_with_the_tree_and_dp_tree(ehr_files, tmp_path, capsys):
    """`--model codetree` (counts, demographics) and its DP version (codes alone: the DP facts of
    age on 320 patients are another matter) through the whole release."""
    base = [ehr_files["dx"], "--codes", "--patient-col", "pid", "--code-col", "dx", "--count-col", "visits",
            "--static", ehr_files["people"]]
    assert _run([*base, "--model", "codetree", "--out", tmp_path / "tree"]) == 0
    synth = pd.read_csv(tmp_path / "tree" / "share" / "synthetic.csv", dtype={"pid": str, "dx": str})
    assert list(synth.columns) == ["pid", "dx", "visits"] and (synth["visits"] >= 1).all()
    manifest = json.loads((tmp_path / "tree" / "steward" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "codetree"
    capsys.readouterr()
    assert _run([*base[:-2], "--model", "codetree", "--epsilon", "1", "--max-count", "20",
                 "--vocabulary", ehr_files["vocab"], "--out", tmp_path / "dp"]) == 0
    assert re.search(r"warning: dp-codetree: \d+ patients are few for a differentially private", capsys.readouterr().err)
    manifest = json.loads((tmp_path / "dp" / "steward" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "dp-codetree"
    assert cs.load(tmp_path / "dp" / "share" / "model").ledger_.spent() <= 1.0
