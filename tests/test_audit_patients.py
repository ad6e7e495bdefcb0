"""The patient-level one-run audit (issue 21): canary patients with several visits each, flipped in
or out whole, against dp-visitchain. The correct engine's claim must stand; the same engine with the
Gaussian mechanism's noise switched off (a test-only monkeypatch: the ledger still charges and claims
ε, the tables come out exact) must be caught by the likelihood attack.

Measured (bins=16, δ = 1e-5, 95 % confidence, claim ε = 1): 300 real patients, 200 canaries, seed 0:
the correct engine ε ≥ 0.00 (AUROC 0.61), noise off ε ≥ 2.07 (AUROC 0.96, 96 of 100 guesses right),
the non-DP visitchain ε ≥ 2.09. 500 patients, 400 canaries, seeds 0–2 (slow): correct 0.00 each,
noise off 2.17, 1.45, 1.45.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from long_visits import simulate_visits

import clinsynth as cs
from clinsynth.errors import ConfigError
from clinsynth.models import bayesnet_counts
from clinsynth.privacy import gaussian
from clinsynth.privacy.audit_patients import (audit_patients, make_canary_patients, patient_summaries,
                                              run_patient_audit)
from clinsynth.schema import Schema

CLAIM, DELTA = 1.0, 1e-5
#: 16 value bins per lab (the DP default would choose ~2 for a few hundred patients): an auditor's
#: setting that gives each canary's jumps cells of their own; the guarantee holds for any bins
PARAMS = dict(epsilon=CLAIM, bins=16, accountant="rdp", progress=False)


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return simulate_visits(300, seed=0, max_visits=10)


@pytest.fixture(scope="module")
def schema(real) -> Schema:
    inferred = Schema.infer(real, target="death", patient="pid", time="day")
    return inferred.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in inferred.columns]})


def _dp_visitchain():
    return cs.create("dp-visitchain", **PARAMS)


class _NoNoise:
    """A generator whose normal draws are all zero (everything else as the wrapped one)."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng

    def normal(self, loc=0.0, scale=1.0, size=None):
        return np.zeros(size) + loc

    def __getattr__(self, name):
        return getattr(self._rng, name)


def switch_noise_off(monkeypatch) -> None:
    """The planted bug: every Gaussian release charges the ledger as before but adds no noise
    (and reports none, so nothing downstream shrinks towards a prior either)."""
    plain, symmetric = gaussian.gaussian_release, gaussian.symmetric_gaussian_release

    def noiseless(ledger, charge, sensitivity, measure, rng, low=0.05):
        return dataclasses.replace(plain(ledger, charge, sensitivity, measure, _NoNoise(rng), low), noise_std=0.0)

    def noiseless_symmetric(ledger, charge, sensitivity, measure, rng, diagonal):
        return dataclasses.replace(symmetric(ledger, charge, sensitivity, measure, _NoNoise(rng), diagonal),
                                   noise_std=0.0)

    for module in (gaussian, bayesnet_counts):
        monkeypatch.setattr(module, "gaussian_release", noiseless)
        monkeypatch.setattr(module, "symmetric_gaussian_release", noiseless_symmetric)


# -- canary patients ---------------------------------------------------------------------------
def test_canary_patients_fit_the_long_schema(real, schema):
    canaries = make_canary_patients(schema, 50, np.random.default_rng(0))
    both = pd.concat([real, canaries], ignore_index=True)
    schema.validate(both)
    assert (both.dtypes == real.dtypes).all()
    g = canaries.groupby("pid", sort=False)
    assert canaries["pid"].nunique() == 50 and (canaries["pid"] < 0).all()  # numeric ids: negative, no clash
    assert g.size().between(3, 6).all() and g.size().nunique() > 1  # several visits each
    assert g["day"].apply(lambda d: d.is_monotonic_increasing and d.is_unique).all()
    assert canaries["day"].between(0, real["day"].max()).all()
    for column in ("arm", "sex", "age", "death"):  # per-patient columns hold on every visit
        assert g[column].nunique().max() == 1
    assert g["sbp"].nunique().min() > 1  # visit columns vary by visit
    assert canaries.notna().all().all()
    # uniform over the bounds: far wider than a real patient's visits
    assert g["sbp"].std().mean() > 2 * real.groupby("pid")["sbp"].std().mean()


def test_canary_patients_with_dates_and_text_ids():
    rng = np.random.default_rng(3)
    owner = np.repeat(np.arange(40), 4)
    day = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.tile([0, 30, 60, 90], 40) + owner, unit="D")
    real = pd.DataFrame({"who": [f"p{i}" for i in owner], "seen": day, "sex": np.repeat(rng.choice(["F", "M"], 40), 4),
                         "hb": rng.normal(13, 1, len(owner)).round(1)})
    schema = Schema.infer(real, patient="who", time="seen")
    canaries = make_canary_patients(schema, 20, rng, visits=(2, 3))
    schema.validate(pd.concat([real, canaries], ignore_index=True))
    assert canaries["who"].str.startswith("canary-").all() and canaries["who"].nunique() == 20
    assert (canaries["seen"] == canaries["seen"].dt.normalize()).all()  # a daily column stays daily
    assert canaries.groupby("who")["seen"].apply(lambda d: d.is_monotonic_increasing and d.is_unique).all()


