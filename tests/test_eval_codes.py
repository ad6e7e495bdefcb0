"""Evaluation of synthetic EHR code matrices: each metric can fail.

A fresh draw of the simulator scores well everywhere; a copy of the training patients is caught
by the attacks; shuffling each code's column keeps every prevalence but breaks co-occurrence
and dimension-wise prediction; coin flips fail the prevalences. The Hamming nearest-neighbour
search is checked against brute force (ties included) and the page renders from metrics alone.

The simulator's world (vocabulary, clusters, prevalences) depends on its seed, so a "fresh draw"
is more patients from the same call, split into training, holdout and synthetic parts.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import clinsynth as cs
from clinsynth.data.ehr import CodeMatrix
from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.errors import InputError
from clinsynth.evaluate import codes as C

N = 3000


def _split(m: CodeMatrix, *sizes: int) -> list[CodeMatrix]:
    ends = np.cumsum(sizes)
    return [m.subset(slice(int(e - s), int(e))) for s, e in zip(sizes, ends)]


def _shuffled(m: CodeMatrix, seed: int = 0) -> CodeMatrix:
    """Each code's patients redrawn at random: every prevalence kept, every association gone."""
    rng = np.random.default_rng(seed)
    x = m.matrix.tocsc()
    rows = [np.sort(rng.choice(m.n_patients, x.indptr[j + 1] - x.indptr[j], replace=False)) for j in range(m.n_codes)]
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
    matrix = sp.csc_array((np.ones(indptr[-1], np.float32), np.concatenate(rows), indptr), shape=x.shape)
    return CodeMatrix(matrix.tocsr(), m.vocabulary, np.arange(m.n_patients), True)


@pytest.fixture(scope="module")
def world():
    m, _ = simulate_ehr(3 * N, 300, seed=0)
    return _split(m, N, N, N)  # training, holdout, a fresh draw


@pytest.fixture(scope="module")
def fresh(world):
    train, test, other = world
    return C.evaluate_codes(train, test, other)


@pytest.fixture(scope="module")
def copied(world):
    train, test, _ = world
    return C.evaluate_codes(train, test, train)


@pytest.fixture(scope="module")
def shuffled(world):
    train, test, _ = world
    return C.evaluate_codes(train, test, _shuffled(train))


def _level(section: dict, name: str) -> str:
    return next(v["level"] for v in section["verdicts"] if v["section"] == name)


# --- the four synthetic sets ------------------------------------------------------------------------
def test_a_fresh_draw_scores_well(fresh):
    assert fresh["dimension_wise_probability"]["correlation"] > 0.95
    pred = fresh["dimension_wise_prediction"]
    assert pred["n_scored"] == 50 and pred["f1_ratio"] > 0.9 and pred["correlation"] > 0.9
    co = fresh["co_occurrence"]
    assert co["correlation"] > 0.9 and co["excess_relative_rms"] < 0.3
    attacks = fresh["privacy_attacks"]
    copies = attacks["exact_copies"]
    assert copies["holdout_rate"] > 0.1  # patients without codes, or with one common code, are twins
    assert abs(copies["synthetic_rate"] - copies["holdout_rate"]) < 0.05
    assert abs(attacks["membership_inference"]["auroc"] - 0.5) < 0.05
    assert 0.4 < attacks["distance_to_closest"]["share_closer_to_train"] < 0.6
    assert fresh["codes_per_patient"]["ks"] < 0.05
    assert all(v["level"] == "pass" for v in fresh["verdicts"]), fresh["verdicts"]


def test_a_copy_of_the_training_patients_is_caught(copied):
    attacks = copied["privacy_attacks"]
    assert attacks["exact_copies"]["synthetic_rate"] == 1.0
    mia = attacks["membership_inference"]
    # members sit at distance 0; a non-member is told apart unless a training patient has exactly
    # its codes, and those ties count half
    at_zero = attacks["ties"]["share_of_non_members_at_distance_0"]
    assert attacks["ties"]["share_of_members_at_distance_0"] == 1.0 and 0.1 < at_zero < 0.5
    assert mia["auroc"] == pytest.approx(1 - at_zero / 2) and mia["auroc"] > 0.8
    # the threshold falls inside the tie at 0: tied records are flagged at random to hit 10 % false positives
    assert mia["threshold"] == 0.0 and abs(mia["fpr"] - 0.1) < 0.03 and mia["precision"] > 0.7
    assert attacks["distance_to_closest"]["share_closer_to_train"] > 0.8
    assert attacks["distance_to_closest"]["median_dcr_train"] == 0.0
    assert _level(copied, "privacy attacks") == "fail"
    assert copied["dimension_wise_probability"]["correlation"] == pytest.approx(1.0)
    assert copied["co_occurrence"]["mean_abs_difference"] == 0.0


