"""A simulated cardio-renal trial in long format: one row per visit (SIMULATED data).

``simulate_long_trial`` returns **SIMULATED** data drawn from the small generative model below.
It is not derived from any patient data. It gives clinsynth's patients family (issue 21) a table
with the awkward parts of a real trial's visit file -- a variable number of visits at irregular
times, dropout that depends on the patient, per-patient columns repeated on every row, labs
correlated within a patient, skewed labs, rare categories, and labs missing more often just
before an event -- at any size, with no restricted data.

Layout (long format, see the data contract of issue 21): one row per visit, rows of a patient
together and ordered by ``day``; columns

* ``patient_id`` (text, ``S000001``…), ``day`` (int64, days since the patient's first visit:
  0 at the first row, strictly increasing within a patient);
* per-patient columns, constant within every patient: ``arm`` (int64, 1 = active treatment,
  0 = placebo), ``sex`` (``"F"``/``"M"``), ``age`` (int64, whole years at baseline), ``race``
  (text, seven categories, three of them rare), ``diabetes`` (int64, at baseline) and ``event``
  (int64, 1 = death or a cardiovascular event seen during follow-up: the natural target);
* visit-level labs (float64 holding whole numbers, ``egfr`` one decimal; NaN when missing):
  ``sbp``, ``dbp`` (mmHg), ``egfr`` (mL/min/1.73 m², right-skewed), ``glucose`` (mg/dL,
  right-skewed) and ``meds`` (number of antihypertensive classes, a count, 0–6).

Assumptions of the simulation (numbers are design targets, not fitted to any data):

* Randomisation is an exact 1:1 balanced shuffle, as in :func:`~clinsynth.data.datasets.simulate_trial`.
  Age ~ Normal(66, 8) truncated to 45–90; 40 % female; 30 % diabetes (rising 1 % per year
  of age). Race: White 60 %, Black 17 %, Asian 10 %, Hispanic 11 %, and three rare categories
  (Native American 1 %, Pacific Islander 0.5 %, Other 0.5 %).
* Visit schedule: a visit on day 0, then scheduled visits every 90 days, each with a jitter
  ~ Normal(0, 7) days clipped to ±21; each scheduled visit after day 0 is missed with
  probability 5 % (no row); each 90-day gap holds an extra, unscheduled visit with probability
  6 %, at a uniform point 20–80 % of the way through the gap. A patient has at most 20 visits:
  the study closes for a patient one day after the 20th visit.
* Follow-up ends at the first of: the administrative end (staggered enrolment: uniform 540–1800
  days after the first visit), the 20-visit cap, dropout, or the event. There are no rows after
  it. Dropout is an exponential time with a yearly hazard of 4 % × exp(0.03 × (age − 66) +
  0.5 × (the patient's baseline event risk score − its mean)): older and sicker patients leave
  sooner. The event ends follow-up: an event patient's last row is the last visit before it.
  An event after dropout or the administrative end is not seen (``event`` = 0).
* Labs: each lab is the sum of a population mean (depending on age, sex, diabetes), a
  random intercept per patient, a random slope per patient, a treatment effect phased in over
  time, a continuous-time AR(1) deviation (Ornstein-Uhlenbeck: correlation exp(−gap / 180 days)
  between consecutive visits) and measurement noise. SBP: mean ~136 + 0.3/year of age,
  intercept SD 12, slope Normal(0.5, 1.5) mmHg/year, AR SD 7, noise SD 4; the active arm lowers
  it by 6 mmHg, phased in as 1 − exp(−day/45). DBP: ~80 − 0.4/year of age + 0.35 × the SBP
  intercept, AR innovations correlated 0.5 with SBP's, the active arm −3 mmHg. eGFR is
  log-normal: log-mean log(75) − 0.012/year of age − 0.1 diabetes, intercept SD 0.25, slope
  Normal(−0.03, 0.03) per year, the slope steeper with higher SBP intercept; the active arm
  gives an early 3 % dip (over ~30 days) and slows the decline by 40 %. Glucose is
  70 + a log-normal excess (median 25 mg/dL, ×e with diabetes, intercept SD 0.3, AR SD 0.2;
  the active arm lowers the excess 15 % in diabetics). Meds: a baseline Poisson count rising
  with diabetes and SBP, then one more class at a visit with probability 1 − exp(−r × gap in
  years), r = 0.25 × exp(0.05 × (underlying SBP − 140)), capped at 6 (never falls).
  Medication does not feed back into SBP (a simplification).
* Event (death or CV event): a hazard per year of 3.5 % × exp(0.06 × (age − 66) + 0.3 male
  + 0.45 diabetes + 0.02 × (underlying SBP − 136) + 0.9 × log(75 / underlying eGFR)
  − 0.15 arm), piecewise constant over 90-day intervals and evaluated at each interval's middle
  from the patient's underlying trajectory (mean + intercept + slope + treatment, no AR noise).
  So the event depends on arm (directly and through SBP and eGFR), age and the lab trajectory.
* Missing labs: outside the last 120 days before an event, each lab is missing completely at
  random (SBP and DBP together 2 %, eGFR 6 %, glucose 8 %, meds 3 %); within the 120 days
  before an event each lab is in addition missing with probability 0.35 (SBP/DBP together).

Measured on ``simulate_long_trial(5000, seed=0)`` (this machine, 2 shared cores):
57,546 visits. Visits per patient: mean 11.5, median 11, 10/25/75/90 % quantiles 4/8/16/19;
2.7 % of patients have 1 visit, 6.2 % have 20, every count from 1 to 20 occurs. Gaps between
visits: median 89 days, 5-95 % range 41-113. Event rate 15.8 % (placebo 17.8 %, active 13.8 %);
event patients have 6.8 visits on average, the others 12.4. Of patients without an event,
6.4 % leave before day 400 (dropout; the administrative end is >= 540 days). Missing rates:
sbp/dbp 2.5 %, egfr 6.7 %, glucose 8.4 %, meds 3.6 %; at an event patient's last visit
32-38 % per lab against 2-8 % elsewhere (5-15×). Correlation between a patient's first and
last observed value (patients with >= 5 visits): sbp 0.66, egfr 0.89. Skewness: egfr 0.79,
glucose 1.95. Generation: 0.25 s (``simulate_trial(5000)``: 0.07 s in the same run);
50,000 patients (574,696 visits): 2.6-6 s, and :func:`~clinsynth.data.long_wide.to_wide` of
them on a 90-day grid 2.7 s (machine load 8-14 on 2 cores, so these are upper figures).

Only numpy and pandas are used; everything is vectorised over patients (loops only over the
≤ 20 visit slots); same ``seed``, same frame.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from clinsynth.data.datasets import _participant_ids, _truncnorm

__all__ = ["simulate_long_trial", "MAX_VISITS", "SCHEDULE_DAYS"]

# --- constants (see the module docstring for their meaning) -----------------------------------
MAX_VISITS = 20
SCHEDULE_DAYS = 90
JITTER_SD, JITTER_MAX = 7.0, 21.0
P_MISSED_VISIT = 0.05
P_EXTRA_VISIT = 0.06
ADMIN_END_DAYS = (540.0, 1800.0)
YEAR = 365.25

AGE_MEAN, AGE_SD, AGE_RANGE = 66.0, 8.0, (45.0, 90.99)
P_FEMALE = 0.40
_RACES = np.array(["White", "Black", "Asian", "Hispanic", "Native American", "Pacific Islander", "Other"],
                  dtype=object)
_RACE_P = (0.60, 0.17, 0.10, 0.11, 0.01, 0.005, 0.005)

EVENT_BASE_HAZARD = 0.035  # per year at the reference patient
DROPOUT_BASE_HAZARD = 0.04  # per year
NEAR_EVENT_DAYS = 120.0
P_MISSING = {"bp": 0.02, "egfr": 0.06, "glucose": 0.08, "meds": 0.03}
P_MISSING_NEAR_EVENT = 0.35
AR_DAYS = 180.0  # OU time constant: correlation exp(-gap / AR_DAYS)


def _visit_days(rng: np.random.Generator, n: int) -> np.ndarray:
    """Candidate visit days (n × MAX_VISITS, float, NaN-padded, sorted): schedule, misses, extras."""
    n_sched = MAX_VISITS + 1  # day 0 and 20 more: enough to fill 20 rows after misses
    planned = SCHEDULE_DAYS * np.arange(n_sched, dtype=float)
    jitter = np.clip(rng.normal(0.0, JITTER_SD, (n, n_sched)), -JITTER_MAX, JITTER_MAX)
    jitter[:, 0] = 0.0
    sched = planned[None, :] + jitter
    missed = rng.random((n, n_sched)) < P_MISSED_VISIT
    missed[:, 0] = False
    extra = sched[:, :-1] + rng.uniform(0.2, 0.8, (n, n_sched - 1)) * np.diff(sched, axis=1)
    has_extra = rng.random((n, n_sched - 1)) < P_EXTRA_VISIT
    days = np.concatenate([np.where(missed, np.nan, np.rint(sched)),
                           np.where(has_extra, np.rint(extra), np.nan)], axis=1)
    days.sort(axis=1)  # NaN last
    return days[:, :MAX_VISITS]


def _ou(rng: np.random.Generator, gaps: np.ndarray, sd: float, innovations: np.ndarray | None = None) -> np.ndarray:
    """Continuous-time AR(1) (Ornstein-Uhlenbeck) deviation at each visit, stationary SD ``sd``.

    ``gaps`` (n × k) are the days since the previous visit; the recursion runs over the k visit
    slots on visit-major (k × n) copies so each step reads contiguous memory."""
    n, k = gaps.shape
    eps = (rng.standard_normal((n, k)) if innovations is None else innovations).T.copy()
    rho = np.exp(-gaps.T / AR_DAYS)
    scale = sd * np.sqrt(1.0 - rho**2)
    out = np.empty((k, n))
    out[0] = sd * eps[0]
    for j in range(1, k):
        out[j] = rho[j] * out[j - 1] + scale[j] * eps[j]
    return out.T


def simulate_long_trial(n_patients: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Simulate a two-arm cardio-renal trial's visit file, one row per visit (SIMULATED data).

    Gives the patients family a long-format table with irregular visit times, 1–20 visits per
    patient, dropout, within-patient correlation and labs missing more often before an event,
    so CI, benchmarks and the demo have one. Columns, dtypes and every modelling assumption are
    in the module docstring. Vectorised over patients; deterministic for a given ``seed``.

    Args:
        n_patients: Number of patients (>= 1). 5,000 (about 57,500 visits) takes a quarter
            of a second, 50,000 (about 575,000 visits) a few seconds.
        seed: Seed for ``numpy.random.default_rng``; same seed, same frame.

    Returns:
        DataFrame, one row per visit, ordered by patient then ``day``.

    Example:
        >>> df = simulate_long_trial(100, seed=1)
        >>> int(df.groupby("patient_id")["day"].min().max())
        0
    """
    n = int(n_patients)
    if n < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    rng = np.random.default_rng(seed)

    # --- per-patient columns ----------------------------------------------------------------
    arm = rng.permutation(np.arange(n, dtype=np.int64) % 2)
    age_cont = _truncnorm(rng, AGE_MEAN, AGE_SD, *AGE_RANGE, n)
    age = np.floor(age_cont).astype(np.int64)
    a = age_cont - AGE_MEAN
    male = (rng.random(n) >= P_FEMALE).astype(np.int64)
    race = _RACES[rng.choice(len(_RACES), size=n, p=_RACE_P)]
    diabetes = (rng.random(n) < np.clip(0.30 + 0.01 * a, 0.05, 0.8)).astype(np.int64)
    active = arm.astype(float)

    # --- random effects ---------------------------------------------------------------------
    b_sbp = 12.0 * rng.standard_normal(n)
    s_sbp = rng.normal(0.5, 1.5, n)                      # mmHg per year
    b_dbp = 6.0 * rng.standard_normal(n)
    b_egfr = 0.25 * rng.standard_normal(n)               # log scale
    s_egfr = rng.normal(-0.03, 0.03, n) - 0.001 * b_sbp  # log per year; steeper with higher SBP
    b_glu = 0.3 * rng.standard_normal(n)
    sbp_mean = 136.0 + 0.3 * a + 3.0 * diabetes + b_sbp
    dbp_mean = 80.0 - 0.4 * a + 0.35 * b_sbp + b_dbp
    egfr_mean = np.log(75.0) - 0.012 * a - 0.1 * diabetes + b_egfr
    glu_mean = np.log(25.0) + 1.0 * diabetes + b_glu

    def sbp_u(t: np.ndarray) -> np.ndarray:  # underlying SBP at day t (n × k)
        return (sbp_mean[:, None] + s_sbp[:, None] * t / YEAR
                - 6.0 * active[:, None] * (1.0 - np.exp(-t / 45.0)))

    def log_egfr_u(t: np.ndarray) -> np.ndarray:
        slope = s_egfr * np.where(arm == 1, 0.6, 1.0)
        return (egfr_mean[:, None] + slope[:, None] * t / YEAR
                + np.log(0.97) * active[:, None] * (1.0 - np.exp(-t / 30.0)))

    # --- event time: piecewise-constant hazard over 90-day intervals ---------------------------
    n_int = MAX_VISITS + 1
    mids = (np.arange(n_int) + 0.5) * SCHEDULE_DAYS
    t_mid = np.broadcast_to(mids, (n, n_int))
    lp_static = 0.06 * a + 0.3 * male + 0.45 * diabetes - 0.15 * active
    lp = (lp_static[:, None] + 0.02 * (sbp_u(t_mid) - 136.0)
          + 0.9 * (np.log(75.0) - log_egfr_u(t_mid)))
    hazard = EVENT_BASE_HAZARD * np.exp(lp) * SCHEDULE_DAYS / YEAR  # per interval
    cum = np.cumsum(hazard, axis=1)
    e = rng.exponential(1.0, n)
    j = (cum < e[:, None]).sum(axis=1)  # interval in which the event falls (n_int: none)
    jj = np.minimum(j, n_int - 1)
    before = np.where(jj > 0, cum[np.arange(n), jj - 1], 0.0)
    frac = (e - before) / hazard[np.arange(n), jj]
    event_day = np.where(j < n_int, SCHEDULE_DAYS * (jj + frac), np.inf)

    # --- observation: visits, administrative end, dropout ------------------------------------
    days = _visit_days(rng, n)
    last_slot = days[:, MAX_VISITS - 1]
    admin_end = np.minimum(rng.uniform(*ADMIN_END_DAYS, n), np.where(np.isnan(last_slot), np.inf, last_slot + 1.0))
    risk = lp[:, 0]
    drop_rate = DROPOUT_BASE_HAZARD * np.exp(0.03 * a + 0.5 * (risk - risk.mean()))
    dropout_day = rng.exponential(YEAR / drop_rate)
    censor = np.minimum(admin_end, dropout_day)
    event = (event_day < censor).astype(np.int64)
    end = np.minimum(censor, event_day)
    kept = days < end[:, None]  # NaN compares False; day 0 always kept (end > 0)

    # --- labs at the visits -----------------------------------------------------------------
    t = np.where(kept, days, 0.0)
    gaps = np.maximum(np.diff(t, axis=1, prepend=0.0), 0.0)  # 0 past the last visit
    eps_s = rng.standard_normal(t.shape)
    eps_d = 0.5 * eps_s + np.sqrt(0.75) * rng.standard_normal(t.shape)
    sbp_true = sbp_u(t)
    sbp = sbp_true + _ou(rng, gaps, 7.0, eps_s) + 4.0 * rng.standard_normal(t.shape)
    dbp = (dbp_mean[:, None] - 3.0 * active[:, None] * (1.0 - np.exp(-t / 45.0))
           + _ou(rng, gaps, 5.0, eps_d) + 3.0 * rng.standard_normal(t.shape))
    egfr = np.exp(log_egfr_u(t) + _ou(rng, gaps, 0.06) + 0.04 * rng.standard_normal(t.shape))
    glu_tx = np.log(0.85) * (active * diabetes)[:, None] * (1.0 - np.exp(-t / 90.0))
    glucose = 70.0 + np.exp(glu_mean[:, None] + glu_tx + _ou(rng, gaps, 0.2))
    meds0 = rng.poisson(np.exp(np.log(1.0) + 0.4 * diabetes + 0.02 * (sbp_mean - 136.0)))
    rate = 0.25 * np.exp(0.05 * (sbp_true - 140.0))
    step = rng.random(t.shape) < 1.0 - np.exp(-rate * gaps / YEAR)
    step[:, 0] = False
    meds = np.minimum(meds0[:, None] + np.cumsum(step, axis=1), 6).astype(float)

    sbp = np.rint(np.clip(sbp, 80.0, 240.0))
    dbp = np.rint(np.clip(dbp, 35.0, 140.0))
    egfr = np.round(np.clip(egfr, 5.0, 160.0), 1)
    glucose = np.rint(np.clip(glucose, 50.0, 600.0))

    # --- missing labs: at random, and more often just before an event --------------------------
    near = (event[:, None] == 1) & (event_day[:, None] - t <= NEAR_EVENT_DAYS)
    extra = np.where(near, P_MISSING_NEAR_EVENT, 0.0)
    for name, values in (("bp", None), ("egfr", egfr), ("glucose", glucose), ("meds", meds)):
        u = rng.random(t.shape)
        miss = (u < P_MISSING[name]) | (rng.random(t.shape) < extra)
        if values is None:
            sbp[miss] = np.nan
            dbp[miss] = np.nan
        else:
            values[miss] = np.nan

    # --- assemble: rows in patient, then day order ------------------------------------------------
    # kept is a prefix of each row, so the row-major order of kept slots is (patient, day).
    # Per-patient columns are built once per patient and taken per visit (text converted once).
    patients = pd.DataFrame({
        "patient_id": _participant_ids(n),
        "day": np.zeros(n, dtype=np.int64),
        "arm": arm,
        "sex": np.where(male == 1, "M", "F").astype(object),
        "age": age,
        "race": race,
        "diabetes": diabetes,
        "event": event,
    })
    flat = kept.ravel()
    frame = patients.take(np.repeat(np.arange(n), kept.sum(axis=1))).reset_index(drop=True)
    frame["day"] = days.ravel()[flat].astype(np.int64)
    labs = np.stack([x.ravel()[flat] for x in (sbp, dbp, egfr, glucose, meds)])
    return pd.concat([frame, pd.DataFrame(labs.T, columns=["sbp", "dbp", "egfr", "glucose", "meds"], copy=False)],
                     axis=1)
