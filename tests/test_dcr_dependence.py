"""The distance-to-closest-record interval counts the real records the synthetic rows land on,
not only the rows: a DP model that over-produces a rare pattern puts many synthetic rows on the
same few real records, and which set those few records fell in is a handful of coin flips.
Found on a walk: a dp-visitchain release (ε = 1, per patient) read 'fail' at a share of 0.63
when 111 of its 520 synthetic patients sat on 13 real ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinsynth.evaluate.privacy import distance_to_closest_record
from clinsynth.evaluate.verdicts import attacks_verdict
from clinsynth.schema import ColumnSpec, Schema

NUMS = ("a", "b", "c", "d")


def _schema() -> Schema:
    return Schema(columns=[*(ColumnSpec(name=n, kind="continuous") for n in NUMS),
                           ColumnSpec(name="f1", kind="binary", categories=[0, 1]),
                           ColumnSpec(name="f2", kind="binary", categories=[0, 1])])


def _records(rng: np.random.Generator, n: int, rare: bool = False) -> pd.DataFrame:
    df = pd.DataFrame({n_: rng.normal(0, 1, n) for n_ in NUMS})
    return df.assign(f1=int(rare), f2=int(rare))


def _hub_case(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """500 + 500 real records; the rare pattern (f1 = f2 = 1, two category mismatches away from
    everyone else) held by 3 records that all happen to be training ones (a 1-in-8 event). The
    synthetic table: 300 fresh draws and 200 rows of the over-produced rare pattern, all nearest
    to those 3 records."""
    rng = np.random.default_rng(seed)
    train = pd.concat([_records(rng, 497), _records(rng, 3, rare=True)], ignore_index=True)
    test = _records(rng, 500)
    synthetic = pd.concat([_records(rng, 300), _records(rng, 200, rare=True)], ignore_index=True)
    return train, test, synthetic


def _metrics(res) -> dict:
    return {"exact_copies": {"synthetic_rate": 0.0, "holdout_rate": 0.0},
            "distance_to_closest": res.to_dict(),
            "membership_inference": {"auroc": 0.5, "n_members": 500, "n_non_members": 500}}


def test_rows_piled_on_a_few_real_records_are_within_chance():
    train, test, synthetic = _hub_case()
    res = distance_to_closest_record(train, test, synthetic, _schema())
    assert res.share_closer_to_train > 0.6  # the headline keeps its meaning: 200 rows do sit nearer training
    assert res.nearest_records < 300  # 3 records take the 200 rare rows
    assert res.effective_queries < 30  # 500² / (3 · 67² + ~300)
    assert res.ci_low < 0.5 < res.ci_high
    verdict = attacks_verdict(_metrics(res))
    assert verdict["level"] == "caution" and "within chance" in verdict["headline"]


def test_a_model_that_replays_a_few_training_records_still_fails():
    """Near-copies of three training records, repeated: few real records again, but the synthetic
    rows sit much nearer the training set than a real unseen record does."""
    train, test, _ = _hub_case(1)
    rng = np.random.default_rng(2)
    replay = train.iloc[rng.integers(0, 3, 500)].reset_index(drop=True)
    replay[list(NUMS)] += rng.normal(0, 1e-3, (500, len(NUMS)))
    res = distance_to_closest_record(train, test, replay, _schema())
    assert res.nearest_records == 3 and res.ci_low < 0.5  # three coin flips ...
    assert res.median_dcr_train < 0.1 * res.median_dcr_holdout_to_train  # ... but on top of training records
    assert attacks_verdict(_metrics(res))["level"] == "fail"


def test_distinct_nearest_records_keep_the_independent_interval():
    train, test, _ = _hub_case(3)
    res = distance_to_closest_record(train, test, train.copy(), _schema())
    assert res.nearest_records == res.n_queries == 500 and res.effective_queries == pytest.approx(500)
    assert res.share_closer_to_train == 1.0 and res.ci_low > 0.99
    assert attacks_verdict(_metrics(res))["level"] == "fail"


def test_an_old_metrics_file_without_the_new_keys_still_fails_as_before():
    old = {"share_closer_to_train": 0.63, "ci_low": 0.57, "ci_high": 0.69, "median_dcr_train": 0.31,
           "median_dcr_holdout_to_train": 0.23}
    metrics = {"exact_copies": {"synthetic_rate": 0.0, "holdout_rate": 0.0}, "distance_to_closest": old,
               "membership_inference": {"auroc": 0.5, "n_members": 130, "n_non_members": 130}}
    assert attacks_verdict(metrics)["level"] == "fail"