def test_independent_columns_keep_prevalences_but_lose_co_occurrence(fresh, shuffled):
    assert shuffled["dimension_wise_probability"]["correlation"] == pytest.approx(1.0)
    assert shuffled["dimension_wise_probability"]["max_abs_difference"] == 0.0
    co, base = shuffled["co_occurrence"], fresh["co_occurrence"]
    assert co["relative_mean_abs_difference"] > base["relative_mean_abs_difference"] + 0.1
    assert co["excess_relative_rms"] > 1.0 > 0.3 > base["excess_relative_rms"]
    assert co["correlation"] < base["correlation"] - 0.1
    top = co["pairs"][0]  # the commonest real pair is a comorbidity: lift well above 1, gone when shuffled
    assert top["lift_real"] > 2 and abs(top["lift_synthetic"] - 1) < 0.3
    pred = shuffled["dimension_wise_prediction"]
    assert pred["mean_f1_synthetic"] < 0.3 * pred["mean_f1_real"]
    assert _level(shuffled, "co-occurrence") == "fail" and _level(shuffled, "dimension-wise prediction") == "fail"
    assert _level(shuffled, "dimension-wise probability") == "pass"
    assert shuffled["codes_per_patient"]["ks"] > 0.1  # independent codes: fewer patients with none or many


def test_coin_flips_fail_the_prevalences(world):
    train, test, _ = world
    rng = np.random.default_rng(1)
    noise = CodeMatrix(sp.csr_array((rng.random((N, train.n_codes)) < 0.5).astype(np.float32)), train.vocabulary,
                       np.arange(N), True)
    dwp = C.dimension_wise_probability(train, noise)
    assert abs(dwp["correlation"]) < 0.3 and dwp["max_abs_difference"] > 0.4
    assert C.code_privacy_attacks(train, test, noise)["exact_copies"]["synthetic_rate"] == 0.0


def test_the_dcr_share_stays_at_one_half_for_a_smaller_holdout(world):
    """Integer distances tie often; counting a tie half would pull a fresh draw far below 0.5 when
    the training set is larger than the holdout. Ties counted by the tied patients on each side do not."""
    train, test, other = world
    res = C.code_privacy_attacks(train, test.subset(slice(0, 750)), other)["distance_to_closest"]
    assert res["chance_full_train"] == pytest.approx(0.8)
    assert 0.4 < res["share_closer_to_train"] < 0.6 and res["ci_low"] < 0.5 < res["ci_high"]


# --- the pieces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("max_bytes", [64, 200, C.BLOCK_BYTES])
def test_nearest_hamming_matches_brute_force_with_ties(max_bytes):
    rng = np.random.default_rng(3)
    for _ in range(15):
        a = rng.integers(0, 3, (int(rng.integers(1, 30)), 6)) * (rng.random((1, 6)) < 0.7)  # counts, some all-zero rows
        b = rng.integers(0, 3, (int(rng.integers(1, 30)), 6)) * (rng.random((1, 6)) < 0.7)
        d = ((a[:, None, :] > 0) != (b[None, :, :] > 0)).sum(axis=2)  # Hamming on presence
        res = C.nearest_hamming(sp.csr_array(a.astype(np.float32)), sp.csr_array(b.astype(np.float32)), max_bytes=max_bytes)
        np.testing.assert_array_equal(res.distance, d.min(axis=1))
        np.testing.assert_array_equal(res.index, d.argmin(axis=1))  # ties: the lowest reference row
        np.testing.assert_array_equal(res.count, (d == d.min(axis=1, keepdims=True)).sum(axis=1))


def test_dense_blocks_stay_within_the_bound(monkeypatch, world):
    for width in (1, 301, 5_001, 100_001, 10**7):
        for bound in (4096, C.BLOCK_BYTES):
            rows = C.block_rows(width, bound)
            assert rows >= 1 and (rows == 1 or rows * width * 4 <= bound)
    seen = []
    original = C._dense_columns

    def spy(x, last):
        block = original(x, last)
        seen.append(block.nbytes)
        return block

    monkeypatch.setattr(C, "_dense_columns", spy)
    train, _, other = world
    bound = 256 * 1024
    res = C.nearest_hamming(other.subset(slice(0, 500)), train, max_bytes=bound)
    assert seen and max(seen) <= bound and len(seen) > 1  # several blocks, none above the bound
    np.testing.assert_array_equal(res.distance, C.nearest_hamming(other.subset(slice(0, 500)), train).distance)


def test_prediction_skips_codes_with_one_class(world):
    train, test, other = world
    top = int(np.argmax(train.prevalence()))
    x = other.matrix.tolil()
    x[:, top] = 0
    without = CodeMatrix(sp.csr_array(x.tocsr()), other.vocabulary, other.patient_ids, True)
    pred = C.dimension_wise_prediction(train, test, without, top_k=3)
    assert pred["skipped"] == [{"code": train.vocabulary[top], "reason": "one class only in the synthetic training set"}]
    assert pred["n_scored"] == 2 and [c["code"] for c in pred["codes"]] == [train.vocabulary[j] for j in
                                                                          np.argsort(-train.prevalence(), kind="stable")[1:3]]


