"""The DP vocabulary mechanism: contribution cap, hand-computed threshold, δ of a singleton code."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import norm

from clinsynth.data.ehr import CodeMatrix
from clinsynth.errors import ConfigError, InputError
from clinsynth.privacy.vocabulary import cap_codes_per_patient, release_vocabulary, vocabulary_charge


def _codes(dense: np.ndarray) -> CodeMatrix:
    vocab = tuple(f"C{j}" for j in range(dense.shape[1]))
    return CodeMatrix(sp.csr_array(dense.astype(np.float32)), vocab, np.arange(dense.shape[0]), True)


def test_cap_keeps_a_random_subset_of_at_most_cap_codes_per_patient():
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 40)) < 0.3).astype(np.float32)
    m = sp.csr_array(dense)
    capped = cap_codes_per_patient(m, 5, np.random.default_rng(1))
    per_row = np.diff(capped.indptr)
    assert per_row.max() == 5
    assert np.all(per_row == np.minimum(np.diff(m.indptr), 5))
    assert np.all(capped.toarray() <= dense)  # a subset of each patient's own codes
    # random, not the first five columns: every column survives somewhere
    assert np.all(capped.toarray().sum(0) > 0)


def test_threshold_is_the_hand_computed_gaussian_tail():
    dense = np.zeros((1000, 3))
    dense[:, 0] = 1
    dense[:600, 1] = 1
    release = release_vocabulary(_codes(dense), noise_multiplier=2.0, threshold_delta=1e-6,
                                 max_codes_per_patient=4, rng=np.random.default_rng(0))
    # Gopi et al.'s weighted threshold: the largest of 1/√t + σ Φ⁻¹(1 − δ/t) over t = 1 … 4
    by_hand = max(1 / np.sqrt(t) + 2.0 * norm.isf(1e-6 / t) for t in (1, 2, 3, 4))
    assert release.threshold == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.5 + 2.0 * norm.isf(1e-6 / 4))  # t = 4 is the largest here
    assert release.vocabulary == ("C0", "C1")  # the never-seen C2 is no candidate
    assert release.candidates == 2


def test_each_patient_adds_one_over_root_m_to_each_of_their_codes():
    """A patient's contribution has L2 norm 1 whatever their number of codes (the sensitivity the
    noise is set for), and a patient with few codes weighs more than one with many."""
    from clinsynth.privacy.vocabulary import patient_weights

    dense = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=float)
    weights = patient_weights(_codes(dense).matrix)
    np.testing.assert_allclose(weights, [1 + 1 / 2 + 1 / np.sqrt(2), 1 / 2 + 1 + 1 / np.sqrt(2), 1 / 2, 1 / 2])
    for row in dense:  # one patient's vector of additions
        alone = patient_weights(_codes(row[None, :]).matrix)
        assert np.linalg.norm(alone) == pytest.approx(1.0)
    # the noise is N(0, σ²) on the weights: with σ tiny the released weights are the weights
    release = release_vocabulary(_codes(np.tile(dense, (400, 1))), 1e-9, 1e-6, 4, np.random.default_rng(0))
    np.testing.assert_allclose(release.noisy_counts, 400 * weights, rtol=1e-9)


def test_a_code_one_patient_holds_is_released_at_most_delta_often():
    dense = np.zeros((50, 2))
    dense[:, 0] = 1
    dense[7] = [0, 1]  # only patient 7 has C1, and nothing else (the cap of 1 keeps it)
    codes = _codes(dense)
    delta = 0.2  # large, so the rate is measurable
    kept = sum("C1" in release_vocabulary(codes, 1.0, delta, 1, np.random.default_rng(s)).vocabulary
               for s in range(4000))
    assert kept / 4000 == pytest.approx(delta, abs=0.03)  # the bound is tight for k = 1


def test_codes_one_patient_of_several_codes_alone_holds_stay_within_delta():
    dense = np.zeros((50, 5))
    dense[:, 0] = 1
    dense[7] = [0, 1, 1, 1, 1]  # patient 7 alone holds C1–C4: weight 1/2 each
    codes = _codes(dense)
    delta = 0.2
    leaked = sum(bool({"C1", "C2", "C3", "C4"} & set(release_vocabulary(codes, 1.0, delta, 4,
                                                                        np.random.default_rng(s)).vocabulary))
                 for s in range(4000))
    assert 0.02 < leaked / 4000 <= delta + 0.02  # below δ, and not vacuously so


def test_charge_records_the_threshold_delta():
    charge = vocabulary_charge(3.0, 1e-6, 50)
    assert charge.delta == 1e-6 and charge.noise_multiplier == 3.0 and charge.sample_rate == 1.0


def test_bad_arguments_and_an_empty_release_are_refused():
    codes = _codes(np.eye(10))
    with pytest.raises(ConfigError):
        release_vocabulary(codes, 0.0, 1e-6, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        release_vocabulary(codes, 1.0, 1e-6, 0, np.random.default_rng(0))
    with pytest.raises(InputError, match="public"):
        release_vocabulary(codes, 5.0, 1e-6, 5, np.random.default_rng(0))


def test_charged_vocabulary_charges_and_releases_in_one_call_and_names_the_smallest_epsilon():
    from clinsynth.privacy.ledger import PrivacyLedger
    from clinsynth.privacy.vocabulary import VocabularyRefusal, charged_vocabulary

    dense = np.zeros((2000, 3))
    dense[:1500, 0] = 1
    dense[:3, 1] = 1
    ledger = PrivacyLedger(2.0, 1e-5, accountant="rdp", unit="patient")  # a code vocabulary protects a patient
    release = charged_vocabulary(_codes(dense), ledger, 0.5, 2, np.random.default_rng(0))
    assert release.vocabulary == ("C0",)
    assert [c.purpose.split(":")[0] for c in ledger.charges] == ["vocabulary"] and ledger.charges[0].delta == pytest.approx(1e-6)
    few = np.zeros((40, 2))
    few[:20, 0] = 1
    with pytest.raises(VocabularyRefusal, match=r"ε = 0.5 here; the smallest ε that would work is"):
        charged_vocabulary(_codes(few), PrivacyLedger(0.5, 1e-3, accountant="rdp", unit="patient"), 0.1, 2, np.random.default_rng(0))
