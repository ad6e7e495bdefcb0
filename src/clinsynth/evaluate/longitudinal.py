"""Longitudinal fidelity: per-visit summaries of a measure by class, real next to synthetic.

The SPRINT paper's Figure 2 compares per-visit median SBP by arm; this computes those numbers
(median and IQR) so the report can show them and a test can check them.
"""
from __future__ import annotations

import pandas as pd

from clinsynth.schema import LongitudinalGroup


def per_visit_summary(df: pd.DataFrame, group: LongitudinalGroup, by: str | None = None) -> pd.DataFrame:
    """Median, quartiles and count of observed values per visit (and per class of ``by``)."""
    rows = []
    classes = [(None, df)] if by is None else list(df.groupby(df[by].astype(str), sort=True))
    for cls, part in classes:
        for visit, col in zip(group.visits, group.columns):
            x = part[col].dropna()
            rows.append({"class": cls, "visit": visit, "median": x.median(), "q1": x.quantile(0.25),
                         "q3": x.quantile(0.75), "n": int(x.size)})
    return pd.DataFrame(rows)
