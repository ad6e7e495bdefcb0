"""Every charge records its privacy unit (issue 21, item 3): record for the table models, patient
for code matrices and the patients family; a ledger holds one unit, keeps it through save and load
(an old state reads per record), and the guarantee, manifest and CLI say the ledger's unit."""
from __future__ import annotations

import json

import numpy as np
import pytest
from long_visits import simulate_visits

import clinsynth as cs
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.ehr import attach_static
from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.errors import ConfigError
from clinsynth.pipeline import guarantee_of, privacy_unit_of
from clinsynth.privacy.ledger import Charge, PrivacyLedger, charge_calibrated, epsilon_of
from clinsynth.privacy.unit import PrivacyUnitError
from clinsynth.schema import Schema


def _charge(purpose: str, unit: str = "record", sigma: float = 20.0) -> Charge:
    return Charge("gaussian", purpose, noise_multiplier=sigma, sample_rate=1.0, steps=1, unit=unit)


# -- the ledger ------------------------------------------------------------------------------
def test_a_charge_is_per_record_unless_it_says_otherwise():
    assert Charge("gaussian", "old call", 20.0, 1.0, 1).unit == "record"
    assert _charge("visits", "patient").unit == "patient"
    with pytest.raises(ConfigError, match="charge 'x': unit must be 'record' or 'patient', got 'row'"):
        _charge("x", "row")
    with pytest.raises(ConfigError, match="privacy unit must be 'record' or 'patient'"):
        PrivacyLedger(1.0, 1e-5, unit="visit")


def test_the_ledger_refuses_a_charge_of_another_unit():
    ledger = PrivacyLedger(1.0, 1e-5, unit="patient")
    ledger.charge(_charge("visit tables", "patient"))
    with pytest.raises(PrivacyUnitError) as caught:
        ledger.charge(_charge("facts of every row"))
    message = str(caught.value)
    assert "\n" not in message
    assert "'facts of every row' protects a record but this ledger's charges protect a patient" in message
    assert [c.purpose for c in ledger.charges] == ["visit tables"]  # nothing recorded


def test_charges_of_different_units_do_not_compose():
    with pytest.raises(PrivacyUnitError, match="'b' protects a patient but 'a' protects a record"):
        epsilon_of([_charge("a"), _charge("b", "patient")], 1e-5)
    # calibration composes too: a mechanism of the wrong unit is refused before any σ is chosen
    ledger = PrivacyLedger(1.0, 1e-5, unit="patient")
    with pytest.raises(PrivacyUnitError, match="'sgd' protects a record"):
        charge_calibrated(ledger, lambda s: Charge("dp-sgd", "sgd", s, 0.01, 100))
    assert ledger.charges == []


def test_the_unit_survives_the_state_and_an_old_state_reads_per_record():
    ledger = PrivacyLedger(2.0, 1e-5, unit="patient")
    ledger.charge(_charge("tables", "patient"))
    state = json.loads(json.dumps(ledger.state_dict()))
    assert state["unit"] == "patient" and state["charges"][0]["unit"] == "patient"
    again = PrivacyLedger.from_state_dict(state)
    assert again.unit == "patient" and [c.unit for c in again.charges] == ["patient"]
    assert again.table()[0]["unit"] == "patient"
    # a ledger saved before units: no "unit" anywhere
    old = {k: v for k, v in state.items() if k != "unit"}
    old["charges"] = [{k: v for k, v in c.items() if k != "unit"} for c in state["charges"]]
    legacy = PrivacyLedger.from_state_dict(old)
    assert legacy.unit == "record" and legacy.charges[0].unit == "record"
    assert legacy.spent() == pytest.approx(again.spent())
    mixed = dict(state, charges=[*state["charges"], dict(state["charges"][0], unit="record", purpose="stray")])
    with pytest.raises(PrivacyUnitError, match="'stray' protects a record"):
        PrivacyLedger.from_state_dict(mixed)


def test_cli_ledger_print_names_the_unit(capsys):
    from clinsynth.cli import print_ledger

    ledger = PrivacyLedger.for_records(1.0, None, 500, unit="patient")
    ledger.charge(_charge("visit tables", "patient"))
    print_ledger(ledger)
    out = " ".join("".join(capsys.readouterr()).split())
    assert "privacy unit: patient" in out and "per patient" in out


