"""How much work one evaluation may do: the levels ``full``, ``fast`` and ``none``, and the caps
that keep ``full`` finite.

Why: the cost of an evaluation grows with the target's classes (gradient boosting fits one tree
per class per round: 200 classes on 1,000 rows ran past 400 s), with columns (pairwise
associations are quadratic, every model and distance grows with the width: 10,000 columns ran
past 500 s) and with rows (200,000 rows took 330 s). Each limit caps one of these, and whatever a
cap changes is recorded, so metrics.json (``evaluation.capped``) and the report say what was
scored on less. Where no cap applies, ``full`` computes exactly what the parts compute alone.

``full`` — every part, within these caps (the ``MAX_…`` constants):

* **classes**: a target of more than ``MAX_CLASSES`` (20) classes is scored in utility on its 20
  most common classes in the real training data, the rest pooled as "other";
* **levels**: a categorical column of more than ``MAX_LEVELS`` (20) levels keeps its 20 most common
  (real training data) and pools the rest as "other" wherever a model, a distance or a
  contingency table is built from it: utility features, detection, Cramér's V, the attacks'
  record distance. Per-column total variation and the marginal plots use every level (linear);
* **columns**: above ``MAX_COLUMNS`` (100) columns, associations, detection, the utility models
  and the distance attacks see the target, the sensitive and quasi-identifier columns and a
  seeded sample of the others, in schema order. Per-column scores, marginals, exact copies and
  k-anonymity use every column (their cost is linear);
* **rows**: above ``MAX_ROWS`` (50,000) rows per table, the utility models train and are scored
  on a seeded sample and the associations are computed on one. Detection already compares
  10,000 rows per side. Per-column scores, exact copies and k-anonymity use every row;
* **nearest neighbours**: an attack's search compares at most ``MAX_PAIRS`` (2·10⁹) query ×
  reference pairs: the queries (at most ``max_queries``, 20,000) are cut to
  ``MAX_PAIRS // reference rows``, never below ``MIN_QUERIES`` (1,000). The references stay whole,
  so a copy of any training row is still found; fewer queries only widen the intervals.

``fast`` — the same parts on less, about an order of magnitude cheaper on large tables (see
``bench/bench_evaluate.py``): one utility model (logistic regression, the cheapest of the three)
with 50 bootstrap rounds and no permutation importance; 10,000 rows per table for utility and
associations; detection on 2,000 rows per side with 3 folds; at most 30 columns in the expensive
parts; 2,000 attack queries. Code matrices: 10 predicted codes, co-occurrence of the 50 commonest
codes, 5,000 training rows per regression, 2,000 attack queries.

``none`` — no real-data evaluation at all: the report holds the privacy guarantee and ledger and
the model's description, and every evaluation verdict says it was skipped.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.errors import ConfigError
from clinsynth.schema import DISCRETE_KINDS, Schema

MAX_CLASSES = 20
MAX_LEVELS = 20
MAX_COLUMNS = 100
MAX_ROWS = 50_000
MAX_PAIRS = 2_000_000_000
MIN_QUERIES = 1_000
#: The label a pooled class or level takes (another spelling if the data already use it).
OTHER = "other"


@dataclass(frozen=True)
class Limits:
    """The work limits of one evaluation level (see the module docstring for what each bounds)."""

    level: str
    evaluate: bool = True  # False: no real-data evaluation at all
    max_classes: int = MAX_CLASSES
    max_levels: int = MAX_LEVELS
    max_columns: int = MAX_COLUMNS
    max_rows: int = MAX_ROWS
    detection_rows: int = 10_000
    detection_folds: int = 5
    classifiers: tuple[str, ...] = ("logistic_regression", "random_forest", "gradient_boosting")
    n_bootstrap: int = 200
    importance: bool = True
    max_queries: int = 20_000
    max_pairs: int = MAX_PAIRS
    min_queries: int = MIN_QUERIES
    code_top_k: int = 50
    code_top_codes: int = 200
    code_train_rows: int = 20_000

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


LEVELS: dict[str, Limits] = {
    "full": Limits("full"),
    "fast": Limits("fast", max_columns=30, max_rows=10_000, detection_rows=2_000, detection_folds=3,
                   classifiers=("logistic_regression",), n_bootstrap=50, importance=False, max_queries=2_000,
                   code_top_k=10, code_top_codes=50, code_train_rows=5_000),
    "none": Limits("none", evaluate=False),
}


def limits_for(level: str) -> Limits:
    """The limits of ``level``; a one-line error for anything but full, fast or none."""
    if level not in LEVELS:
        raise ConfigError(f"evaluation level {level!r} is not known: choose full, fast or none "
                          "(e.g. --evaluate fast for a cheaper evaluation, none to skip it)")
    return LEVELS[level]


# --- text keys ---------------------------------------------------------------------------------
def level_text(value: Any) -> str:
    """A category level as text, the key real and synthetic levels are matched by: a whole-number
    float as the whole number ("1", not "1.0"), since a CSV reads a 0/1 column as floats while a
    model (or a DP release that made it a flag) writes it as integers; anything else as ``str``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def as_text(s: pd.Series) -> pd.Series:
    """Values as text (:func:`level_text`), missing kept missing: how the models and tables compare levels."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    labels = np.array([level_text(u) for u in uniques] + [np.nan], dtype=object)
    return pd.Series(labels[codes], index=s.index, dtype=object)


def top_levels(text: pd.Series, k: int, order: Sequence[str] | None = None) -> list[str]:
    """The ``k`` most common values of ``text`` (missing not counted); ties go to the earlier value
    of ``order`` (default: sorted text), so the choice does not depend on row order."""
    counts = text.value_counts(dropna=True)
    rank = {v: i for i, v in enumerate(order if order is not None else sorted(counts.index))}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], rank.get(kv[0], len(rank)), kv[0]))
    return [v for v, _ in ranked[:k]]


def other_label(existing: Iterable[str]) -> str:
    """``OTHER``, or a spelling of it no level already uses."""
    taken = set(existing)
    label, n = OTHER, 0
    while label in taken:
        n += 1
        label = f"{OTHER} ({n})" if n > 1 else f"({OTHER})"
    return label


def _pool(text: pd.Series, keep: set[str], other: str) -> pd.Series:
    return text.where(text.isna() | text.isin(keep), other)


# --- columns -------------------------------------------------------------------------------------
def attack_columns(schema: Schema) -> list[str]:
    """Columns the attacks cannot do without: the target, sensitive and quasi-identifier columns."""
    return [c.name for c in schema.model_columns if c.name == schema.target or c.sensitive or c.quasi_identifier]


def sample_columns(schema: Schema, max_columns: int, seed: int = 0,
                   keep: Sequence[str] = ()) -> tuple[Schema, dict[str, int] | None]:
    """At most ``max_columns`` model columns: those in ``keep`` (and the target), then a seeded sample
    of the others, in schema order. Returns the schema itself and no cap when nothing is dropped,
    else a copy holding only those columns (identifiers and longitudinal groups left out) and the cap."""
    names = [c.name for c in schema.model_columns]
    if len(names) <= max_columns:
        return schema, None
    must = [n for n in names if n in set(keep) or n == schema.target][:max_columns]
    rest = [n for n in names if n not in set(must)]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 21]))
    chosen = set(must) | set(np.asarray(rest, dtype=object)[rng.choice(len(rest), max_columns - len(must), replace=False)])
    specs = [c for c in schema.model_columns if c.name in chosen]
    return schema.model_copy(update={"columns": specs, "longitudinal": []}), {"total": len(names), "kept": len(specs)}


# --- rows ----------------------------------------------------------------------------------------
def sample_rows(df: pd.DataFrame, max_rows: int, seed: int = 0, stream: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``df``, a seeded sample in the original order (``df`` itself when
    it is small enough). ``stream`` tells apart the tables sampled with one seed."""
    if len(df) <= max_rows:
        return df
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 22, int(stream)]))
    return df.iloc[np.sort(rng.choice(len(df), max_rows, replace=False))]


