"""A small long-format visit table for the tests of the patients family (not the trial simulator).

Per patient: arm, sex, age and death (the target). Visits: 1–20 per patient (fewer for those who
die), at day 0 then gaps of 20–60 days. Per visit: sbp around a per-patient level (so first and
last visit correlate), egfr falling over visits for those who die, a symptom category, and labs
missing far more often at the last two visits than before.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def simulate_visits(patients: int = 2000, seed: int = 0, max_visits: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    death = (rng.random(patients) < 0.3).astype(int)
    arm = rng.integers(0, 2, patients)
    sex = rng.choice(["F", "M"], patients)
    age = rng.normal(62, 9, patients).round(0)
    count = np.where(death == 1, 1 + rng.binomial(max_visits - 1, 0.3, patients),
                     1 + rng.binomial(max_visits - 1, 0.6, patients))
    owner = np.repeat(np.arange(patients), count)
    offset = np.r_[0, np.cumsum(count)[:-1]]
    position = np.arange(len(owner)) - offset[owner]
    remaining = count[owner] - 1 - position
    gap = np.where(position == 0, 0, rng.integers(20, 61, len(owner)))
    day = np.cumsum(gap) - np.cumsum(gap)[offset][owner]
    level = rng.normal(135, 12, patients)
    sbp = (level[owner] + rng.normal(0, 6, len(owner))).round(0)
    egfr = (70 - 2.5 * position * death[owner] + rng.normal(0, 8, len(owner))).round(1)
    near_end = remaining < 2
    sbp[rng.random(len(owner)) < np.where(near_end & (death[owner] == 1), 0.5, 0.05)] = np.nan
    egfr[rng.random(len(owner)) < np.where(near_end, 0.4, 0.05)] = np.nan
    symptom = np.where(rng.random(len(owner)) < 0.15 + 0.25 * death[owner], "severe",
                       rng.choice(["none", "mild"], len(owner)))
    return pd.DataFrame({
        "pid": 1000 + owner, "day": day, "arm": arm[owner], "sex": sex[owner], "age": age[owner],
        "death": death[owner], "sbp": sbp, "egfr": egfr, "symptom": symptom,
    })
