"""The one-run privacy audit (Steinke, Nasr & Jagielski 2023): its bound against closed forms and
simulated DP mechanisms, the canaries against the schema, and the black-box distance attack."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import ConfigError
from clinsynth.privacy import audit
from clinsynth.privacy.audit import (AuditResult, distance_scores, epsilon_lower_bound, make_canaries, p_value,
                                     run_audit)
from clinsynth.schema import Schema


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _coins(m: int, seed: int) -> tuple[np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng, rng.random(m) < 0.5


def _randomized_response(epsilon: float, m: int, seed: int) -> float:
    """Bound from the ε-DP worst case: each canary's bit reported truthfully w.p. e^ε/(1+e^ε)."""
    rng, inc = _coins(m, seed)
    truthful = rng.random(m) < math.exp(epsilon) / (1 + math.exp(epsilon))
    bits = np.where(truthful, inc, ~inc)
    return epsilon_lower_bound(bits.astype(float), inc).epsilon_lower


# --- the bound -----------------------------------------------------------------------------

def test_perfect_separation_matches_closed_form():
    inc = np.zeros(200, dtype=bool)
    inc[np.random.default_rng(1).permutation(200)[:100]] = True
    # r = 100 guesses, all correct: P[Bin(100, p) ≥ 100] = p^100 = α, so ε = logit(α^(1/100)).
    one = epsilon_lower_bound(inc.astype(float), inc, guess_counts=[100])
    assert (one.guesses, one.correct) == (100, 100)
    assert one.epsilon_lower == pytest.approx(_logit(0.05 ** (1 / 100)), abs=1e-6)  # ≈ 3.40
    # the default grid of 5 pays Bonferroni (α/5 each) but may pick the full r = 200, all correct
    best = epsilon_lower_bound(inc.astype(float), inc)
    assert best.epsilon_lower == pytest.approx(_logit(0.01 ** (1 / 200)), abs=1e-6)  # ≈ 3.76
    assert best.epsilon_lower > 3 and best.auroc == 1.0 and best.accuracy == 1.0


def test_hand_computed_small_case():
    # 10 guesses all correct at 95 %: p^10 = 0.05 → p = 0.74113, ε = ln(0.74113 / 0.25887) = 1.0519
    scores = np.arange(20.0)
    inc = scores >= 10
    res = epsilon_lower_bound(scores, inc, guess_counts=[10])
    assert res.correct == 10 and res.epsilon_lower == pytest.approx(1.0519, abs=1e-4)
    # Clopper–Pearson at 10/10: lower end (α/2)^(1/10)
    assert res.accuracy_interval == pytest.approx((0.025 ** 0.1, 1.0))
    # 9 of 10 correct: at ε = 0, P[Bin(10, ½) ≥ 9] = 11/1024 ≈ 0.011 < 0.05, so some ε > 0 is claimed,
    # and the bound sits where 10·p^9·(1 − p) + p^10 = 0.05
    inc[19] = False
    res_9 = epsilon_lower_bound(scores, inc, guess_counts=[10])
    assert res_9.correct == 9 and res_9.accuracy == 0.9
    assert p_value(20, 10, 9, 0.0) == pytest.approx(11 / 1024)
    p = 1 / (1 + math.exp(-res_9.epsilon_lower))
    assert 10 * p ** 9 * (1 - p) + p ** 10 == pytest.approx(0.05, rel=1e-6)
    assert 0 < res_9.epsilon_lower < res.epsilon_lower


def test_delta_term_hand_computed():
    # r = v = 4, ε = 0: β = 1/16; α = max(4/16 / 1, 10/16 / 2, 14/16 / 3, 15/16 / 4) = 0.3125;
    # with m = 10, δ = 0.01: p = 1/16 + 2·10·0.01·0.3125 = 0.125
    assert p_value(10, 4, 4, 0.0, 0.01) == pytest.approx(0.125)
    assert p_value(10, 4, 4, 0.0, 0.0) == pytest.approx(1 / 16)