def test_count_matrices_are_compared_as_presence_plus_mean_counts():
    m, _ = simulate_ehr(1200, 60, seed=4, binary=False)
    train, test, other = _split(m, 500, 200, 500)
    res = C.evaluate_codes(train, test, other, top_k=5, top_codes=30)
    presence = C.dimension_wise_probability(*(CodeMatrix(sp.csr_array(x.matrix > 0, dtype=np.float32), x.vocabulary,
                                                         x.patient_ids, True) for x in (train, other)))
    assert res["binarised"] and res["dimension_wise_probability"]["correlation"] == pytest.approx(presence["correlation"])
    counts = res["dimension_wise_probability"]["count_means"]
    assert counts["correlation"] > 0.9 and counts["mean_count_per_patient_real"] > res["codes_per_patient"]["real"]["mean"]


def test_the_scatter_keeps_every_prevalence_range_and_the_outliers():
    p = np.linspace(0, 1, 101)[::-1]
    picked = C._scatter_codes(p, largest=np.array([50]), limit=11)
    assert 0 in picked and 100 in picked and 50 in picked and len(picked) == 11  # 50 is also an even step
    picked = C._scatter_codes(p, largest=np.array([51]), limit=11)
    assert 51 in picked and len(picked) == 12
    assert list(C._scatter_codes(p[:5], largest=np.array([0]), limit=11)) == [0, 1, 2, 3, 4]


# --- the suite and the page -----------------------------------------------------------------------
def test_evaluate_with_code_matrices_renders_the_code_report(world, tmp_path):
    train, test, other = world
    result = cs.evaluate(real_train=train, real_test=test, synthetic=other, model={"name": "medgan"})
    metrics = result.to_dict()
    assert {"codes", "guarantee", "verdicts", "dataset"} <= set(metrics) and "fidelity" not in metrics
    assert [v["section"] for v in metrics["verdicts"]] == ["privacy guarantee", "dimension-wise probability",
                                                           "dimension-wise prediction", "co-occurrence", "privacy attacks"]
    assert metrics["dataset"]["n_codes"] == 300 and metrics["seconds"]
    html = result.to_html(tmp_path / "report.html").read_text()
    for section in ("summary", "guarantee", "code-probability", "code-prediction", "code-co-occurrence",
                    "codes-per-patient", "attacks", "about"):
        assert f'<section id="{section}">' in html
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', html)) == 2
    assert "no formal privacy guarantee" in html and "Hamming" in html and 'class="tag real"' in html
    assert "http://" not in html and "https://" not in html
    from clinsynth.report.html import render

    assert render(json.loads(json.dumps(metrics))) == html  # the page from metrics.json alone


def test_inputs_that_cannot_be_compared_are_refused(world):
    train, test, other = world
    renamed = CodeMatrix(other.matrix, tuple(f"X{c}" for c in other.vocabulary), other.patient_ids, True)
    with pytest.raises(InputError, match="different vocabularies"):
        cs.evaluate(real_train=train, real_test=test, synthetic=renamed)
    reordered = CodeMatrix(other.matrix, other.vocabulary[::-1], other.patient_ids, True)
    with pytest.raises(InputError, match="another column order"):
        C.dimension_wise_probability(train, reordered)
    counts = CodeMatrix(other.matrix, other.vocabulary, other.patient_ids, False)
    with pytest.raises(InputError, match="counts"):
        C.evaluate_codes(train, test, counts)
    with pytest.raises(InputError, match="must all be CodeMatrix"):
        cs.evaluate(real_train=train, real_test=test, synthetic=pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(InputError, match="needs their schema"):
        cs.evaluate(real_train=pd.DataFrame({"a": [1, 2]}), real_test=pd.DataFrame({"a": [1, 2]}),
                    synthetic=pd.DataFrame({"a": [1, 2]}))


def test_a_dp_vocabulary_is_scored_over_the_real_one(world):
    # `run --codes --epsilon 2` on 1,500 patients kept one code by its DP vocabulary and failed after
    # the fit: "synthetic and real_train have different vocabularies (1 codes vs 198 …)"
    from clinsynth.evaluate.suite import evaluate

    train, test, other = world
    keep = list(train.vocabulary[:40])
    narrow = CodeMatrix(other.matrix[:, np.arange(40)], keep, other.patient_ids, True)
    wide = narrow.widened_to(train.vocabulary)
    assert wide.vocabulary == train.vocabulary and wide.nnz == narrow.nnz
    assert np.array_equal(wide.prevalence()[:40], narrow.prevalence()) and not wide.prevalence()[40:].any()
    with pytest.raises(InputError, match="not in the vocabulary"):
        train.widened_to(keep)
    metrics = evaluate(train, test, narrow, level="fast").to_dict()
    codes = json.dumps(metrics)
    assert '"synthetic_vocabulary": {"kept": 40, "of": 300}' in codes
