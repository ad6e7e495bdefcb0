"""The privacy-attack verdict fails on evidence of copying, not on a small table's chance or on
synthetic rows that sit far from every real record (sklearn's wine table at ε = 2 read 'fail')."""
import math

import pytest

from clinsynth.evaluate.verdicts import _auroc_low, attacks_verdict


def _attacks(dcr=0.87, median_syn=1.75, median_unseen=0.46, mia=0.59, n=36, copies=0.0):
    return {"exact_copies": {"synthetic_rate": copies, "holdout_rate": 0.0},
            "distance_to_closest": {"share_closer_to_train": dcr, "median_dcr_train": median_syn,
                                    "median_dcr_holdout_to_train": median_unseen},
            "membership_inference": {"auroc": mia, "n_members": n, "n_non_members": n}}


def test_hanley_mcneil_interval_matches_the_hand_computed_case():
    # A = 0.5, 36 + 36: Q1 = Q2 = 1/3, var = (0.25 + 70 (1/3 − 1/4)) / 1296
    se = math.sqrt((0.25 + 70 * (1 / 3 - 0.25)) / 1296)
    assert _auroc_low(0.5, 36, 36) == pytest.approx(0.5 - 1.96 * se, abs=1e-12)
    assert _auroc_low(0.59, 36, 36) < 0.5 < _auroc_low(0.59, 2000, 2000)
    assert _auroc_low(0.7, 0, 0) == 0.7  # counts unknown: nothing is excused


def test_wine_at_epsilon_2_is_caution_with_the_reasons():
    verdict = attacks_verdict(_attacks())
    assert verdict["level"] == "caution"
    assert "far from every real record" in verdict["headline"] and "1.75" in verdict["headline"]
    assert "within chance on 36 + 36 records" in verdict["headline"]


def test_synthetic_rows_near_the_training_rows_still_fail():
    assert attacks_verdict(_attacks(median_syn=0.30, mia=0.5))["level"] == "fail"


def test_a_large_table_with_a_clear_membership_signal_still_fails():
    assert attacks_verdict(_attacks(dcr=0.5, mia=0.62, n=2000))["level"] == "fail"


def test_copies_fail_whatever_the_distances():
    assert attacks_verdict(_attacks(dcr=0.5, mia=0.5, copies=0.2))["level"] == "fail"


def test_nothing_suspicious_passes():
    assert attacks_verdict(_attacks(dcr=0.51, mia=0.52))["level"] == "pass"