def test_delta_weakens_the_bound_and_stays_on_its_boundary():
    scores = np.arange(200.0)
    inc = scores >= 100
    pure = epsilon_lower_bound(scores, inc, guess_counts=[100]).epsilon_lower
    approx = epsilon_lower_bound(scores, inc, delta=1e-4, guess_counts=[100]).epsilon_lower
    assert 0 < approx < pure
    assert p_value(200, 100, 100, approx, 1e-4) == pytest.approx(0.05, rel=1e-4)
    assert epsilon_lower_bound(scores, inc, delta=0.01, guess_counts=[100]).epsilon_lower == 0.0  # 2mδ = 4


def test_random_scores_claim_nothing_at_stated_confidence():
    claims = 0
    for seed in range(100):
        rng, inc = _coins(200, seed)
        res = epsilon_lower_bound(rng.normal(size=200), inc)
        claims += res.epsilon_lower > 0
    assert claims <= 5


def test_ties_are_not_broken_by_position():
    inc = np.arange(200) >= 100  # members listed last: a stable sort of equal scores would find them all
    assert epsilon_lower_bound(np.zeros(200), inc).epsilon_lower < 0.5


def test_randomized_response_at_epsilon_1_is_not_overclaimed():
    over = sum(_randomized_response(1.0, 1000, seed) > 1.0 for seed in range(100))
    assert over <= 5


def test_randomized_response_at_epsilon_4_is_detected():
    bounds = [_randomized_response(4.0, 1000, seed) for seed in range(40)]
    assert np.mean(bounds) > 2.0 and max(bounds) <= 4.5


def test_result_to_dict_and_flags():
    scores = np.arange(200.0)
    res = epsilon_lower_bound(scores, scores >= 100)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["n_canaries"] == 200 and d["accuracy_interval"][1] == 1.0 and set(d) == set(AuditResult.__dataclass_fields__)
    assert res.flags(1.0) and not res.flags(10.0)
    with pytest.raises(ConfigError, match="claimed_epsilon"):
        res.flags(-1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"scores": np.ones(5), "included": np.ones(4)}, "one flag per score"),
    ({"scores": np.array([1.0, np.nan]), "included": np.array([1, 0])}, "finite"),
    ({"scores": np.ones(2), "included": np.array([2, 0])}, "booleans"),
    ({"scores": np.ones(2), "included": np.array([1, 0]), "guess_counts": [3]}, "guess_counts"),
    ({"scores": np.ones(2), "included": np.array([1, 0]), "confidence": 1.0}, "confidence"),
    ({"scores": np.ones(2), "included": np.array([1, 0]), "delta": -0.1}, "delta"),
])
def test_bound_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        epsilon_lower_bound(**kwargs)


# --- canaries ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(n=500)


@pytest.fixture(scope="module")
def trial_schema(trial) -> Schema:
    return Schema.infer(trial)


def test_canaries_fit_the_trial_schema(trial, trial_schema):
    canaries = make_canaries(trial_schema, 200, np.random.default_rng(0))
    both = pd.concat([trial, canaries], ignore_index=True)
    trial_schema.validate(both)
    assert (both.dtypes == trial.dtypes).all()
    assert canaries.notna().all().all()  # no missing indicator set, no dropout
    assert canaries["participant_id"].iloc[0] == "canary-000001" and canaries["participant_id"].is_unique
    # uniform over the bounds: far wider than the real, bunched-up values
    assert canaries["age"].std() > 1.2 * trial["age"].std()


