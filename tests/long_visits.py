"""Small long-format visit tables for the tests of the patients family (not the trial simulator).

``simulate_visits`` (the visit chain's tests): per patient arm, sex, age and death (the target);
1–20 visits (fewer for those who die) at day 0 then gaps of 20–60 days; per visit sbp around a
per-patient level (so first and last visit correlate), egfr falling over visits for those who die,
a symptom category, and labs missing far more often at the last two visits than before.

``long_trial`` (the GRU's tests): per patient arm, sex, baseline age, death; 1..``max_visits`` visits
at irregular gaps (survivors stay longer); eGFR per visit (own level, decline faster without
treatment, missing more often near the end for those who die) and SBP per visit (10 % missing).
Times are whole days since baseline (the first visit is day 0).
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


def long_trial(patients: int = 300, max_visits: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, patients)
    sex = rng.choice(["F", "M"], patients)
    age = rng.normal(62, 9, patients).round(0)
    risk = -1.2 + 0.04 * (age - 62) - 0.6 * arm + rng.normal(0, 0.5, patients)
    death = (rng.random(patients) < 1 / (1 + np.exp(-risk))).astype(int)
    mean_visits = np.where(death == 1, 0.35, 0.7) * max_visits
    counts = np.clip(rng.poisson(mean_visits), 1, max_visits)
    pid = np.repeat(np.arange(1000, 1000 + patients), counts)
    step = np.concatenate([np.arange(c) for c in counts])
    gaps = np.where(step == 0, 0, np.round(rng.gamma(4.0, 15.0, len(step)))).clip(0, None)
    gaps[step > 0] = np.maximum(gaps[step > 0], 1)
    day = pd.Series(gaps).groupby(pid).cumsum().to_numpy().astype(int)
    level = np.repeat(rng.normal(70, 14, patients), counts)
    slope = np.repeat(np.where(arm == 1, -0.01, -0.03), counts)
    egfr = (level + slope * day + rng.normal(0, 4, len(day))).round(1)
    last = np.repeat(counts, counts) - 1 - step  # visits before the last
    p_missing = np.where(np.repeat(death, counts) == 1, np.where(last <= 1, 0.5, 0.1), 0.08)
    egfr[rng.random(len(day)) < p_missing] = np.nan
    sbp = rng.normal(135, 15, len(day)).round(0)
    sbp[rng.random(len(day)) < 0.1] = np.nan
    per = {"arm": arm, "sex": sex, "age": age, "death": death}
    return pd.DataFrame({"pid": pid, "day": day, **{k: np.repeat(v, counts) for k, v in per.items()},
                         "egfr": egfr, "sbp": sbp})