def test_canary_patients_are_refused_what_they_cannot_be_built_from(real, schema):
    wide = Schema.infer(real.drop(columns=["day"]).drop_duplicates("pid"), target="death")
    with pytest.raises(ConfigError, match="long-format schema"):
        make_canary_patients(wide, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="visits must be"):
        make_canary_patients(schema, 5, np.random.default_rng(0), visits=(4, 2))
    no_bounds = schema.model_copy(update={"columns": [c.model_copy(update={"bounds": None}) if c.name == "day" else c
                                                      for c in schema.columns]})
    with pytest.raises(ConfigError, match="time column 'day'.*bounds"):
        make_canary_patients(no_bounds, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="even whole number"):
        run_patient_audit(lambda t, c: np.zeros(21), real, schema, n_canaries=21)


def test_run_patient_audit_flips_whole_patients(real, schema):
    seen = {}

    def leaky(training, canaries):
        trained = canaries["pid"].drop_duplicates().isin(training["pid"])
        rows = training[training["pid"] < 0].groupby("pid").size()
        seen["whole"] = (rows == canaries[canaries["pid"].isin(rows.index)].groupby("pid").size()).all()
        return trained.to_numpy(dtype=float) + np.random.default_rng(1).normal(0, 0.1, len(trained))

    result = run_patient_audit(leaky, real, schema, n_canaries=100, seed=2)
    assert seen["whole"] and result.flags(CLAIM) and result.auroc == 1.0 and result.n_canaries == 100


# -- the likelihood score -----------------------------------------------------------------------
def test_membership_scores_one_per_patient_in_order(real, schema):
    model = cs.create("visitchain", bins=16, progress=False).fit(real, schema)
    canaries = make_canary_patients(schema, 30, np.random.default_rng(0))
    scores = model.membership_scores(canaries)
    assert scores.shape == (30,) and np.isfinite(scores).all()
    # a patient's score does not depend on who else is scored or in which order its rows come
    shuffled = canaries.sample(frac=1.0, random_state=0)
    order = pd.unique(shuffled["pid"])
    expected = pd.Series(scores, index=pd.unique(canaries["pid"])).loc[order].to_numpy()
    np.testing.assert_allclose(model.membership_scores(shuffled), expected)
    # a real trained-on patient is far likelier under the chain than a canary
    assert np.median(model.membership_scores(real[real["pid"] < 1030])) > np.median(scores) + 10


# -- the audit: correct engine below its claim, noise off above it ------------------------------
def test_patient_audit_clears_correct_dp_visitchain_and_catches_it_without_noise(real, schema, monkeypatch):
    correct = audit_patients(_dp_visitchain, real, schema, n_canaries=200, delta=DELTA, seed=0)
    assert not correct.flags(CLAIM), correct.to_dict()
    switch_noise_off(monkeypatch)
    broken = audit_patients(_dp_visitchain, real, schema, n_canaries=200, delta=DELTA, seed=0)
    assert broken.flags(CLAIM), broken.to_dict()
    assert broken.epsilon_lower > correct.epsilon_lower + 0.5 and broken.auroc > 0.85


def test_non_dp_visitchain_is_caught_by_the_same_canaries(real, schema):
    """No DP at all (smoothing 0.25 pseudo-records): the chain remembers its canary patients."""
    result = audit_patients(lambda: cs.create("visitchain", bins=16, progress=False), real, schema, n_canaries=200,
                            delta=DELTA, seed=0)
    assert result.flags(CLAIM), result.to_dict()


def test_distance_attack_runs_and_summaries_are_per_patient(real, schema):
    summary = patient_summaries(real, schema)
    assert len(summary) == real["pid"].nunique() and list(summary.index[:2]) == list(pd.unique(real["pid"])[:2])
    assert {"visits", "first", "span", "age", "sbp:first", "sbp:last", "sbp:mean"} <= set(summary.columns)
    result = audit_patients(_dp_visitchain, real, schema, attack="distance", n_canaries=40, delta=DELTA)
    assert result.n_canaries == 40 and 0 <= result.epsilon_lower < CLAIM
    with pytest.raises(ConfigError, match="attack must be"):
        audit_patients(_dp_visitchain, real, schema, attack="oracle")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_audit_at_scale(seed, monkeypatch):
    """500 real patients, 400 canary patients, three seeds (the README's figures)."""
    real = simulate_visits(500, seed=seed, max_visits=10)
    inferred = Schema.infer(real, target="death", patient="pid", time="day")
    schema = inferred.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in inferred.columns]})
    correct = audit_patients(_dp_visitchain, real, schema, n_canaries=400, delta=DELTA, seed=seed)
    assert not correct.flags(CLAIM), correct.to_dict()
    switch_noise_off(monkeypatch)
    broken = audit_patients(_dp_visitchain, real, schema, n_canaries=400, delta=DELTA, seed=seed)
    assert broken.flags(CLAIM), broken.to_dict()
