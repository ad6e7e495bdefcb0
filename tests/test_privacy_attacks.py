"""Privacy attacks: a copy of the training data is caught by every attack and a fresh draw by none;
the distance, the blocked nearest-neighbour search and k-anonymity against hand-computed numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import SchemaError
from clinsynth.evaluate.privacy import (RecordSpace, attribute_inference, distance_to_closest_record, exact_copies,
                                        k_anonymity, membership_inference, nearest_distances, nearest_neighbors,
                                        privacy_attacks)
from clinsynth.schema import ColumnSpec, Schema


def _flag(schema: Schema, sensitive: tuple[str, ...] = (), qi: tuple[str, ...] = ()) -> Schema:
    cols = [c.model_copy(update={"sensitive": c.name in sensitive, "quasi_identifier": c.name in qi})
            for c in schema.columns]
    return schema.model_copy(update={"columns": cols})


def _with_secrets(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Two columns unrelated to everything else: only memorisation can predict them."""
    rng = np.random.default_rng(seed)
    return df.assign(secret=pd.array(rng.choice(["a", "b", "c", "d"], len(df)).astype(object), dtype="str"),
                     secret_score=rng.uniform(0, 100, len(df)).round(1))


@pytest.fixture(scope="module")
def trial():
    df = _with_secrets(simulate_trial(n=1500, seed=11), seed=1)
    train, test = df.iloc[:750].reset_index(drop=True), df.iloc[750:].reset_index(drop=True)
    schema = _flag(Schema.infer(train, target="arm"), sensitive=("secret", "secret_score"))
    fresh = _with_secrets(simulate_trial(n=750, seed=12), seed=2)
    return train, test, fresh, schema


@pytest.fixture(scope="module")
def copied(trial):
    train, test, _, schema = trial
    return privacy_attacks(train, test, train.copy(), schema)


@pytest.fixture(scope="module")
def fresh(trial):
    train, test, fresh, schema = trial
    return privacy_attacks(train, test, fresh, schema)


# --- the distance ------------------------------------------------------------------------------
def _small_schema() -> Schema:
    return Schema(columns=[
        ColumnSpec(name="pid", kind="id"),
        ColumnSpec(name="x", kind="continuous", missing="indicator"),
        ColumnSpec(name="c", kind="categorical", categories=["a", "b", "c"], missing="indicator"),
        ColumnSpec(name="flag", kind="binary", categories=[0, 1]),
    ], target="flag")


def _d2(u: np.ndarray, v: np.ndarray) -> float:
    return float(((u.astype(float) - v.astype(float)) ** 2).sum())


def test_each_column_adds_a_known_amount_to_the_squared_distance():
    schema = _small_schema()
    train = pd.DataFrame({"pid": ["p1", "p2", "p3"], "x": [0.0, 4.0, 10.0], "c": ["a", "b", "c"], "flag": [0, 1, 1]})
    space = RecordSpace.fit(train, schema)
    assert space.columns == ["x", "c", "flag"]  # the id is left out, the target kept
    rows = pd.DataFrame({"pid": ["q"] * 8,
                         "x": [5.0, 5.0, 10.0, 20.0, np.nan, 5.0, 5.0, 5.0],
                         "c": ["a", "b", "a", "a", "a", "zzz", None, "a"],
                         "flag": [1, 1, 1, 1, 1, 1, 1, "1"]}).astype({"flag": object})
    X = space.transform(rows)
    assert X.dtype == np.float32 and X.shape == (8, space.dim)
    assert _d2(X[0], X[1]) == pytest.approx(1.0, abs=1e-6)  # one category mismatch: exactly 1
    assert _d2(X[0], X[2]) == pytest.approx(0.25, abs=1e-6)  # 5 of a range of 10: (0.5)²
    assert _d2(X[2], X[3]) == 0.0  # beyond the training range: clipped to its end
    assert _d2(X[0], X[4]) == pytest.approx(1.0 + 0.1**2, abs=1e-6)  # missing: median 4 plus the indicator
    assert _d2(X[0], X[5]) == pytest.approx(1.0, abs=1e-6)  # a value training never showed: a mismatch too
    assert _d2(X[0], X[6]) == pytest.approx(1.0, abs=1e-6)  # missing category: its own level
    assert _d2(X[0], X[7]) == 0.0  # 1 and "1" are the same category
    floats = space.transform(rows.assign(flag=1.0))
    np.testing.assert_array_equal(floats, space.transform(rows.assign(flag=1)))  # and so is 1.0


