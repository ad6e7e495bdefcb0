"""What a lab looks like along the patients' visits, real next to synthetic.

Three views of the same long-format tables (read by :func:`clinsynth.evaluate.patients.read_tables`):

* **per-visit-index marginals** — at the k-th visit of a patient, each lab's share missing, mean,
  median and quartiles, and the KS statistic real vs synthetic;
* **within-patient correlation** — each lab's first vs last observed value (does a patient stay
  high?) and consecutive visits (lag 1), Pearson, with the absolute difference real − synthetic;
* **trajectories by class** — median and quartiles of each lab per time bin since baseline, per
  class of the target, with the share of each class's patients still in follow-up; the table
  :func:`clinsynth.report.figures.patient_trajectories_figure` draws.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.evaluate.patients import BIN_DAYS, MAX_BINS, MAX_INDEX, Visits, _ks, _summary
from clinsynth.evaluate.privacy import _label

#: Fewer pairs than this and a correlation is reported as undefined (None).
MIN_PAIRS = 3


# --- per-visit-index marginals ---------------------------------------------------------------------
def visit_index_marginals(real: Visits, synthetic: Visits, max_index: int = MAX_INDEX) -> dict[str, Any]:
    """For visit k = 1..K (K = the most visits a real patient has, at most ``max_index``) and each
    lab: visits at that index, share missing, mean/median/quartiles, real and synthetic, and the
    KS statistic of the observed values. ``by_index`` averages the KS over labs per index."""
    top = int(min(max_index, real.counts().max(initial=0)))
    ri, si = real.rows["_index"].to_numpy(), synthetic.rows["_index"].to_numpy()
    rows, by_index = [], []
    for k in range(1, top + 1):
        rk, sk = ri == k, si == k
        ks_values, miss_diffs = [], []
        for lab in real.labs:
            x, y = real.rows[lab].to_numpy()[rk], synthetic.rows[lab].to_numpy()[sk]
            mr = float(np.mean(np.isnan(x))) if x.size else None
            ms = float(np.mean(np.isnan(y))) if y.size else None
            ks = _ks(x, y)
            if ks is not None:
                ks_values.append(ks)
            if mr is not None and ms is not None:
                miss_diffs.append(abs(mr - ms))
            rows.append({"index": k, "lab": lab, "n_real": int(x.size), "n_synthetic": int(y.size),
                         "missing_real": mr, "missing_synthetic": ms, "real": _summary(x), "synthetic": _summary(y),
                         "ks": ks})
        by_index.append({"index": k, "patients_real": int(rk.sum()), "patients_synthetic": int(sk.sum()),
                         "mean_ks": float(np.mean(ks_values)) if ks_values else None,
                         "max_ks": float(np.max(ks_values)) if ks_values else None,
                         "mean_missing_difference": float(np.mean(miss_diffs)) if miss_diffs else None})
    means = [b["mean_ks"] for b in by_index if b["mean_ks"] is not None]
    return {"max_index": top, "rows": rows, "by_index": by_index, "mean_ks": float(np.mean(means)) if means else None}


# --- within-patient correlation ----------------------------------------------------------------------
def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def first_last_pairs(v: Visits, lab: str) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's first and last observed value of ``lab`` (patients with ≥ 2 observations)."""
    obs = v.rows.loc[v.rows[lab].notna(), ["_pid", lab]]
    g = obs.groupby("_pid", sort=True)[lab]
    both = pd.DataFrame({"first": g.first(), "last": g.last(), "n": g.size()})
    both = both[both["n"] >= 2]
    return both["first"].to_numpy(dtype=float), both["last"].to_numpy(dtype=float)


