"""Bundled example data for clinsynth: a simulated SPRINT-structured trial and a small real table.

``simulate_trial`` returns **SIMULATED** data. It is not, and is not derived
from, the real SPRINT data set (Systolic Blood Pressure Intervention Trial,
SPRINT Research Group, NEJM 2015; 373:2103-16). It exists so that clinsynth
can be developed, tested and demonstrated on a table that has the shape and
the awkward parts (wide longitudinal blocks, monotone dropout, intermittent
missed visits, skewed labs, sparse missing covariates) of a real trial export
without anyone needing access to restricted patient-level data.

Layout: the frame is laid out the way a holder of the real SPRINT data would
export it for analysis -- one row per participant, wide: identifier and arm,
baseline covariates, then one column per (measure, visit) for systolic blood
pressure (``sbp_<visit>``), diastolic blood pressure (``dbp_<visit>``) and the
number of antihypertensive medication classes (``meds_<visit>``), visits
``rz`` (randomisation) and months 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27.

Assumptions of the simulation (all numbers are approximate targets, chosen to
resemble the published SPRINT summaries, not fitted to patient-level data):

* Randomisation is an exact 1:1 balanced shuffle (``ceil(n/2)`` standard,
  ``floor(n/2)`` intensive), so arm sizes never drift with the seed.
* Baseline covariates are drawn independently of arm (randomisation) from
  simple parametric distributions with a few dependencies: eGFR falls with
  age; CKD is ``egfr < 60``; creatinine is the CKD-EPI 2009 equation inverted
  from eGFR, age, sex and race plus small noise; statin use is more common
  with prior CVD; cholesterol is lower on statins; prior CVD is more common
  with age. Missing covariate values are missing completely at random.
* Baseline SBP is N(139.7, 15.6) truncated (by resampling) to the SPRINT
  eligibility range 130-180 mmHg. Because the lower tail is cut, the
  realised baseline mean is ~146 mmHg (SD ~11), not 139.7. Baseline DBP has
  mean ~78, SD ~12, correlation ~0.33 with SBP and falls ~0.45 mmHg per year
  of age. Baseline medication classes: 9% none, mean ~1.85, max 6.
* Each participant has a persistent SBP level (random effect) and
  independent visit-to-visit noise (SD 9 mmHg SBP, 6 mmHg DBP, within-visit
  correlation 0.3). The level is drawn conditionally on the observed
  baseline, so follow-up values regress towards the mean, as in real trials.
* A common "trial effect" (better adherence, standardised measurement)
  lowers SBP by 8 mmHg in both arms, phased in over months 1-3 (4.5, 7, 8).
* Titration follows simplified SPRINT rules. The decision is made at each
  attended visit from the SBP measured there and shows from the next visit;
  a missed visit means no change.
  Intensive arm (target < 120): step up if SBP >= 120, with probability
  0.2 + 0.06 per mmHg that the mean of the last two visits exceeds 120
  (capped at 0.95), a second step if SBP >= 150; step down (p = 0.4) if the
  two-visit mean is < 110.
  Standard arm (target < 140): step up (p = 0.6) if SBP >= 160, or >= 140 at
  two consecutive visits; step down (p = 0.4) if SBP < 130, or < 135 at two
  consecutive visits.
  A step up is a dose increase of a class already taken (p = 0.85 when one is
  below full dose; not visible in ``meds``) or else a new class (``meds`` +1,
  capped at 6). Each added class lowers that participant's SBP by ~8 mmHg
  (SD 2, per-participant responsiveness), each dose increase by 0.75 of that.
  Each participant tolerates only a Poisson(3.5) number of net step-ups
  (side effects, reluctance), which makes the intensive arm plateau at ~121
  mmHg instead of titrating down forever. DBP moves by half of any SBP shift.
  Result (n = 6502): intensive median SBP ~120-122 and mean meds ~2.8-3.0
  from month 3 on; standard ~135-136 mmHg with meds ~1.85-1.95.
* Dropout (loss to follow-up, withdrawal, death) has a per-visit hazard of
  0.9% at age 68, multiplied by exp(0.03 per year of age), so ~9-10% have
  left by month 27. It is monotone: after the dropout visit every
  sbp/dbp/meds cell is NaN. Nobody drops out before ``rz`` (always observed).
  A participant whose last visit(s) were missed intermittently looks, in the
  data, like an early dropout; that share comes on top (~3%).
* Intermittent missed visits: each post-``rz`` visit before dropout is missed
  with probability 3%, independently; a missed visit has sbp, dbp and meds
  all NaN, and no titration happens at it.
* Longitudinal columns are float64 holding whole numbers (NaN when
  missing); ``arm``, ``age``, ``female``, ``ckd``, ``cvd_history``,
  ``statin`` are int64 and never missing; ``race`` and ``smoker`` are string
  columns (``smoker`` has NaN when missing).

Only numpy and pandas are imported at module level; scikit-learn is imported
inside :func:`load_breast_cancer` so that importing clinsynth stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "VISITS",
    "VISIT_MONTHS",
    "DatasetInfo",
    "DATASETS",
    "simulate_trial",
    "simulate_long_trial",
    "simulate_ehr",
    "load_breast_cancer",
    "load_dataset",
]

#: Visit suffixes of the longitudinal columns, in time order.
VISITS: tuple[str, ...] = (
    "rz", "m01", "m02", "m03", "m06", "m09", "m12", "m15", "m18", "m21", "m24", "m27",
)
#: Months since randomisation of each entry of :data:`VISITS`.
VISIT_MONTHS: tuple[int, ...] = (0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27)

# --- simulation constants (see the module docstring for their meaning) -----
SBP_BASELINE_MEAN = 139.7  # mean of the untruncated baseline SBP normal
SBP_BASELINE_SD = 15.6     # SD of the untruncated baseline SBP normal
SBP_ELIGIBLE = (130.0, 180.0)
SBP_TARGET = {0: 140.0, 1: 120.0}  # standard, intensive
SBP_VISIT_SD = 9.0
DBP_VISIT_SD = 6.0
BP_NOISE_CORR = 0.3
DBP_PER_SBP = 0.5          # DBP change per mmHg of SBP change (treatment/trial)
TRIAL_EFFECT = {1: -4.5, 2: -7.0}  # by visit index; later visits use TRIAL_EFFECT_FULL
TRIAL_EFFECT_FULL = -8.0
CLASS_EFFECT_MEAN, CLASS_EFFECT_SD = 8.0, 2.0
DOSE_EFFECT_RATIO = 0.75
INT_P_UP_AT_TARGET = 0.2   # intensive: P(step up) at SBP 120 ...
INT_P_UP_SLOPE = 0.06      # ... rising by this much per mmHg above 120
INT_DOWN_BELOW = 110.0
INT_P_DOWN = 0.4
STD_P_UP = 0.6
STD_P_DOWN = 0.4
STEP_BUDGET_MEAN = 3.5
P_DOSE_STEP = 0.85         # share of step-ups that are dose increases when possible
MAX_MEDS = 6
MEDS_BASELINE_P = (0.09, 0.33, 0.32, 0.18, 0.065, 0.013, 0.002)  # 0..6 classes
DROPOUT_HAZARD = 0.009     # per post-rz visit, at age 68
DROPOUT_AGE_LOG_HR = 0.03  # per year of age
P_MISSED_VISIT = 0.03

_RACES = np.array(["White", "Black", "Hispanic", "Other"], dtype=object)
_RACE_P = (0.575, 0.30, 0.11, 0.015)
_SMOKING = np.array(["never", "former", "current", np.nan], dtype=object)
_SMOKING_P = (0.44, 0.425, 0.13, 0.005)


def _truncnorm(
    rng: np.random.Generator, mean, sd, lo: float, hi: float, size: int
) -> np.ndarray:
    """Normal draws restricted to [lo, hi] by redrawing only the rejects (vectorised)."""
    mean = np.broadcast_to(np.asarray(mean, dtype=float), (size,))
    sd = np.broadcast_to(np.asarray(sd, dtype=float), (size,))
    x = rng.normal(mean, sd)
    bad = np.flatnonzero((x < lo) | (x > hi))
    while bad.size:
        x[bad] = rng.normal(mean[bad], sd[bad])
        bad = bad[(x[bad] < lo) | (x[bad] > hi)]
    return x


def _with_missing(rng: np.random.Generator, x: np.ndarray, p: float) -> np.ndarray:
    """Return a float copy of ``x`` with each entry set to NaN with probability ``p`` (MCAR)."""
    out = np.asarray(x, dtype=float).copy()
    out[rng.random(out.shape[0]) < p] = np.nan
    return out


def _creatinine_from_egfr(egfr, age, female, black) -> np.ndarray:
    """Invert the CKD-EPI 2009 creatinine equation so labs agree with eGFR."""
    kappa = np.where(female == 1, 0.7, 0.9)
    alpha = np.where(female == 1, -0.329, -0.411)
    scale = 141.0 * 0.993**age * np.where(female == 1, 1.018, 1.0) * np.where(black, 1.159, 1.0)
    g = egfr / scale  # = min(s,1)^alpha * max(s,1)^-1.209 with s = scr/kappa
    s = np.where(g >= 1.0, g ** (1.0 / alpha), g ** (-1.0 / 1.209))
    return kappa * s


def _participant_ids(n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    return np.char.add("S", np.char.zfill(np.arange(1, n + 1).astype(str), width)).astype(object)


def simulate_trial(n: int = 6502, seed: int = 0) -> pd.DataFrame:
    """Simulate a SPRINT-structured two-arm blood-pressure trial (SIMULATED data).

    Gives clinsynth a realistic, wide, partly-missing longitudinal trial table
    that anyone can generate without access to restricted patient data. One
    row per participant; see the module docstring for columns, dtypes and
    every modelling assumption. Fully vectorised over participants (loops only
    over the 12 visits); deterministic for a given ``seed``.

    Args:
        n: Number of participants (rows). Must be >= 1; 1,000,000 takes a
            few seconds.
        seed: Seed for ``numpy.random.default_rng``; same seed, same frame.

    Returns:
        DataFrame, one row per participant: 14 baseline columns, then
        ``sbp_*``, ``dbp_*`` and ``meds_*`` for the 12 :data:`VISITS` (50 columns).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)

    # --- randomisation: exact 1:1 balanced shuffle ------------------------------
    arm = rng.permutation(np.arange(n, dtype=np.int64) % 2)

    # --- baseline covariates -------------------------------------------------
    # Age: mixture of a 50-74 group and a >=75 group (SPRINT enrolled ~28% >=75).
    old = rng.random(n) < 0.28
    age_cont = np.where(
        old,
        _truncnorm(rng, 78.5, 5.5, 75.0, 95.99, n),
        _truncnorm(rng, 64.0, 7.0, 50.0, 74.99, n),
    )
    age = np.floor(age_cont).astype(np.int64)
    female = (rng.random(n) < 0.36).astype(np.int64)
    race_code = rng.choice(len(_RACES), size=n, p=_RACE_P)
    black = race_code == 1
    bmi = np.round(_truncnorm(rng, 29.9, 5.8, 16.0, 60.0, n), 1)
    # eGFR: log-normal, declining ~0.6 mL/min/1.73m^2 per year of age.
    log_egfr = _truncnorm(
        rng, np.log(72.0) - 0.035 - 0.0085 * (age_cont - 68.0), 0.26,
        np.log(15.0), np.log(150.0), n,
    )
    egfr = np.round(np.exp(log_egfr), 1)
    ckd = (egfr < 60.0).astype(np.int64)
    p_cvd = 1.0 / (1.0 + np.exp(-(np.log(0.2 / 0.8) + 0.03 * (age_cont - 68.0))))
    cvd_history = (rng.random(n) < p_cvd).astype(np.int64)
    smoker = _SMOKING[rng.choice(len(_SMOKING), size=n, p=_SMOKING_P)]
    statin = (rng.random(n) < 0.36 + 0.35 * cvd_history).astype(np.int64)
    chol = _truncnorm(rng, 197.0 - 16.0 * statin, 40.0, 90.0, 400.0, n)
    glucose = 65.0 + np.exp(rng.normal(np.log(34.0) - 0.068, 0.37, n))  # right-skewed
    glucose = np.minimum(glucose, 300.0)
    creat = _creatinine_from_egfr(egfr, age_cont, female, black) * np.exp(rng.normal(0, 0.05, n))
    creat = np.maximum(creat, 0.4)

    # --- baseline blood pressure and treatment ---------------------------------
    sbp_rz = _truncnorm(rng, SBP_BASELINE_MEAN, SBP_BASELINE_SD, *SBP_ELIGIBLE, n)
    # Persistent SBP level given the observed baseline (normal-normal shrinkage).
    var_total = SBP_BASELINE_SD**2
    var_level = var_total - SBP_VISIT_SD**2
    lam = var_level / var_total
    sbp_level = (SBP_BASELINE_MEAN + lam * (sbp_rz - SBP_BASELINE_MEAN)
                 + np.sqrt(var_level * (1 - lam)) * rng.standard_normal(n))
    # DBP: mean 78, SD 12, r(SBP) ~0.35, lower with age.
    dbp_rz = (78.0 + 0.38 * (sbp_rz - 146.0) - 0.45 * (age_cont - 68.0)
              + 10.4 * rng.standard_normal(n))
    dbp_rz = np.clip(dbp_rz, 40.0, 130.0)
    lam_d = 1.0 - DBP_VISIT_SD**2 / 144.0
    dbp_level = (78.0 + lam_d * (dbp_rz - 78.0)
                 + np.sqrt(144.0 * lam_d * (1 - lam_d)) * rng.standard_normal(n))
    classes0 = rng.choice(MAX_MEDS + 1, size=n, p=MEDS_BASELINE_P).astype(np.int64)
    doses0 = rng.binomial(classes0, 0.4)
    class_eff = np.clip(rng.normal(CLASS_EFFECT_MEAN, CLASS_EFFECT_SD, n), 2.0, 12.0)
    dose_eff = DOSE_EFFECT_RATIO * class_eff
    # Tolerance: how many further step-ups this participant will accept in the trial.
    budget = rng.poisson(STEP_BUDGET_MEAN, n)

    # --- observation process: dropout and missed visits ------------------------
    n_visits = len(VISITS)
    hazard = np.minimum(DROPOUT_HAZARD * np.exp(DROPOUT_AGE_LOG_HR * (age_cont - 68.0)), 0.5)
    first_gone = rng.geometric(hazard)  # first visit index no longer attended (>= 1)

    # --- visit loop --------------------------------------------------------------
    # One (3 * visits, n) block so the frame's float block is built without copies.
    long_block = np.empty((3 * n_visits, n))
    sbp = long_block[:n_visits]
    dbp = long_block[n_visits:2 * n_visits]
    meds = long_block[2 * n_visits:]
    observed = np.empty((n_visits, n), dtype=bool)
    sbp[0] = np.rint(sbp_rz)
    dbp[0] = np.rint(dbp_rz)
    meds[0] = classes0
    observed[0] = True
    classes, doses = classes0.copy(), doses0.copy()
    intensive = arm == 1
    prev2 = np.full(n, np.nan)  # latent SBP two visits back
    t_std, t_int = SBP_TARGET[0], SBP_TARGET[1]
    for v in range(1, n_visits):
        prev = sbp[v - 1]
        seen = observed[v - 1]
        u = rng.random((4, n))
        # Intensive arm: escalate when >= 120, more likely the further above.
        # Judged on the mean of the last two visits (less noise-driven titration).
        recent = np.where(np.isnan(prev2), prev, 0.5 * (prev + prev2))
        p_up_int = np.clip(INT_P_UP_AT_TARGET + (recent - t_int) * INT_P_UP_SLOPE, 0.0, 0.95)
        up_int = (prev >= t_int) & (u[0] < p_up_int)
        up2_int = (prev >= 150.0) & (u[1] < 0.5)
        down_int = (recent < INT_DOWN_BELOW) & (u[1] < INT_P_DOWN)
        # Standard arm: SPRINT-like two-visit escalation / de-escalation rules.
        up_std = ((prev >= 160.0) | ((prev >= t_std) & (prev2 >= t_std))) & (u[0] < STD_P_UP)
        down_std = ((prev < 130.0) | ((prev < 135.0) & (prev2 < 135.0))) & (u[1] < STD_P_DOWN)
        n_up = np.where(intensive, up_int.astype(np.int64) + (up_int & up2_int), up_std) * seen
        down = np.where(intensive, down_int, down_std) & seen & (n_up == 0)
        for step in range(2):
            go = (n_up > step) & (budget > 0)
            dose_ok = doses < classes
            add_ok = classes < MAX_MEDS
            by_dose = go & dose_ok & ((u[2] < P_DOSE_STEP) | ~add_ok)
            by_class = go & ~by_dose & add_ok
            doses += by_dose
            classes += by_class
            budget -= by_dose | by_class
            u[2] = rng.random(n)
        dose_down = down & (doses > 0)
        class_down = down & ~dose_down & (classes > 0)
        doses -= dose_down
        classes -= class_down
        budget += dose_down | class_down  # a withdrawn step may be retried later
        doses = np.minimum(doses, classes)

        trial = TRIAL_EFFECT.get(v, TRIAL_EFFECT_FULL)
        tx = class_eff * (classes - classes0) + dose_eff * (doses - doses0)
        shift = trial - tx
        e_s = rng.standard_normal(n)
        e_d = BP_NOISE_CORR * e_s + np.sqrt(1 - BP_NOISE_CORR**2) * rng.standard_normal(n)
        sbp[v] = np.rint(np.clip(sbp_level + shift + SBP_VISIT_SD * e_s, 85.0, 230.0))
        dbp[v] = np.rint(np.clip(dbp_level + DBP_PER_SBP * shift + DBP_VISIT_SD * e_d, 35.0, 130.0))
        meds[v] = classes
        observed[v] = (v < first_gone) & (u[3] >= P_MISSED_VISIT)
        prev2 = prev

    sbp[~observed] = np.nan
    dbp[~observed] = np.nan
    meds[~observed] = np.nan

    # --- assemble ------------------------------------------------------------------
    baseline = pd.DataFrame({
        "participant_id": _participant_ids(n),
        "arm": arm,
        "age": age,
        "female": female,
        "race": _RACES[race_code],
        "bmi": _with_missing(rng, bmi, 0.01),
        "egfr": egfr,
        "ckd": ckd,
        "cvd_history": cvd_history,
        "smoker": smoker,
        "statin": statin,
        "total_cholesterol": _with_missing(rng, np.round(chol), 0.02),
        "glucose": _with_missing(rng, np.round(glucose), 0.01),
        "creatinine": _with_missing(rng, np.round(creat, 2), 0.01),
    })
    long_cols = [f"{name}_{suffix}" for name in ("sbp", "dbp", "meds") for suffix in VISITS]
    longitudinal = pd.DataFrame(long_block.T, columns=long_cols, copy=False)
    return pd.concat([baseline, longitudinal], axis=1)