def test_missing_columns_are_reported():
    schema = _small_schema()
    train = pd.DataFrame({"x": [0.0, 1.0], "c": ["a", "b"], "flag": [0, 1]})
    with pytest.raises(SchemaError, match=r"synthetic lacks column.*c"):
        exact_copies(train, train, train.drop(columns="c"), schema)


# --- nearest neighbours ---------------------------------------------------------------------
@pytest.mark.parametrize(("chunk", "ref_chunk"), [(1, 1), (4, 7), (16, 83), (1000, 1000)])
def test_nearest_distances_match_brute_force(chunk, ref_chunk):
    rng = np.random.default_rng(3)
    ref = (rng.normal(size=(83, 6)) + 1000).astype(np.float32)  # a large offset: cancellation would show
    queries = (rng.normal(size=(57, 6)) + 1000).astype(np.float32)
    queries[3] = ref[10]  # an exact copy …
    ref[20] = ref[10] + np.float32(1e-3)  # … with a near-duplicate next to it
    expected = cdist(queries.astype(float), ref.astype(float)).min(axis=1)
    got = nearest_distances(queries, ref, chunk=chunk, ref_chunk=ref_chunk)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert got[3] == 0.0

    dist, idx = nearest_neighbors(queries, ref, k=3, chunk=chunk, ref_chunk=ref_chunk)
    full = cdist(queries.astype(float), ref.astype(float))
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :3], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(idx[:, 0], full.argmin(axis=1))


def test_an_exact_copy_is_at_zero_even_when_the_gemm_cannot_rank_it_first(monkeypatch):
    import torch

    from clinsynth.evaluate import privacy

    mm, row_hash, looked_up = torch.mm, privacy._row_hash, []

    def coarse_mm(a, b, *, out):  # a GEMM whose rounding hides differences of 1e-3 or so
        mm(a, b, out=out)
        return out.copy_(out.to(torch.bfloat16).float())

    monkeypatch.setattr(torch, "mm", coarse_mm)
    monkeypatch.setattr(privacy, "_row_hash", lambda x: looked_up.append(len(x)) or row_hash(x))
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(40, 4)).astype(np.float32)
    ref[7] = ref[30] + np.float32(1e-4)  # a near-duplicate before the copy: it wins the coarse ranking
    queries = ref[[30, 7, 12]].copy()
    assert (nearest_distances(queries, ref) == 0.0).all()
    assert looked_up, "the exact-copy lookup was not needed, so this test proves nothing"


def test_nearest_neighbours_never_build_a_block_larger_than_asked(monkeypatch):
    import torch

    shapes: list[tuple[int, int]] = []
    mm = torch.mm

    def spy(a, b, *args, **kwargs):
        shapes.append((a.shape[0], b.shape[1]))
        return mm(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "mm", spy)
    rng = np.random.default_rng(4)
    queries, ref = rng.normal(size=(50, 5)), rng.normal(size=(90, 5))
    got = nearest_distances(queries, ref, chunk=8, ref_chunk=16)
    assert len(shapes) == math.ceil(50 / 8) * math.ceil(90 / 16)
    assert max(s[0] for s in shapes) == 8 and max(s[1] for s in shapes) == 16
    np.testing.assert_allclose(got, cdist(queries.astype(np.float32), ref.astype(np.float32)).min(axis=1),
                               rtol=1e-6, atol=1e-6)


# --- a copy against a fresh draw ---------------------------------------------------------------
def test_a_copy_of_the_training_data_is_caught(copied):
    assert copied.exact_copies.synthetic_rate == 1.0
    assert copied.exact_copies.holdout_rate == 0.0
    assert copied.dcr.share_closer_to_train > 0.95 and copied.dcr.ci_low > 0.9
    assert copied.dcr.median_dcr_train == 0.0 < copied.dcr.median_dcr_holdout_to_train
    mia = copied.membership
    assert mia.auroc > 0.95 and mia.recall == 1.0 and mia.precision > 0.85
    assert all(row.recall == 1.0 for row in mia.by_known_fraction)


