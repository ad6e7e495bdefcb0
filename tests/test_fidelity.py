"""Fidelity metrics: zero on a copy, large where the synthetic table is wrong, detection at both ends."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.datasets import simulate_trial
from clinsynth.evaluate.fidelity import (association_difference, column_scores, cramers_v, detection_auroc,
                                         longitudinal_summaries, marginals as fidelity_marginals,
                                         dimension_wise_probability, fidelity)
from clinsynth.schema import Schema


@pytest.fixture(scope="module")
def trial():
    df = simulate_trial(n=1200, seed=4)
    return df, Schema.infer(df, target="arm")


def test_a_copy_scores_zero_everywhere(trial):
    df, schema = trial
    scores = {c.column: c for c in column_scores(df, df.copy(), schema)}
    assert max(c.value for c in scores.values()) == 0.0
    assert scores["sbp_m27"].missing_real == scores["sbp_m27"].missing_synthetic > 0.05  # dropout counted
    assoc = association_difference(df, df.copy(), schema)
    assert assoc.max_abs == 0.0
    dwp = dimension_wise_probability(df, df.copy(), schema)
    assert dwp.correlation == pytest.approx(1.0) and len(dwp.columns) >= 4


def test_wrong_marginals_and_broken_associations_are_named(trial):
    df, schema = trial
    bad = df.copy()
    bad["age"] = bad["age"] + 15  # shifted
    bad["female"] = 1 - bad["female"]  # flipped prevalence
    rng = np.random.default_rng(0)
    bad["dbp_m12"] = rng.permutation(bad["dbp_m12"].to_numpy())  # same marginal, association with sbp gone
    scores = {c.column: c.value for c in column_scores(df, bad, schema)}
    assert scores["age"] > 0.5 and scores["female"] > 0.05 and scores["dbp_m12"] == 0.0
    assoc = association_difference(df, bad, schema, top=20)
    assert any("dbp_m12" in (cell["a"], cell["b"]) for cell in assoc.largest)
    assert dimension_wise_probability(df, bad, schema).real != dimension_wise_probability(df, bad, schema).synthetic


def test_cramers_v_bounds():
    a = pd.Series(list("aabbcc") * 20)
    assert cramers_v(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    assert cramers_v(pd.Series(rng.choice(list("xy"), 5000)), pd.Series(rng.choice(list("uv"), 5000))) < 0.05


def test_detection_is_near_chance_for_fresh_draws_and_near_one_for_noise(trial):
    df, schema = trial
    same_process = simulate_trial(n=1200, seed=5)
    assert detection_auroc(df, same_process, schema, folds=3) < 0.6
    noise = df.copy()
    rng = np.random.default_rng(2)
    for col in ["age", "bmi", "egfr", "glucose"] + [c for c in df if c.startswith("sbp_")]:
        noise[col] = rng.uniform(df[col].min(), df[col].max(), len(df)).round().astype(df[col].dtype)
    assert detection_auroc(df, noise, schema, folds=3) > 0.9


def test_result_is_json_plain(trial):
    df, schema = trial
    result = fidelity(df.iloc[:600], df.iloc[600:], schema)
    json.dumps(result.to_dict())
    assert 0.3 < result.detection_auroc < 0.7


def test_marginals_and_visit_summaries_show_what_differs(trial):
    df, schema = trial
    shifted = df.copy()
    shifted["age"] = shifted["age"] + 15
    by_name = {m.column: m for m in fidelity_marginals(df, shifted, schema)}
    age = by_name["age"]
    assert sum(age.real) == pytest.approx(1.0) and sum(age.synthetic) == pytest.approx(1.0)
    assert age.synthetic[-1] > 0.25 > 0.05 > age.real[-1]  # the shift piles into the top bin
    assert by_name["arm"].real == by_name["arm"].synthetic
    summary = {s.group: s for s in longitudinal_summaries(df, df.iloc[:300], schema)}["sbp"]
    cells = {(r["class"], r["visit"], r["source"]): r for r in summary.rows}
    real_m27 = cells[("1", summary.rows[-1]["visit"], "real")]
    assert 0 < real_m27["observed"] < 0.95  # dropout shows as a falling observed share
    assert real_m27["q1"] <= real_m27["median"] <= real_m27["q3"]