# -- every model charges its own unit --------------------------------------------------------
@pytest.fixture(scope="module")
def long_table():
    df = simulate_visits(400, seed=2, max_visits=8)
    return df, Schema.infer(df, target="death", patient="pid", time="day")


@pytest.fixture(scope="module")
def dp_visitchain(long_table):
    df, schema = long_table
    return cs.create("dp-visitchain", epsilon=2.0, progress=False).fit(df, schema)


def _public(schema: Schema) -> Schema:
    return schema.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in schema.columns]})


def _fitted(kind: str):
    if kind == "dp-bayesnet":
        df = simulate_trial(n=300, seed=1)
        return cs.create("dp-bayesnet", epsilon=1.0, progress=False).fit(df, Schema.infer(df, target="arm"))
    if kind == "dp-acgan":
        df = simulate_trial(n=200, seed=1)
        return cs.create("dp-acgan", epsilon=1.0, epochs=1, batch_size=64, progress=False, snapshots="off",
                         select="last", accountant="rdp").fit(df, _public(Schema.infer(df, target="arm")))
    codes, people = simulate_ehr(1500, 40, seed=4)
    if kind == "dp-codetree":
        return cs.create("dp-codetree", epsilon=2.0, progress=False).fit(attach_static(codes, people))
    return cs.create("dp-vae", epsilon=2.0, epochs=1, batch_size=256, progress=False).fit(codes)


@pytest.mark.parametrize("kind, unit, word", [("dp-bayesnet", "record", "row"), ("dp-acgan", "record", "row"),
                                              ("dp-codetree", "patient", "patient"), ("dp-vae", "patient", "patient")])
def test_each_dp_model_charges_its_unit_and_states_it(kind, unit, word):
    model = _fitted(kind)
    ledger = model.ledger_
    assert ledger.unit == unit and ledger.charges and {c.unit for c in ledger.charges} == {unit}
    assert privacy_unit_of(model).startswith(word)
    assert {row["unit"] for row in guarantee_of(model)["charges"]} == {unit}


def test_dp_visitchain_charges_every_step_per_patient(dp_visitchain):
    ledger = dp_visitchain.ledger_
    assert ledger.unit == "patient"
    steps = {c.purpose.split(":")[0].split(" (")[0]: c.unit for c in ledger.charges}
    assert set(steps.values()) == {"patient"}
    # the per-patient network's own (per-record) charges, the visit facts and the visit tables
    assert any(p.startswith("per-patient table") for p in steps) and "visit chain" in steps
    assert any("one random visit per patient" in c.purpose for c in ledger.charges)
    assert privacy_unit_of(dp_visitchain).startswith("patient (all rows of one patient)")


def test_dp_visitchain_bundle_keeps_the_unit_and_an_old_bundle_reads_per_row(dp_visitchain, tmp_path):
    path = dp_visitchain.save(tmp_path / "bundle")
    config = json.loads((path / "config.json").read_text())
    assert config["fitted"]["ledger"]["unit"] == "patient"
    loaded = cs.load(path)
    assert loaded.ledger_.unit == "patient" and {c.unit for c in loaded.ledger_.charges} == {"patient"}
    assert privacy_unit_of(loaded) == privacy_unit_of(dp_visitchain)
    # a bundle written before charges named their unit: its ledger reads per record, and so does its guarantee
    ledger = config["fitted"]["ledger"]
    ledger.pop("unit")
    for c in ledger["charges"]:
        c.pop("unit")
    (path / "config.json").write_text(json.dumps(config))
    old = cs.load(path)
    assert old.ledger_.unit == "record"
    assert privacy_unit_of(old).startswith("row (each row is a different person): its ledger was saved before")


def test_release_under_dp_states_the_ledgers_unit(long_table, tmp_path):
    from clinsynth.cli import main

    df, _ = long_table
    csv = tmp_path / "visits.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "rel"
    assert main(["run", str(csv), "--patient-col", "pid", "--time-col", "day", "--target", "death", "--epsilon", "2",
                 "--out", str(out), "--quiet", "--evaluate", "none"]) == 0
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    bundle = json.loads((out / "share" / "model" / "config.json").read_text())
    assert bundle["fitted"]["ledger"]["unit"] == "patient"
    assert manifest["privacy_unit"].startswith("patient (all rows of one patient)")
    page = (out / "share" / "guarantee.html").read_text()
    assert page.count('<td class="l">patient</td>') == len(bundle["fitted"]["ledger"]["charges"])
    assert np.isfinite(manifest["timings_seconds"]["total"])