def test_a_fresh_draw_gives_nothing_away(fresh):
    assert fresh.exact_copies.synthetic_rate < 0.01
    assert 0.4 < fresh.dcr.share_closer_to_train < 0.6
    assert fresh.dcr.ci_low < fresh.dcr.share_closer_to_train < fresh.dcr.ci_high
    mia = fresh.membership
    assert 0.4 < mia.auroc < 0.6
    assert 0.3 < mia.precision < 0.7 and mia.recall < 0.25  # at a 10 % false-positive rate
    assert [r.fraction for r in mia.by_known_fraction] == [0.01, 0.05, 0.1, 0.2, 0.3, 0.5]
    assert [r.n_members for r in mia.by_known_fraction] == [8, 38, 75, 150, 225, 375]


def test_records_in_both_sets_count_as_ties():
    df = simulate_trial(n=300, seed=8)
    schema = Schema.infer(df, target="arm")
    res = distance_to_closest_record(df, df.copy(), df.copy(), schema)  # holdout = training = synthetic
    assert res.share_closer_to_train == 0.5 and res.median_dcr_train == res.median_dcr_holdout == 0.0


def test_the_full_training_set_share_catches_a_copy_when_the_holdout_is_smaller():
    df = simulate_trial(n=900, seed=5)
    train, test = df.iloc[:600].reset_index(drop=True), df.iloc[600:].reset_index(drop=True)
    schema = Schema.infer(train, target="arm")
    copy = distance_to_closest_record(train, test, train.copy(), schema)
    # the equal-size subsample holds half the copied rows: the other half look like chance
    assert copy.n_reference == 300 and 0.65 < copy.share_closer_to_train_subsample < 0.85
    assert copy.share_closer_to_full_train == 1.0 and copy.chance_full_train == pytest.approx(2 / 3)
    assert copy.share_closer_to_train == 1.0 and copy.ci_low > 0.95  # the size-adjusted headline
    other = distance_to_closest_record(train, test, simulate_trial(n=600, seed=6), schema)
    assert abs(other.share_closer_to_full_train - 2 / 3) < 0.07
    assert abs(other.share_closer_to_train - 0.5) < 0.1 and other.ci_low < 0.5 < other.ci_high
    # the map: chance to one half, the raw share's interval carried along
    raw, c = other.share_closer_to_full_train, other.chance_full_train
    assert other.share_closer_to_train == pytest.approx(raw / (raw + (1 - raw) * c / (1 - c)))


def test_attribute_inference_finds_memorised_secrets(copied, fresh):
    scores = {s.column: s for s in copied.attribute.columns}
    assert set(scores) == {"secret", "secret_score"}
    assert "secret" not in copied.attribute.known_columns and "age" in copied.attribute.known_columns
    secret = scores["secret"]
    assert secret.metric == "accuracy" and secret.members > 0.95 and secret.holdout < 0.4
    assert secret.leak > 0.5 and 0.2 < secret.baseline < 0.35
    score = scores["secret_score"]
    assert score.metric == "nmae" and score.members < 0.01 and score.holdout > 0.25 and score.leak > 0.2
    for s in fresh.attribute.columns:  # nothing memorised: members and holdout guessed alike
        assert abs(s.leak) < 0.1, s


def test_attribute_inference_with_more_neighbours(trial):
    train, test, _, schema = trial
    res = attribute_inference(train, test, train.copy(), schema, k=5)
    secret = next(s for s in res.columns if s.column == "secret")
    assert res.k == 5 and secret.members < 0.95  # the copy is outvoted by 4 others now and then
    assert secret.members > secret.holdout + 0.2


def test_without_sensitive_or_quasi_identifier_columns_those_results_are_empty(trial):
    train, test, fresh_df, schema = trial
    plain = _flag(schema)
    res = privacy_attacks(train, test, fresh_df, plain)
    assert res.attribute.columns == [] and res.k_anonymity.quasi_identifiers == []
    assert res.k_anonymity.min_k is None