def _long_trial() -> pd.DataFrame:
    """Loader of the ``long_trial`` entry: :func:`simulate_long_trial` at its defaults (imported
    here because ``long_trial`` builds on this module's helpers)."""
    from clinsynth.data.long_trial import simulate_long_trial

    return simulate_long_trial()


def load_breast_cancer() -> pd.DataFrame:
    """Return scikit-learn's Wisconsin diagnostic breast cancer table (real, public, 569 rows).

    A small real data set complements the simulated trial: it lets users check
    clinsynth against genuine (non-simulated) feature correlations. Columns are
    snake_case identifiers ("mean radius" -> "mean_radius"); the last column,
    ``diagnosis``, holds "malignant"/"benign" (scikit-learn codes 0 = malignant,
    1 = benign).
    """
    from sklearn.datasets import load_breast_cancer as _sk_load_breast_cancer

    bunch = _sk_load_breast_cancer(as_frame=True)
    features = bunch.data.copy()
    features.columns = [
        re.sub(r"[^0-9a-z]+", "_", str(c).strip().lower()).strip("_") for c in features.columns
    ]
    names = np.asarray(bunch.target_names, dtype=object)  # ["malignant", "benign"]
    features["diagnosis"] = names[np.asarray(bunch.target, dtype=np.int64)]
    return features


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry describing one bundled data set (used by the CLI to list/choose)."""

    name: str
    loader: Callable[[], pd.DataFrame]
    target: str
    description: str
    patient: str | None = None  # long format (one row per visit): the patient id column ...
    time: str | None = None     # ... and the visit time column; None for one row per record


DATASETS: dict[str, DatasetInfo] = {
    "trial": DatasetInfo(
        name="trial",
        loader=simulate_trial,
        target="arm",
        description="SIMULATED SPRINT-structured BP trial: 6502 participants, wide, 12 visits.",
    ),
    "long_trial": DatasetInfo(
        name="long_trial",
        loader=_long_trial,
        target="event",
        description="SIMULATED cardio-renal trial in long format: 5000 patients, one row per visit, "
                    "1-20 irregular visits.",
        patient="patient_id",
        time="day",
    ),
    "breast_cancer": DatasetInfo(
        name="breast_cancer",
        loader=load_breast_cancer,
        target="diagnosis",
        description="Real Wisconsin diagnostic breast cancer table from scikit-learn (569 rows).",
    ),
}


def __getattr__(name: str) -> Callable:
    """``simulate_ehr`` lives in ``ehr_simulator`` (it needs scipy.sparse) and ``simulate_long_trial``
    in ``long_trial`` (it imports this module); both are served lazily from here."""
    if name == "simulate_long_trial":
        from clinsynth.data.long_trial import simulate_long_trial

        return simulate_long_trial
    if name == "simulate_ehr":
        from clinsynth.data.ehr_simulator import simulate_ehr

        return simulate_ehr
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_dataset(name: str) -> pd.DataFrame:
    """Load a bundled data set by registry name, so callers need not know each loader."""
    try:
        info = DATASETS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}") from None
    return info.loader()
