"""Epoch selection: the private score's sensitivity, the noisy top-k, the candidate grid."""
from __future__ import annotations

import numpy as np
import pytest

from clinsynth.data.datasets import load_breast_cancer
from clinsynth.errors import ConfigError
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


def test_private_top_noise_has_the_stated_scale_and_little_noise_keeps_the_order():
    sums = np.array([10.0, 50.0, 30.0, 40.0])
    result = private_top(sums, 2, [3, 5, 7, 9], noise_multiplier=1e-6, rng=np.random.default_rng(0))
    assert result.chosen == [5, 9] and result.private and result.noise_std == pytest.approx(2e-6)
    draws = np.array([private_top(np.zeros(16), 1, list(range(16)), 3.0, np.random.default_rng(s)).noisy for s in range(200)])
    assert draws.std() == pytest.approx(3.0 * 4, rel=0.05)  # σ × √K


def test_candidates_and_select_parsing():
    assert candidate_epochs(150, 20)[-1] == 149 and len(candidate_epochs(150, 20)) == 20
    assert candidate_epochs(3, 20) == [0, 1, 2]
    assert parse_select("top5") == 5 and parse_select("last") == 0 and parse_select(None) == 0
    for bad in ("top0", "best", "5"):
        with pytest.raises(ConfigError):
            parse_select(bad)
