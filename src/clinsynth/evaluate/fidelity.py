"""Fidelity: do the synthetic records look like the real ones, column by column and together?

Per column, the Kolmogorov–Smirnov statistic for numbers (observed values, with the missing
share compared alongside) and the total variation distance for categories (missing as a level).
Pairwise, the difference of association matrices — Pearson or Spearman between numbers, Cramér's V
between categories — with its largest cells named. For binary columns, medGAN's
dimension-wise probability: each column's prevalence, real against synthetic, and their
correlation across columns. Overall, a detection score: the cross-validated AUROC of a classifier
told to separate real from synthetic records (0.5 is ideal). For plots and the report, each
column's histogram or level shares, and per-visit median/IQR of longitudinal measures by class.
Pure functions of frames.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from clinsynth.data.transforms import numeric_values
from clinsynth.evaluate.bounds import level_text
from clinsynth.evaluate.utility import as_features, feature_pipeline
from clinsynth.schema import DISCRETE_KINDS, NUMERIC_KINDS, Schema


_TEXT = pd.Series(["a"], dtype=object).map(str).dtype  # the dtype text takes in this pandas


def _levels(s: pd.Series) -> pd.Series:
    """Category shares with missing as its own level, keys as text so real and synthetic align.

    Each distinct value is written as text once (``pd.factorize``), not each row: the same text
    series, and so the same shares in the same order, as ``s.astype(object).map(level_text)``."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    labels = np.array([level_text(u) for u in uniques] + ["<missing>"], dtype=object)
    return pd.Series(labels[codes], dtype=_TEXT).value_counts(normalize=True)


Shares = dict[str, tuple[pd.Series, pd.Series]]  # column → (real, synthetic) category shares


