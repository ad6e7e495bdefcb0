"""Longitudinal fidelity: per-visit summaries of a measure by class, real next to synthetic.

The SPRINT paper's Figure 2 compares per-visit median SBP by arm; this computes those numbers
(median and IQR) so a plot or a report can show them and a test can check them.
"""
from __future__ import annotations

import pandas as pd

from clinsynth.errors import SchemaError
from clinsynth.schema import LongitudinalGroup, Schema


def group_by_name(schema: Schema, measure: str | None = None) -> LongitudinalGroup:
    """The named longitudinal group, or the first one when no name is given."""
    if not schema.longitudinal:
        raise SchemaError("the schema has no longitudinal groups")
    if measure is None:
        return schema.longitudinal[0]
    for g in schema.longitudinal:
        if g.name == measure:
            return g
    raise SchemaError(f"no longitudinal group '{measure}'; groups are: {', '.join(g.name for g in schema.longitudinal)}")


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


def median_gap(real: pd.DataFrame, synthetic: pd.DataFrame, group: LongitudinalGroup, by: str | None = None) -> pd.DataFrame:
    """Synthetic minus real per-visit median, one row per (class, visit)."""
    r = per_visit_summary(real, group, by).set_index(["class", "visit"])
    s = per_visit_summary(synthetic, group, by).set_index(["class", "visit"])
    out = pd.DataFrame({"real": r["median"], "synthetic": s["median"]})
    out["gap"] = out["synthetic"] - out["real"]
    return out.reset_index()
