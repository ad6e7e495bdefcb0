"""dp-acgan end to end: the ledger covers everything, the bundle leaks no raw value, the CLI prints it."""
from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clinsynth
from clinsynth.cli import main
from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import PrivacyBudgetError
from clinsynth.privacy.ledger import default_delta
from clinsynth.schema import Schema

FAST = dict(epochs=3, batch_size=256, progress=False, accountant="rdp")
PLANTED_NUMBER = 98765.4321
PLANTED_CATEGORY = "Planted-Ancestry-XJ9"


@pytest.fixture(autouse=True)
def quiet_accountants():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    df = simulate_trial(n=3000, seed=3)
    df.loc[17, "glucose"] = PLANTED_NUMBER
    df.loc[42, "race"] = PLANTED_CATEGORY
    return df


@pytest.fixture(scope="module")
def private_model(planted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = Schema.infer(planted, target="arm")
        return clinsynth.create("dp-acgan", epsilon=1.0, select="top2", select_candidates=3, **FAST).fit(planted, schema)


def leaks(bundle: Path) -> list[str]:
    """Files of ``bundle`` holding the planted value in any form a reader could find: text, or the
    float's 64/32-bit bytes (weights, pickles)."""
    needles = [PLANTED_CATEGORY.encode(), b"98765.4", b"98765.43", b"98765",
               struct.pack("<d", PLANTED_NUMBER), struct.pack("<f", PLANTED_NUMBER)]
    return [f.name for f in bundle.rglob("*") if f.is_file() and any(n in f.read_bytes() for n in needles)]


def test_no_file_of_a_dp_bundle_holds_a_planted_unique_value(private_model, planted, tmp_path):
    bundle = private_model.save(tmp_path / "dp")
    assert leaks(bundle) == []
    # the check itself works: the same data through the non-private model leaks both values
    plain = clinsynth.create("acgan", epochs=1, progress=False).fit(planted, Schema.infer(planted, target="arm"))
    assert "schema.json" in leaks(plain.save(tmp_path / "plain"))
    released = private_model.schema_
    assert PLANTED_CATEGORY not in released.column("race").categories
    assert released.column("glucose").bounds[1] < 1000


def test_the_ledger_covers_public_facts_training_and_selection(private_model):
    ledger = private_model.ledger_
    assert [c.mechanism for c in ledger.charges] == ["gaussian", "dp-sgd", "gaussian"]
    assert [c.purpose.split(":")[0] for c in ledger.charges] == ["public facts", "discriminator training", "epoch selection"]
    assert ledger.delta == default_delta(3000) == 1e-5
    assert 0.9 < ledger.spent() <= 1.0  # calibrated to use the budget, never past it
    sgd = ledger.charges[1]
    assert sgd.sample_rate == pytest.approx(256 / 3000) and sgd.steps == 3 * round(3000 / 256)
    assert private_model.selection_["private"] and len(private_model.selection_["chosen"]) == 2
    # the history a bundle keeps has no loss computed on real records without noise
    assert set(private_model.history_[0]) == {"d_fake", "g"}


def test_bundle_round_trip_keeps_the_ledger_and_the_ensemble(private_model, tmp_path):
    bundle = private_model.save(tmp_path / "dp")
    config = json.loads((bundle / "config.json").read_text())
    assert config["fitted"]["ledger"]["charges"][1]["mechanism"] == "dp-sgd"
    loaded = clinsynth.load(bundle)
    assert loaded.ledger_.spent() == pytest.approx(private_model.ledger_.spent())
    assert len(loaded.ensemble_) == 2
    pd.testing.assert_frame_equal(loaded.sample(500, seed=1), private_model.sample(500, seed=1))
    synthetic = loaded.sample(2000, seed=2)
    loaded.schema_.validate(synthetic)
    assert synthetic["arm"].nunique() == 2


def test_spent_budget_and_impossible_settings_are_refused(planted):
    schema = Schema.infer(planted, target="arm")
    # ε = 0.05 cannot locate any column's values: refused before anything is charged, naming the ε that can
    with pytest.raises(clinsynth.InputError, match=r"group:sbp.*raise ε \(ε = 0.05 here; the smallest ε that would work is"):
        clinsynth.create("dp-acgan", epsilon=0.05, **FAST).fit(planted, schema)
    public = schema.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in schema.columns]})
    with pytest.raises(PrivacyBudgetError, match="past the budget"):  # RDP's ε of the class table's charge alone
        clinsynth.create("dp-acgan", epsilon=0.05, **FAST).fit(planted, public)
    with pytest.raises(clinsynth.ConfigError, match="above 1/n"):
        clinsynth.create("dp-acgan", epsilon=1.0, delta=1e-3, **FAST).fit(planted, schema)
    with pytest.raises(clinsynth.ConfigError, match="epsilon"):
        clinsynth.create("dp-acgan", epsilon=-1.0, **FAST).fit(planted, schema)


def test_default_delta_is_below_one_over_n():
    assert default_delta(100) == 1e-5
    assert default_delta(250_000) == 4e-7
    for n in (10, 999, 123_456, 10**7):
        assert default_delta(n) < 1 / n


def test_cli_fit_with_epsilon_prints_the_ledger(tmp_path, capsys):
    data = tmp_path / "sim.csv"
    simulate_trial(n=2000, seed=5).to_csv(data, index=False)
    code = main(["fit", str(data), "--target", "arm", "--model", "acgan", "--epsilon", "1", "--epochs", "2", "--quiet",
                 "--param", "batch_size=256", "--out", str(tmp_path / "model")])
    printed = capsys.readouterr().err
    assert code == 0, printed
    assert "privacy ledger" in printed and "dp-sgd" in printed and "public facts" in printed
    total = float(printed.split("total: ε = ")[1].split()[0])
    assert 0.5 < total <= 1.0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model"] == "dp-acgan" and config["fitted"]["ledger"]["accountant"] == "prv"
    assert main(["fit", str(data), "--target", "arm", "--model", "acgan", "--epsilon", "0.01", "--epochs", "50", "--quiet",
                 "--out", str(tmp_path / "m2")]) == 1
    assert "raise ε" in capsys.readouterr().err  # a budget this small cannot even release the public facts
    assert main(["fit", str(data), "--target", "arm", "--delta", "1e-6", "--out", str(tmp_path / "m3")]) == 1
    assert "error: --epsilon/--delta: delta needs epsilon" in capsys.readouterr().err


def test_a_small_table_trains_with_the_default_batch_at_a_quarter_of_the_records():
    """455 records and batch_size=512: the expected Poisson batch becomes 113, which the ledger charges."""
    df = simulate_trial(n=455, seed=5)
    schema = Schema.infer(df, target="arm")  # bounds declared public: 455 records are too few to estimate them at ε = 1
    schema = schema.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in schema.columns]})
    model = clinsynth.create("dp-acgan", epsilon=1.0, epochs=2, select="last", progress=False, accountant="rdp")
    model.fit(df, schema)
    sgd = next(row for row in model.ledger_.table() if row["mechanism"] == "dp-sgd")
    assert model.batch_size_ == 113 and sgd["sample_rate"] == pytest.approx(113 / 455)
    assert sgd["steps"] == 2 * 4 and model.ledger_.spent() <= 1.0
    assert len(model.sample(50, seed=0)) == 50
