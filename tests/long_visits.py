"""A small long-format trial for the patients-family tests: one row per visit.

Per patient: arm, sex, baseline age, death (the target); 1..``max_visits`` visits at irregular
gaps (more visits for survivors: those who die leave early), eGFR per visit (a patient's own level,
a decline over time, faster without treatment, missing more often near the end for those who die),
and SBP per visit (10 % missing). Times are whole days since baseline (the first visit is day 0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


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
