"""How many codes the DP vocabulary keeps: Gaussian-weighted set union against plain counts.

The vocabulary mechanism (``privacy/vocabulary.py``) gives each patient of m (capped) codes a
weight 1/√m per code; the baseline, the mechanism before it, adds 1 per patient to each code, with
sensitivity √k (k = 50 codes per patient) — run here beside it, same data, share of the budget
(0.1 of μ²), δ and noise seeds. On ``simulate_ehr(n, codes, seed=0)``: n = 1,920 × 300 codes
(an ordinary long-format table), 5,000 × 1,000 (``compare.py``'s EHR) and 20,000 × 1,000, at ε = 1 and 4.

    python bench/bench_dp_vocabulary.py [--json bench/results/dp_vocabulary.json]
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.privacy.facts_budget import category_threshold
from clinsynth.privacy.ledger import PrivacyLedger, share_noise_multiplier
from clinsynth.privacy.vocabulary import VocabularyRefusal, cap_codes_per_patient, charged_vocabulary

SHARE, CAP, DELTA = 0.1, 50, 1e-5


def plain_counts_kept(codes, epsilon: float, rng: np.random.Generator) -> int:
    """The baseline: patient counts plus N(0, (σ √k)²), kept above 1 + σ √k Φ⁻¹(1 − δ_v / k)."""
    sigma = share_noise_multiplier(SHARE, epsilon, DELTA)
    capped = cap_codes_per_patient(codes.matrix, CAP, rng)
    counts = np.bincount(capped.indices, minlength=codes.n_codes).astype(float)
    present = counts[counts > 0]
    std = sigma * np.sqrt(CAP)
    tau = category_threshold(std, DELTA / 10, CAP)
    return int((present + rng.normal(0.0, std, present.size) >= tau).sum())


def weighted_kept(codes, epsilon: float, rng: np.random.Generator) -> int:
    try:
        return len(charged_vocabulary(codes, PrivacyLedger(epsilon, DELTA, unit="patient"), SHARE, CAP, rng).vocabulary)
    except VocabularyRefusal:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for n, v in ((1920, 300), (5000, 1000), (20000, 1000)):
        codes, _ = simulate_ehr(n, v, seed=0)
        for eps in (1.0, 4.0):
            row = {"patients": n, "codes": v, "epsilon": eps, "codes_occurring": int((codes.prevalence() > 0).sum()),
                   "plain_counts": [plain_counts_kept(codes, eps, np.random.default_rng(s)) for s in range(args.seeds)],
                   "weighted": [weighted_kept(codes, eps, np.random.default_rng(s)) for s in range(args.seeds)]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": {"platform": platform.platform()}, "share": SHARE,
                                         "max_codes_per_patient": CAP, "delta": DELTA, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