def lag1_pairs(v: Visits, lab: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``lab`` at consecutive visits of the same patient, both observed."""
    p, x = v.rows["_pid"].to_numpy(), v.rows[lab].to_numpy(dtype=float)
    keep = (p[1:] == p[:-1]) & np.isfinite(x[1:]) & np.isfinite(x[:-1])
    return x[:-1][keep], x[1:][keep]


def within_patient_correlations(real: Visits, synthetic: Visits) -> dict[str, Any]:
    """Pearson correlation of each lab between a patient's first and last observed value, and
    between consecutive visits (lag 1), real vs synthetic, with the absolute differences."""
    rows = []
    for lab in real.labs:
        row: dict[str, Any] = {"lab": lab}
        for key, pairs in (("first_last", first_last_pairs), ("lag1", lag1_pairs)):
            rx, ry = pairs(real, lab)
            sx, sy = pairs(synthetic, lab)
            r, s = _pearson(rx, ry), _pearson(sx, sy)
            row[key] = {"real": r, "synthetic": s, "abs_difference": abs(r - s) if r is not None and s is not None else None,
                        "n_real": int(rx.size), "n_synthetic": int(sx.size)}
        rows.append(row)

    def mean_diff(key: str) -> float | None:
        d = [r[key]["abs_difference"] for r in rows if r[key]["abs_difference"] is not None]
        return float(np.mean(d)) if d else None

    return {"labs": rows, "mean_abs_difference_first_last": mean_diff("first_last"),
            "mean_abs_difference_lag1": mean_diff("lag1")}


# --- trajectories by class -------------------------------------------------------------------------
def class_labels(values: pd.Series) -> np.ndarray:
    """A class column as text (``1``, ``1.0`` and ``"1"`` alike), missing as None; each distinct value labelled once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return np.array([*(_label(u) for u in uniques), None], dtype=object)[codes]


def trajectories(real: Visits, synthetic: Visits, target: str | None, bin_days: float = BIN_DAYS,
                 max_bins: int = MAX_BINS) -> dict[str, Any]:
    """Median and quartiles of each lab per time bin (days since baseline, ``bin_days`` wide), by
    class of ``target``, real and synthetic; and per bin the share of the class's patients still
    in follow-up (last visit at or after the bin's start). Times before 0 fall in the first bin,
    times past the last bin (which ends at the real tables' longest follow-up, at most
    ``max_bins`` bins) in the last. A plain table: the report plots it."""
    if not bin_days > 0:
        raise ValueError(f"bin_days must be positive, got {bin_days}")
    longest = float(np.nanmax(real.rows["_since"].to_numpy(), initial=0.0))
    n_bins = int(min(max_bins, max(1, math.floor(longest / bin_days) + 1)))
    classes: list[str | None] = [None]
    if target is not None:
        classes = sorted({c for c in class_labels(real.rows[target]) if c is not None}, key=str)
    labs_rows, follow_rows = [], []
    for source, v in (("real", real), ("synthetic", synthetic)):
        since = v.rows["_since"].to_numpy()
        b = np.clip(np.floor(since / bin_days), 0, n_bins - 1).astype(int)
        p = v.rows["_pid"].to_numpy()
        last_since = np.full(v.n_patients, np.nan)
        last_since[p] = since  # rows sorted by time: the last assignment is the last visit
        labels = class_labels(v.rows[target]) if target is not None else np.full(len(v.rows), None, dtype=object)
        patient_class = np.full(v.n_patients, None, dtype=object)
        patient_class[p] = labels  # per-patient column: the last row's value stands for the patient
        for cls in classes:
            in_class = labels == cls if cls is not None else np.ones(len(v.rows), dtype=bool)
            members = patient_class == cls if cls is not None else np.ones(v.n_patients, dtype=bool)
            ends = last_since[members]
            for k in range(n_bins):
                follow_rows.append({"class": cls, "source": source, "bin": k, "start": k * bin_days,
                                    "n_patients": int(members.sum()),
                                    "in_follow_up": float(np.mean(ends >= k * bin_days)) if ends.size else None})
            sub = v.rows.loc[in_class, v.labs].assign(_bin=b[in_class])
            grouped = sub.groupby("_bin")
            stats = {q: grouped.quantile(q) for q in (0.25, 0.5, 0.75)}
            counts = grouped.count()
            for lab in v.labs:
                for k in range(n_bins):
                    n = int(counts[lab].get(k, 0)) if lab in counts else 0
                    labs_rows.append({"class": cls, "source": source, "lab": lab, "bin": k, "start": k * bin_days,
                                      "n": n, **{name: (float(stats[q][lab].get(k)) if n else None)
                                                 for name, q in (("q1", 0.25), ("median", 0.5), ("q3", 0.75))}})
    return {"by": target, "bin_days": float(bin_days), "n_bins": n_bins, "classes": classes, "labs": list(real.labs),
            "rows": labs_rows, "follow_up": follow_rows}
