"""The contract every registered model keeps, checked over the whole registry (in the spirit of
scikit-learn's ``check_estimator``): a new registry entry is tested here without a line added.

On tiny data, for each model: fit → sample → save → load gives the same sample for the same seed;
a different seed gives a different one; ``get_params`` round-trips through ``create``; bad input
(an empty table, the wrong kind of input, a bad sample size, use before fit) is refused with a
clinsynth error; and every DP model's bundle holds no raw value that was not declared public (a
planted unique number and category, or a code held by one patient).
"""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from clinsynth.data.datasets import simulate_trial
from clinsynth.data.ehr import CodeMatrix
from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.errors import ClinsynthError, NotFittedError
from clinsynth.models.registry import REGISTRY, create, load
from clinsynth.schema import Schema

MODELS = [name for name in REGISTRY if name != "auto"]  # auto stands for one of these (tests/test_auto.py)
PLANTED_NUMBER = 98765.4321
PLANTED_CATEGORY = "PLANTED-CATEGORY-7"
PLANTED_CODE = "PLANTED-CODE-9"

# the fewest steps that still train every part of each model
FAST = {
    "acgan": dict(epochs=1, select="last"),
    "dp-acgan": dict(epochs=1, select="last"),
    "medgan": dict(pretrain_epochs=1, epochs=1),
    "dp-medgan": dict(pretrain_epochs=1, epochs=1),
    "corgan": dict(pretrain_epochs=1, epochs=1),
    "dp-corgan": dict(pretrain_epochs=1, epochs=1),
    "vae": dict(epochs=1),
    "dp-vae": dict(epochs=1),
    "visitrnn": dict(epochs=1),
    "dp-visitrnn": dict(epochs=1),
}


def takes_codes(name: str) -> bool:
    return REGISTRY[name].tags().input == "codes"


def takes_patients(name: str) -> bool:
    """A model of the patients family: long-format tables, one row per visit."""
    return REGISTRY[name].tags().input == "patients"


def build(name: str, seed: int = 0):
    params = dict(FAST.get(name, {}))
    if name.startswith("dp-"):
        params["epsilon"] = 2.0
    return create(name, seed=seed, progress=False, **params)


def fitted(name: str, table: pd.DataFrame, codes: CodeMatrix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-data and merged-category warnings are tested elsewhere
        if takes_codes(name):
            return build(name).fit(codes)
        if takes_patients(name):
            visits = planted_visits()
            return build(name).fit(visits, Schema.infer(visits, target="death", patient="pid", time="day"))
        return build(name).fit(table, Schema.infer(table, target="arm"))


def planted_visits() -> pd.DataFrame:
    """1,500 patients' visits (tests/long_visits.py); one visit alone holds the planted number and category."""
    from long_visits import simulate_visits

    df = simulate_visits(1500, seed=5)
    df["egfr"] = df["egfr"].astype(float)
    df.loc[17, "egfr"] = PLANTED_NUMBER
    df.loc[42, "symptom"] = PLANTED_CATEGORY
    return df


def size(sample) -> int:
    """Records drawn: patients for a code matrix or a table of visits, rows otherwise."""
    if isinstance(sample, CodeMatrix):
        return sample.n_patients
    return sample["pid"].nunique() if "pid" in sample.columns and "day" in sample.columns else len(sample)


def same(a, b) -> bool:
    if isinstance(a, CodeMatrix):
        return (a.vocabulary == b.vocabulary and a.n_patients == b.n_patients
                and (a.matrix != b.matrix).nnz == 0)
    return a.equals(b)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A trial of 600 rows with one unique extreme glucose and one unique race category."""
    df = simulate_trial(n=600, seed=3)
    df.loc[17, "glucose"] = PLANTED_NUMBER
    df.loc[42, "race"] = PLANTED_CATEGORY
    return df


@pytest.fixture(scope="module")
def codes() -> CodeMatrix:
    """1,500 patients × 40 codes; patient 17 alone holds PLANTED_CODE."""
    matrix, _ = simulate_ehr(1500, 40, seed=4)
    extra = sp.csr_array(np.eye(1, matrix.n_patients, 17).T.astype(np.float32))
    return CodeMatrix(sp.hstack([matrix.matrix, extra], format="csr"), matrix.vocabulary + (PLANTED_CODE,),
                      matrix.patient_ids, True)


@pytest.fixture(scope="module")
def models(table, codes) -> dict:
    return {}


def model_for(name, models, table, codes):
    if name not in models:
        models[name] = fitted(name, table, codes)
    return models[name]


@pytest.mark.parametrize("name", MODELS)
def test_sample_is_reproducible_and_survives_save_and_load(name, models, table, codes, tmp_path):
    model = model_for(name, models, table, codes)
    first = model.sample(50, seed=11)
    assert same(first, model.sample(50, seed=11))
    assert not same(first, model.sample(50, seed=12))
    assert size(first) == 50
    reloaded = load(model.save(tmp_path / "bundle"))
    assert reloaded.name == name
    assert same(first, reloaded.sample(50, seed=11))


@pytest.mark.parametrize("name", MODELS)
def test_params_round_trip(name):
    model = build(name, seed=5)
    params = model.get_params()
    assert params["seed"] == 5
    assert create(name, **params).get_params() == params


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_is_refused(name, models, table, codes):
    with pytest.raises(NotFittedError):
        build(name).sample(5)
    with pytest.raises(ClinsynthError):
        build(name).fit(table.iloc[:0])  # no records
    with pytest.raises(ClinsynthError):
        build(name).fit([[1, 2], [3, 4]])  # neither a table nor a code matrix
    with pytest.raises(ClinsynthError):
        model_for(name, models, table, codes).sample(0)
    with pytest.raises(ClinsynthError):
        create(name, no_such_parameter=1)


def raw_values(bundle: Path) -> list[str]:
    """Files of ``bundle`` holding a planted value as text or as a float's 64/32-bit bytes."""
    needles = [PLANTED_CATEGORY.encode(), PLANTED_CODE.encode(), b"98765.4", b"98765",
               struct.pack("<d", PLANTED_NUMBER), struct.pack("<f", PLANTED_NUMBER)]
    return [f.name for f in bundle.rglob("*") if f.is_file() and any(n in f.read_bytes() for n in needles)]


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith("dp-")])
def test_dp_bundle_holds_no_raw_value(name, models, table, codes, tmp_path):
    model = model_for(name, models, table, codes)
    assert model.ledger_.spent() <= 2.0
    assert raw_values(model.save(tmp_path / "dp")) == []


@pytest.mark.parametrize("name", ["bayesnet", "codetree", "visitchain", "visitrnn"])
def test_the_raw_value_check_finds_what_a_non_dp_bundle_keeps(name, models, table, codes, tmp_path):
    # the check above can fail: the same data through a non-private model leaves the values in its bundle
    assert raw_values(model_for(name, models, table, codes).save(tmp_path / "plain")) != []