def test_canaries_fit_mixed_dtypes():
    rng = np.random.default_rng(0)
    real = pd.DataFrame({
        "pid": np.arange(300),
        "visit": pd.date_range("2020-01-01", periods=300, freq="D"),
        "stamp": pd.date_range("2020-01-01", periods=300, freq="37min", tz="Europe/Oslo"),
        "count": rng.integers(0, 9, 300),
        "site": rng.choice(["north", "south", "east"], 300),
        "flag": rng.random(300) < 0.5,
        "level": rng.normal(size=300).astype("float32").round(2),
    })
    schema = Schema.infer(real, target="site", ids=["pid"])
    canaries = make_canaries(schema, 50, np.random.default_rng(1))
    both = pd.concat([real, canaries], ignore_index=True)
    schema.validate(both)
    assert (both.dtypes == real.dtypes).all() and (canaries.dtypes == real.dtypes).all()
    assert (canaries["visit"] == canaries["visit"].dt.normalize()).all()  # a daily column stays daily
    assert canaries["visit"].between(real["visit"].min(), real["visit"].max()).all()
    assert set(canaries["site"]) <= {"north", "south", "east"} and canaries["site"].nunique() == 3
    assert (canaries["pid"] < 0).all()  # numeric ids stay numeric and never clash


def test_canaries_need_bounds():
    schema = Schema.model_validate({"columns": [{"name": "x", "kind": "continuous"}]})
    with pytest.raises(ConfigError, match="'x'.*bounds"):
        make_canaries(schema, 5, np.random.default_rng(0))


# --- the experiment ------------------------------------------------------------------------

def _membership(training: pd.DataFrame, canaries: pd.DataFrame) -> np.ndarray:
    return canaries["participant_id"].isin(training["participant_id"]).to_numpy(dtype=float)


def test_run_audit_flags_a_leak(trial, trial_schema):
    seen: dict[str, int] = {}

    def leaky(training, canaries):
        seen["rows"] = len(training)
        noise = np.random.default_rng(5).normal(scale=0.1, size=len(canaries))
        return _membership(training, canaries) + noise

    res = run_audit(leaky, trial, trial_schema, n_canaries=200, seed=3)
    assert res.flags(1.0) and res.epsilon_lower > 3 and res.auroc == 1.0
    assert seen["rows"] > len(trial)


def test_run_audit_with_pure_noise_does_not_flag(trial, trial_schema):
    def oblivious(training, canaries):
        return np.random.default_rng(len(training)).normal(size=len(canaries))

    res = run_audit(oblivious, trial, trial_schema, n_canaries=200, seed=3)
    assert not res.flags(1.0) and res.epsilon_lower < 0.5


@pytest.mark.parametrize("n", [10, 21, 20.5])
def test_run_audit_rejects_bad_canary_counts(trial, trial_schema, n):
    with pytest.raises(ConfigError, match="even whole number"):
        run_audit(_membership, trial, trial_schema, n_canaries=n)


@pytest.mark.parametrize("bad, match", [(lambda t, c: np.zeros(len(c) - 1), "one score per canary"),
                                        (lambda t, c: np.full(len(c), np.nan), "non-finite")])
def test_run_audit_rejects_bad_scores(trial, trial_schema, bad, match):
    with pytest.raises(ConfigError, match=match):
        run_audit(bad, trial, trial_schema, n_canaries=20)


# --- black-box distance attack -------------------------------------------------------------

def _encode(frame: pd.DataFrame) -> np.ndarray:
    return frame[["a", "b", "c"]].to_numpy(dtype=float)


def test_distance_scores_find_a_copied_canary(monkeypatch):
    rng = np.random.default_rng(0)
    synthetic = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    canaries = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    synthetic.iloc[17] = canaries.iloc[7].to_numpy()
    scores = distance_scores(_encode, synthetic, canaries)
    assert scores.shape == (40,) and int(np.argmax(scores)) == 7 and scores[7] == pytest.approx(0.0)
    brute = -np.sqrt(((_encode(canaries)[:, None, :] - _encode(synthetic)[None]) ** 2).sum(-1)).min(axis=1)
    assert scores == pytest.approx(brute)
    monkeypatch.setattr(audit, "NN_CHUNK_ELEMENTS", 700)  # 2 canaries a chunk
    assert distance_scores(_encode, synthetic, canaries) == pytest.approx(brute)


def test_distance_scores_check_the_encoding():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0], "c": [3.0, 4.0]})
    with pytest.raises(ConfigError, match="one row per record"):
        distance_scores(lambda f: np.zeros(3), frame, frame)
