"""The three parts of a table evaluation, each run on the bounded view its level allows.

The suite calls these; each builds the view (columns, rows, classes and levels capped as
:mod:`clinsynth.evaluate.bounds` documents), runs the pure metric functions on it and appends
to ``capped`` one record per cap that applied: ``{"part", "what", "column" or "table", "total",
"kept", …}``. Where no cap applies, the view is the input itself and the numbers are the ones the
metric functions give on their own.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from clinsynth.evaluate import bounds
from clinsynth.evaluate.bounds import Limits
from clinsynth.schema import DISCRETE_KINDS, Schema

Capped = list[dict[str, Any]]


def _columns(schema: Schema, limits: Limits, seed: int, part: str, capped: Capped,
             keep: list[str] | None = None) -> Schema:
    sub, cap = bounds.sample_columns(schema, limits.max_columns, seed, keep=keep or [])
    if cap is not None:
        capped.append({"part": part, "what": "columns", **cap})
    return sub


def _levels(frames: list[pd.DataFrame], schema: Schema, limits: Limits, part: str, capped: Capped,
            skip: str | None = None) -> list[pd.DataFrame]:
    columns = [c.name for c in schema.model_columns if c.kind in DISCRETE_KINDS and c.name != skip]
    frames, caps = bounds.pool_levels(frames, schema, limits.max_levels, columns)
    capped.extend({"part": part, "what": "category levels", **c} for c in caps)
    return frames


def _rows(named: dict[str, pd.DataFrame], limits: Limits, seed: int, part: str, capped: Capped) -> list[pd.DataFrame]:
    out = []
    for stream, (table, df) in enumerate(named.items()):
        sampled = bounds.sample_rows(df, limits.max_rows, seed, stream)
        if len(sampled) < len(df):
            capped.append({"part": part, "what": "rows", "table": table, "total": len(df), "kept": len(sampled)})
        out.append(sampled)
    return out


def single_threaded_openmp() -> Any:
    """A context in which OpenMP loops (gradient boosting's) run on one thread.

    Gradient boosting parallelises each tree node over a few threads; on the tables evaluation
    fits (at most ``MAX_ROWS`` rows) those regions are too short to pay off, and on a machine
    whose cores are busy their spin-waits make them far slower: on 2 shared cores, one 200-round
    fit took 0.8 s on one thread against 20 s on two at 5,000 rows × 20 columns (1.5 s against 53 s
    at 50,000), and 5.3 s against 87 s for a 21-class target on 1,000 rows. The predictions are
    identical either way."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def bounded_fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, limits: Limits, seed: int,
                     capped: Capped) -> Any:
    """Fidelity: per-column scores, marginals and visit summaries on everything; associations and
    detection on at most ``max_columns`` columns with categories pooled to ``max_levels``;
    associations also on at most ``max_rows`` rows per table."""
    from clinsynth.evaluate.fidelity import fidelity

    views = {}
    for part in ("associations", "detection"):
        sub = _columns(schema, limits, seed, part, capped)
        views[part] = (*_levels([real, synthetic], sub, limits, part, capped), sub)
    r, s, sub = views["associations"]
    views["associations"] = (*_rows({"real training": r, "synthetic": s}, limits, seed, "associations", capped), sub)
    return fidelity(real, synthetic, schema, seed=seed, associations_on=views["associations"],
                    detection_on=views["detection"], detection_rows=limits.detection_rows,
                    detection_folds=limits.detection_folds)


def bounded_utility(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
                    limits: Limits, seed: int, capped: Capped) -> Any:
    """TSTR/TRTR on at most ``max_columns`` columns (the target kept) and ``max_rows`` rows per
    table, the target pooled to ``max_classes`` classes and the features to ``max_levels`` levels,
    with the level's classifiers, bootstrap rounds and importance."""
    from clinsynth.evaluate.utility import target_labels, tstr

    sub = _columns(schema, limits, seed, "utility", capped)
    frames = _rows({"real training": real_train, "real holdout": real_test, "synthetic": synthetic}, limits, seed,
                   "utility", capped)
    frames, sub, target_cap = bounds.pool_target(frames, sub, limits.max_classes, target_labels)
    if target_cap is not None:
        capped.append({"part": "utility", "what": "target classes", **target_cap})
    frames = _levels(frames, sub, limits, "utility", capped, skip=sub.target)
    with single_threaded_openmp():
        result = tstr(*frames, sub, classifiers=limits.classifiers, seed=seed, n_bootstrap=limits.n_bootstrap,
                      importance=limits.importance)
    if target_cap is not None:
        result.notes.insert(0, f"{sub.target!r} has {target_cap['total']} classes: scored on its "
                               f"{target_cap['kept'] - 1} most common in the real training data, the rest "
                               f"({target_cap['other_share']:.0%} of training rows) pooled as {target_cap['other']!r}")
    return result


def bounded_attacks(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
                    limits: Limits, seed: int, max_queries: int, capped: Capped) -> Any:
    """Every attack; the distance attacks compare at most ``max_columns`` columns (target, sensitive
    and quasi-identifier columns kept) with categories pooled to ``max_levels``, and ask at most as
    many queries as keep each nearest-neighbour search within ``max_pairs`` pairs."""
    from clinsynth.evaluate.privacy import privacy_attacks

    part = "privacy attacks"
    sub = _columns(schema, limits, seed, part, capped, keep=bounds.attack_columns(schema))
    capped.extend({"part": part, "what": "category levels", **c}
                  for c in bounds.level_caps(real_train, sub, limits.max_levels))
    queries = bounds.attack_queries(max_queries, len(real_train), len(real_test), len(synthetic), limits)
    if queries < min(max_queries, len(synthetic)):
        capped.append({"part": part, "what": "nearest-neighbour queries", "total": min(max_queries, len(synthetic)),
                       "kept": queries})
    columns = [c.name for c in sub.model_columns] if sub is not schema else None
    return privacy_attacks(real_train, real_test, synthetic, schema, max_queries=queries, seed=seed,
                           distance_columns=columns, max_levels=limits.max_levels)
