"""What a DP model's schema took from where: structure, declared public, released — and how.

Read from the released schema and a release's record (:meth:`clinsynth.privacy.statistics.DPRelease.record`),
for the console, the guarantee page and the report.
"""
from __future__ import annotations

from typing import Any

from clinsynth.privacy.statistics import RARE_LABEL
from clinsynth.schema import Schema


def _columns_of(queries: list[dict[str, Any]], facts: str, *outcomes: str) -> list[str]:
    return [c for q in queries if q["facts"].startswith(facts) and q["outcome"].startswith(outcomes) for c in q["columns"]]


def relabelled(queries: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """A release's queries with the columns a model derived (a gap between visits, visits per
    patient…) under the names a user reads (``labels``) instead of their internal ones."""
    return [{**q, "columns": [labels.get(c, c) for c in q["columns"]]} for q in queries]


def estimation_summary(release: dict[str, Any] | None) -> dict[str, Any]:
    """How the released facts were estimated, from a release's :meth:`DPRelease.record`: the
    budget share, and which columns' bounds came from the fine grid, a coarser grid or the public
    default, and which categorical columns kept one category or were suppressed."""
    if not release or not release.get("queries"):
        return {}
    queries, budget = release["queries"], release.get("budget", {})
    return {"share": budget.get("share"), "base_share": budget.get("base_share"),
            "raised": bool(budget) and budget.get("share", 0) > budget.get("base_share", 0),
            "fine_grid": _columns_of(queries, "bounds", "fine grid"),
            "coarser_grid": _columns_of(queries, "bounds", "coarser grid"),
            "public_default": _columns_of(queries, "bounds", "public default"),
            "unrounded": _columns_of(queries, "kind", "continuous, no evidence"),
            "one_category": _columns_of(queries, "categories", "one category"),
            "suppressed": _columns_of(queries, "categories", "suppressed")}


def _estimation_text(est: dict[str, Any]) -> list[str]:
    parts = []
    if est.get("share") is not None:
        parts.append(f"the public facts took {est['share']:.0%} of the budget"
                     + (f" (raised from {est['base_share']:.0%}: few records per column)" if est["raised"] else ""))
    located = [f"the fine grid for {len(est['fine_grid'])} column(s)"] if est["fine_grid"] else []
    if est["coarser_grid"]:
        located.append(f"a coarser grid for {', '.join(est['coarser_grid'])}")
    if located:
        parts.append("bounds from " + " and ".join(located))
    if est["public_default"]:
        parts.append(f"no value located, public default bounds for {', '.join(est['public_default'])}")
    if est["unrounded"]:
        parts.append(f"no evidence of a precision, values unrounded for {', '.join(est['unrounded'])}")
    if est["one_category"]:
        parts.append(f"one category released, rarer values merged, for {', '.join(est['one_category'])}")
    if est["suppressed"]:
        parts.append(f"no category released, values written as {RARE_LABEL!r}, for {', '.join(est['suppressed'])}")
    return parts


def schema_facts(schema: Schema, release: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a DP model's schema took from structure only, what the steward declared public and
    what went through the ledger — and, given the release's record (a model's ``facts_``), how:
    at what share of the budget, which columns fell back to a coarser grid or a public default,
    which categories were merged — for the console and the guarantee page. ``schema`` is the
    released one (a model's ``schema_``): ``public`` marks declared columns there."""
    model = schema.model_columns
    declared = [c.name for c in model if c.public]
    released = [c.name for c in model if not c.public]
    ids = [c.name for c in schema.columns if c.kind == "id"]
    structure = [f"{len(schema.columns)} column names", "each column's value type (number, text, true/false, date)"] \
        if schema.columns else []
    if schema.codes is not None:
        structure.append(f"a {'presence' if schema.codes.binary else 'count'} code block")
    if schema.target is not None:
        structure.append(f"target '{schema.target}'")
    if schema.longitudinal:
        structure.append(f"{len(schema.longitudinal)} longitudinal group(s) by column name")
    if ids:
        structure.append(f"identifier column(s) {', '.join(ids)} (not modelled)")
    structure.append("the number of records")
    parts = [f"DP schema — from structure only: {', '.join(structure)}"]
    if declared:
        parts.append(f"declared public: {', '.join(declared)}")
    if released:
        parts.append(f"released through the ledger: kind, decimals, bounds, categories, missing policy "
                     f"(and so dtype) of {len(released)} column(s)")
    if schema.codes is not None:
        kept = len(schema.codes.vocabulary or [])
        parts.append("code vocabulary declared public" if schema.codes.public else
                     f"code vocabulary released through the ledger ({kept:,} code{'s' * (kept != 1)} kept: a code "
                     "whose noisy patient count did not clear the threshold is never sampled)")
    estimation = estimation_summary(release)
    parts.extend(_estimation_text(estimation) if estimation else [])
    return {"structure": structure, "declared_public": declared, "released": released,
            "estimation": estimation, "summary": "; ".join(parts)}