# --- exact copies and k-anonymity ------------------------------------------------------------------
def test_exact_copies_compare_normalised_values():
    schema = _small_schema()
    train = pd.DataFrame({"pid": ["p1", "p2", "p3"], "x": [70.0, np.nan, 1.5], "c": ["a", None, "c"],
                          "flag": [1, 0, 1]})
    synthetic = pd.DataFrame({"pid": ["s1", "s2", "s3", "s4"],
                              "x": [70.0000000001, np.nan, 70.001, 1.5],  # float noise / missing / a change
                              "c": ["a", np.nan, "a", "b"],
                              "flag": ["1", 0.0, 1, 1]})
    holdout = pd.concat([train.iloc[[0, 1]], synthetic.iloc[[3]]], ignore_index=True)
    res = exact_copies(train, holdout, synthetic, schema)
    assert res.synthetic_rate == 0.5  # rows 1 and 2; row 3 changes x, row 4 changes c
    assert res.holdout_rate == pytest.approx(2 / 3) and res.n_holdout == 3


def test_k_anonymity_counts_training_equivalence_classes():
    schema = Schema(columns=[
        ColumnSpec(name="age", kind="integer", quasi_identifier=True),
        ColumnSpec(name="sex", kind="categorical", categories=["F", "M"], missing="indicator", quasi_identifier=True),
        ColumnSpec(name="lab", kind="continuous"),
    ])
    train = pd.DataFrame({"age": [70, 70, 70, 71, 72, 72, 80], "sex": ["F", "F", "F", "M", "F", "F", None],
                          "lab": np.arange(7.0)})
    # classes: (70, F) × 3, (71, M) × 1, (72, F) × 2, (80, missing) × 1
    synthetic = pd.DataFrame({"age": [70.0, 70, 71, 71, 99, 72, 80, 70.4],
                              "sex": ["F", "F", "M", "M", "F", "F", np.nan, "F"], "lab": np.zeros(8)})
    res = k_anonymity(train, synthetic, schema)
    assert res.quasi_identifiers == ["age", "sex"] and res.n_synthetic == 8
    assert res.matched_share == 6 / 8  # not (99, F) nor (70.4, F)
    assert res.min_k == 1 and res.median_k == 1.5  # k of the matched: 3, 3, 1, 1, 2, 1
    assert res.unique_match_share == 3 / 8
    assert res.real_min_k == 1 and res.real_unique_share == pytest.approx(2 / 7)


# --- results ---------------------------------------------------------------------------------------
def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (str, int, float, bool, type(None))


def test_results_are_json_plain(copied, fresh):
    for res in (copied, fresh):
        d = res.to_dict()
        assert _plain(d) and json.loads(json.dumps(d)).keys() == d.keys()
        assert set(d) == {"exact_copies", "distance_to_closest", "membership_inference", "attribute_inference",
                          "k_anonymity"}
    json.dumps(copied.to_dict(), allow_nan=False)  # nothing undefined here
    # NaN only where undefined: the precision of an attacker who flags none of their records
    for row in fresh.membership.by_known_fraction:
        assert math.isnan(row.precision) == (row.n_flagged == 0)
    assert any(row.n_flagged == 0 for row in fresh.membership.by_known_fraction)  # this run has one
    assert all(math.isfinite(v) for v in fresh.dcr.to_dict().values())


def test_deterministic_and_equal_to_the_single_attacks(trial, fresh):
    train, test, fresh_df, schema = trial
    def same(a, b) -> bool:  # via JSON, where NaN equals NaN
        return json.dumps(a.to_dict()) == json.dumps(b.to_dict())

    assert same(privacy_attacks(train, test, fresh_df, schema), fresh)
    assert same(distance_to_closest_record(train, test, fresh_df, schema), fresh.dcr)
    assert same(membership_inference(train, test, fresh_df, schema), fresh.membership)
    assert same(attribute_inference(train, test, fresh_df, schema), fresh.attribute)
    other = privacy_attacks(train, test, fresh_df, schema, max_queries=400, seed=1)
    assert other.dcr.n_queries == 400 and other.membership.n_members == 200
    assert not same(other, fresh)