def category_shares(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> Shares:
    """Every categorical column's level shares on both sides, computed once for the column scores
    and the marginals (on wide tables the counting is most of their cost)."""
    return {c.name: (_levels(real[c.name]), _levels(synthetic[c.name]))
            for c in schema.model_columns if c.kind in DISCRETE_KINDS}


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """The two-sample Kolmogorov–Smirnov statistic, as ``scipy.stats.ks_2samp(x, y).statistic``
    computes it (the same numbers, including its exact mode's rounding to a multiple of 1/lcm(n, m)
    for samples up to 10,000), without the p-value, whose exact computation on small samples costs
    far more than the statistic: ~1 ms a column, 10 s on a 10,000-column table."""
    x, y = np.sort(x), np.sort(y)
    n1, n2 = x.size, y.size
    both = np.concatenate([x, y])
    diff = np.searchsorted(x, both, side="right") / n1 - np.searchsorted(y, both, side="right") / n2
    minus, plus = float(np.clip(-diff.min(), 0, 1)), float(diff.max())
    d = minus if minus > plus else plus
    g = math.gcd(n1, n2)
    if max(n1, n2) <= 10_000 and n1 // g < np.iinfo(np.int32).max / (n2 // g):
        lcm = (n1 // g) * n2  # scipy's exact mode snaps the statistic to a multiple of 1/lcm
        d = int(np.round(d * lcm)) * 1.0 / lcm
    return float(d)


@dataclass(frozen=True)
class ColumnScore:
    column: str
    kind: str
    statistic: str  # "ks" or "tv"
    value: float  # 0 = identical marginals, 1 = disjoint
    missing_real: float
    missing_synthetic: float


def column_scores(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
                  shares: Shares | None = None) -> list[ColumnScore]:
    """KS for numeric columns, total variation for categorical ones, and each side's missing share
    (``shares``: :func:`category_shares`, if already computed)."""
    shares = category_shares(real, synthetic, schema) if shares is None else shares
    out = []
    for spec in schema.model_columns:
        r, s = real[spec.name], synthetic[spec.name]
        miss_r, miss_s = float(r.isna().mean()), float(s.isna().mean())
        if spec.kind in NUMERIC_KINDS:
            x, y = numeric_values(r, spec.kind), numeric_values(s, spec.kind)
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            value = ks_statistic(x, y) if x.size and y.size else float(x.size != y.size)
            out.append(ColumnScore(spec.name, spec.kind, "ks", value, miss_r, miss_s))
        elif spec.kind in DISCRETE_KINDS:
            p, q = shares[spec.name]
            value = 0.5 * float(p.sub(q, fill_value=0.0).abs().sum())
            out.append(ColumnScore(spec.name, spec.kind, "tv", value, miss_r, miss_s))
    return out


def _codes(s: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes of a categorical series, missing as its own level, values compared as text."""
    codes, levels = pd.factorize(s.astype(object).where(s.notna(), "<missing>").map(level_text), sort=True)
    return codes, len(levels)


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V of two categorical series (missing as a level), bias left uncorrected: 0–1."""
    (ca, ka), (cb, kb) = _codes(a), _codes(b)
    return _cramers_v_codes(ca, ka, cb, kb)


def _cramers_v_codes(ca: np.ndarray, ka: int, cb: np.ndarray, kb: int) -> float:
    # A bincount contingency table: pd.crosstab costs ~100x more, and a wide table has many pairs.
    table = np.bincount(ca * kb + cb, minlength=ka * kb).reshape(ka, kb).astype(float)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    n = table.sum()
    if n == 0 or min(table.shape) < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / np.where(expected > 0, expected, 1.0)).sum())
    return float(np.sqrt(chi2 / (n * (min(table.shape) - 1))))


def association_matrix(df: pd.DataFrame, schema: Schema, method: str = "spearman") -> pd.DataFrame:
    """Numbers with numbers by ``method`` (pearson/spearman, pairwise complete); categories with
    categories by Cramér's V. Number–category pairs are left out (NaN)."""
    numeric = [c for c in schema.model_columns if c.kind in NUMERIC_KINDS]
    discrete = [c for c in schema.model_columns if c.kind in DISCRETE_KINDS]
    names = [c.name for c in numeric + discrete]
    out = np.full((len(names), len(names)), np.nan)  # filled as an array: a cell-wise .loc costs ~0.2 ms a pair
    p = len(numeric)
    if numeric:
        values = pd.DataFrame({c.name: numeric_values(df[c.name], c.kind) for c in numeric})
        out[:p, :p] = values.corr(method=method).to_numpy()
    codes = [_codes(df[c.name]) for c in discrete]
    for i in range(len(discrete)):
        out[p + i, p + i] = 1.0
        for j in range(i + 1, len(discrete)):
            out[p + i, p + j] = out[p + j, p + i] = _cramers_v_codes(*codes[i], *codes[j])
    return pd.DataFrame(out, index=names, columns=names)


@dataclass
class AssociationDifference:
    method: str
    mean_abs: float
    max_abs: float
    largest: list[dict[str, Any]] = field(default_factory=list)  # the worst pairs, named
    difference: pd.DataFrame | None = None  # synthetic − real, for the heatmap


def association_difference(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
                           method: str = "spearman", top: int = 5) -> AssociationDifference:
    """Synthetic minus real association matrix, summarised, with the ``top`` largest cells named."""
    r, s = association_matrix(real, schema, method), association_matrix(synthetic, schema, method)
    diff = s - r
    upper = np.triu(np.ones(diff.shape, dtype=bool), k=1)
    cells = diff.where(upper).stack().dropna()
    if cells.empty:
        return AssociationDifference(method, 0.0, 0.0, [], diff)
    worst = cells.abs().sort_values(ascending=False).head(top)
    largest = [{"a": a, "b": b, "real": float(r.loc[a, b]), "synthetic": float(s.loc[a, b]),
                "difference": float(diff.loc[a, b])} for a, b in worst.index]
    return AssociationDifference(method, float(cells.abs().mean()), float(cells.abs().max()), largest, diff)


@dataclass
class DimensionWiseProbability:
    """medGAN's check for binary columns: prevalence of the second category, real vs synthetic."""

    columns: list[str]
    real: list[float]
    synthetic: list[float]
    correlation: float  # Pearson across columns; 1 = every prevalence kept


def dimension_wise_probability(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> DimensionWiseProbability:
    specs = [c for c in schema.model_columns if c.kind == "binary" and c.name != schema.target]
    positive = [level_text((c.categories or [None, None])[1]) for c in specs]
    r = [float((real[c.name].astype(object).map(level_text) == p).mean()) for c, p in zip(specs, positive)]
    s = [float((synthetic[c.name].astype(object).map(level_text) == p).mean()) for c, p in zip(specs, positive)]
    corr = float(np.corrcoef(r, s)[0, 1]) if len(specs) >= 2 and np.std(r) > 0 and np.std(s) > 0 else float("nan")
    return DimensionWiseProbability([c.name for c in specs], r, s, corr)


def detection_auroc(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, max_rows: int = 10_000,
                    folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUROC of a random forest separating real from synthetic records.

    Both sides are subsampled to the same size (at most ``max_rows``) so chance is 0.5; the target
    column counts as a feature here, since a synthetic table must get it right too.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(real), len(synthetic), max_rows)
    rng = np.random.default_rng(seed)
    both = pd.concat([real.iloc[rng.choice(len(real), n, replace=False)],
                      synthetic.iloc[rng.choice(len(synthetic), n, replace=False)]], ignore_index=True)
    features = schema.model_copy(update={"target": None})
    X = as_features(both, features)
    y = np.r_[np.zeros(n), np.ones(n)]
    folds_ = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(feature_pipeline(features, "random_forest", seed), X, y, cv=folds_, scoring="roc_auc")
    return float(np.mean(scores))


@dataclass(frozen=True)
class Marginal:
    """One column's distribution, real next to synthetic, ready to plot: shares per bin or level."""

    column: str
    kind: str
    labels: list[str]  # bin ranges or category levels
    real: list[float]  # shares of observed values (numbers) or of all rows (categories, missing a level)
    synthetic: list[float]


def marginals(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, bins: int = 20,
              max_levels: int = 12, shares: Shares | None = None) -> list[Marginal]:
    """Histograms on the real data's 1st–99th percentile range (outer bins take the tails) and
    category shares (the ``max_levels`` most common real levels, the rest pooled as "other")."""
    counted = category_shares(real, synthetic, schema) if shares is None else shares
    out = []
    for spec in schema.model_columns:
        r, s = real[spec.name], synthetic[spec.name]
        if spec.kind in NUMERIC_KINDS:
            x, y = numeric_values(r, spec.kind), numeric_values(s, spec.kind)
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            if not x.size:
                continue
            lo, hi = np.percentile(x, [1, 99])
            if hi <= lo:
                lo, hi = float(x.min()) - 0.5, float(x.max()) + 0.5
            edges = np.linspace(lo, hi, bins + 1)

            def shares(v: np.ndarray) -> list[float]:
                counts = np.bincount(np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1), minlength=bins)
                return (counts / max(v.size, 1)).tolist()

            labels = [f"{a:.4g}–{b:.4g}" for a, b in zip(edges[:-1], edges[1:])]
            out.append(Marginal(spec.name, spec.kind, labels, shares(x), shares(y)))
        elif spec.kind in DISCRETE_KINDS:
            p, q = counted[spec.name]
            keep = list(p.index[:max_levels])
            labels = keep + (["other"] if len(p) > max_levels or not set(q.index) <= set(keep) else [])
            real_shares = [float(p.get(k, 0.0)) for k in keep]
            synth_shares = [float(q.get(k, 0.0)) for k in keep]
            if len(labels) > len(keep):
                real_shares.append(max(0.0, 1.0 - sum(real_shares)))
                synth_shares.append(max(0.0, 1.0 - sum(synth_shares)))
            out.append(Marginal(spec.name, spec.kind, labels, real_shares, synth_shares))
    return out


@dataclass(frozen=True)
class VisitSummary:
    """Per-visit median, quartiles and observed share of one measure, by class: SPRINT's Fig. 2."""

    group: str
    by: str | None
    rows: list[dict[str, Any]]  # class, visit, source (real/synthetic), median, q1, q3, observed


def longitudinal_summaries(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> list[VisitSummary]:
    """Every longitudinal group, by the target's classes when there is a target."""
    from clinsynth.evaluate.longitudinal import per_visit_summary

    out = []
    for group in schema.longitudinal:
        rows: list[dict[str, Any]] = []
        for source, frame in (("real", real), ("synthetic", synthetic)):
            table = per_visit_summary(frame, group, schema.target)
            sizes = frame[schema.target].astype(str).value_counts() if schema.target else None
            for rec in table.to_dict(orient="records"):
                total = int(sizes.get(rec["class"], 0)) if sizes is not None else len(frame)
                rows.append({"class": rec["class"], "visit": rec["visit"], "source": source,
                             **{k: (None if pd.isna(rec[k]) else float(rec[k])) for k in ("median", "q1", "q3")},
                             "observed": rec["n"] / total if total else 0.0})
        out.append(VisitSummary(group.name, schema.target, rows))
    return out


@dataclass
class FidelityResult:
    columns: list[ColumnScore]
    associations: AssociationDifference
    dimension_wise: DimensionWiseProbability
    detection_auroc: float
    marginals: list[Marginal] = field(default_factory=list)
    longitudinal: list[VisitSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        assoc = {k: v for k, v in asdict(self.associations).items() if k != "difference"}
        diff = self.associations.difference
        if diff is not None:  # the heatmap's cells, every number the page draws
            assoc["matrix"] = {"columns": [str(c) for c in diff.columns],
                               "difference": [[None if pd.isna(v) else round(float(v), 4) for v in row] for row in diff.to_numpy()]}
        return {"columns": [asdict(c) for c in self.columns], "associations": assoc,
                "dimension_wise_probability": asdict(self.dimension_wise), "detection_auroc": self.detection_auroc,
                "marginals": [asdict(m) for m in self.marginals],
                "longitudinal": [asdict(v) for v in self.longitudinal]}


Frames = tuple[pd.DataFrame, pd.DataFrame, Schema]  # real, synthetic and the schema that describes them


def fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, seed: int = 0, *,
             associations_on: Frames | None = None, detection_on: Frames | None = None,
             detection_rows: int = 10_000, detection_folds: int = 5) -> FidelityResult:
    """Every fidelity number for one real/synthetic pair.

    The two parts whose cost grows beyond linear in the table, the association matrices (pairs of
    columns) and the detection classifier, run on ``associations_on`` / ``detection_on`` when given:
    the bounded views (fewer columns, rows or levels) that :mod:`clinsynth.evaluate.bounds` makes.
    The per-column scores, marginals and visit summaries always read every row and column."""
    shares = category_shares(real, synthetic, schema)
    return FidelityResult(column_scores(real, synthetic, schema, shares),
                          association_difference(*(associations_on or (real, synthetic, schema))),
                          dimension_wise_probability(real, synthetic, schema),
                          detection_auroc(*(detection_on or (real, synthetic, schema)), max_rows=detection_rows,
                                          folds=detection_folds, seed=seed),
                          marginals(real, synthetic, schema, shares=shares),
                          longitudinal_summaries(real, synthetic, schema))
