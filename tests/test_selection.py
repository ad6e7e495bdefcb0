"""Epoch selection: the private score's sensitivity, the noisy top-k, the candidate grid."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clinsynth.data.datasets import load_breast_cancer
from clinsynth.errors import ConfigError, PrivacyBudgetError
from clinsynth.privacy.ledger import Charge, PrivacyLedger
from clinsynth.schema import Schema
from clinsynth.selection import bounded_score_sum, candidate_epochs, parse_select, private_top, tstr_auroc


@pytest.fixture(scope="module")
def table():
    df = load_breast_cancer()
    return df, Schema.infer(df, target="diagnosis")


def test_private_score_moves_by_at_most_one_per_record(table):
    df, schema = table
    synthetic, real = df.iloc[:300], df.iloc[300:]
    full = bounded_score_sum(synthetic, real, schema)
    assert 0 <= full <= len(real)
    for i in (0, 7, 100):
        without = bounded_score_sum(synthetic, real.drop(real.index[i]), schema)
        assert 0 <= full - without <= 1.0  # each record adds a term in [0, 1]


def test_scores_prefer_useful_synthetic_data(table):
    df, schema = table
    synthetic, real = df.iloc[:300], df.iloc[300:]
    shuffled = synthetic.assign(diagnosis=synthetic["diagnosis"].sample(frac=1, random_state=0).to_numpy())
    assert tstr_auroc(synthetic, real, schema) > 0.9 > 0.7 > tstr_auroc(shuffled, real, schema)
    assert bounded_score_sum(synthetic, real, schema) > bounded_score_sum(shuffled, real, schema) + 0.2 * len(real)


def _ledger(epsilon: float = 1e4) -> PrivacyLedger:
    return PrivacyLedger(epsilon, 1e-5, accountant="rdp")


def test_private_top_charges_the_ledger_and_adds_the_stated_noise():
    sums = np.array([10.0, 50.0, 30.0, 40.0])
    ledger = _ledger()
    charge = Charge("gaussian", "epoch selection", noise_multiplier=0.05, sample_rate=1.0, steps=1)
    result = private_top(ledger, charge, lambda: sums, 2, [3, 5, 7, 9], np.random.default_rng(0))
    assert ledger.charges == [charge]  # charged in the same call that drew the noise
    assert result.chosen == [5, 9] and result.private and result.noise_std == pytest.approx(0.05 * 2)  # σ × √K
    wide = replace(charge, noise_multiplier=3.0)
    draws = np.array([private_top(_ledger(), wide, lambda: np.zeros(16), 1, list(range(16)), np.random.default_rng(s)).noisy
                      for s in range(200)])
    assert draws.std() == pytest.approx(3.0 * 4, rel=0.05)


def test_private_top_refuses_an_overspend_before_any_score_is_computed():
    def scores():
        raise AssertionError("scored real records before the ledger accepted the charge")

    ledger = _ledger(epsilon=1.0)
    with pytest.raises(PrivacyBudgetError):
        private_top(ledger, Charge("gaussian", "epoch selection", 0.5, 1.0, 1), scores, 1, [0, 1],
                    np.random.default_rng(0))
    assert ledger.charges == []


def test_candidates_and_select_parsing():
    assert candidate_epochs(150, 20)[-1] == 149 and len(candidate_epochs(150, 20)) == 20
    assert candidate_epochs(3, 20) == [0, 1, 2]
    assert parse_select("top5") == 5 and parse_select("last") == 0 and parse_select(None) == 0
    for bad in ("top0", "best", "5"):
        with pytest.raises(ConfigError):
            parse_select(bad)