def attack_queries(max_queries: int, n_train: int, n_test: int, n_synthetic: int, limits: Limits) -> int:
    """How many queries the attacks may ask so that no nearest-neighbour search compares more than
    ``limits.max_pairs`` query × reference pairs (never fewer than ``limits.min_queries``)."""
    budget = limits.max_pairs // max(n_train + n_test, n_synthetic, 1)
    return int(max(2, min(max_queries, limits.max_queries, max(limits.min_queries, budget))))


# --- classes and levels --------------------------------------------------------------------------
def level_caps(real: pd.DataFrame, schema: Schema, max_levels: int,
               columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """For each categorical column (of ``columns``, default all) with more than ``max_levels`` levels in
    ``real``: its level count, the levels kept (``max_levels`` + "other") and the share of ``real``'s
    rows pooled as "other"."""
    caps = []
    wanted = None if columns is None else set(columns)
    for spec in schema.model_columns:
        if spec.kind not in DISCRETE_KINDS or (wanted is not None and spec.name not in wanted):
            continue
        text = as_text(real[spec.name])
        counts = text.value_counts(dropna=True)
        if len(counts) > max_levels:
            kept = counts.loc[top_levels(text, max_levels)].sum()
            caps.append({"column": spec.name, "total": int(len(counts)), "kept": max_levels + 1,
                         "other_share": float(1 - kept / max(int(text.notna().sum()), 1))})
    return caps


def pool_levels(frames: Sequence[pd.DataFrame], schema: Schema, max_levels: int,
                columns: Sequence[str] | None = None) -> tuple[list[pd.DataFrame], list[dict[str, Any]]]:
    """Categorical columns of more than ``max_levels`` levels in ``frames[0]`` (the real training
    data) as text, their ``max_levels`` most common levels kept and the rest "other" in every frame
    (missing stays missing). Returns the frames (copies only where a column changed) and the caps."""
    caps = level_caps(frames[0], schema, max_levels, columns)
    out = list(frames)
    for cap in caps:
        name = cap["column"]
        texts = [as_text(f[name]) for f in out]
        keep = set(top_levels(texts[0], max_levels))
        other = other_label(set(texts[0].dropna()))
        out = [f.assign(**{name: _pool(t, keep, other)}) for f, t in zip(out, texts)]
    return out, caps


def pool_target(frames: Sequence[pd.DataFrame], schema: Schema, max_classes: int,
                labels_of: Any) -> tuple[list[pd.DataFrame], Schema, dict[str, Any] | None]:
    """A target of more than ``max_classes`` classes as its ``max_classes`` most common classes in
    ``frames[0]`` plus "other", in every frame and in the schema's categories (kept classes in schema
    order, "other" last). ``labels_of(values, labels)`` gives the target as the schema's text
    (utility's ``target_labels``)."""
    target = schema.target
    labels = [str(c) for c in schema.column(target).categories or []] if target is not None else []
    if len(labels) <= max_classes:
        return list(frames), schema, None
    texts = [pd.Series(labels_of(f[target], labels), index=f.index, dtype=object) for f in frames]
    keep = set(top_levels(texts[0], max_classes, order=labels))
    other = other_label(labels)
    kept = [c for c in labels if c in keep]
    out = [f.assign(**{target: _pool(t, keep, other)}) for f, t in zip(frames, texts)]
    pooled = schema.model_copy(update={"columns": [c.model_copy(update={"categories": kept + [other]})
                                                   if c.name == target else c for c in schema.columns]})
    observed = int(texts[0].notna().sum())
    share = float((texts[0].notna() & ~texts[0].isin(keep)).sum() / max(observed, 1))
    return out, pooled, {"column": target, "total": len(labels), "kept": len(kept) + 1, "other_share": share,
                         "other": other}
