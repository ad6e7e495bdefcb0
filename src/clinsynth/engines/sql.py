"""SQL expressions for the counting models' statistics, generated once from the schema, the
encoder and the network's variables; DuckDB and Spark SQL run the same text — plain ``CASE``,
comparisons and arithmetic. The few things the two dialects spell differently (identifier and
string quoting, half-even rounding, a row hash, exact quantiles, small integer types) are one
:class:`Dialect` each (:data:`DUCKDB`, :data:`SPARK`), passed as ``d`` to what needs it.

Each expression mirrors, value for value, the numpy code the pandas path runs:

* :func:`searchsorted` is ``np.searchsorted(edges, x, side="right")`` as a balanced ``CASE`` tree
  (log₂ edges comparisons a row) for bins and state cuts; :func:`bucket` finds a number-grid
  bucket from the grid's formula, checked against the exact edges (:func:`grid_count`: a
  601-edge tree was most of a value histogram's time in Spark);
* :func:`number_format` is :func:`clinsynth.privacy.formats.number_formats`;
* :func:`fold` is :func:`clinsynth.models.bayesnet.fold_labels`, from the row's position;
* :func:`clip`, ``round_even`` and the gap fill of ``DuckDBTable.number`` are
  :func:`clinsynth.privacy.conform.conform` for one number column under a DP release, and
  :func:`category_code` with its fallbacks is ``conform`` + ``CategoricalCodec.codes``;
* ``SqlTable._state_sql`` (``engines/table.py``) puts these together as ``BayesNet._discretise``, one variable each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinsynth.engines.source import text  # noqa: F401 (DuckDB's, re-exported)
from clinsynth.privacy.formats import MAX_DECIMALS, NUMBER_FORMATS

INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT")


@dataclass(frozen=True)
class Dialect:
    """How one SQL engine spells what standard SQL leaves open; everything else is shared text."""

    name: str
    #: the engine's name in a message
    label: str
    #: identifier quote character (a doubled one inside the name)
    ident: str
    #: a string literal's escape for ``'`` (SQL's doubled quote, or a backslash)
    backslash_escapes: bool
    #: integer types for a state number below 256 and below 65,536
    state_types: tuple[str, str]

    def quote(self, name: str) -> str:
        """A SQL identifier, quoted."""
        return self.ident + name.replace(self.ident, self.ident * 2) + self.ident

    def text(self, value: str) -> str:
        """A SQL string literal."""
        if self.backslash_escapes:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "'" + value.replace("'", "''") + "'"

    def round_even(self, expr: str, digits: int) -> str:
        """``expr`` rounded half to even at ``digits`` decimals (pandas' ``round``: ``rint(x·10ᵈ)/10ᵈ``)."""
        if self.name == "duckdb":
            return f"round_even({expr}, {int(digits)})"
        scale = number(10.0 ** int(digits))
        return f"(rint({expr} * {scale}) / {scale})"

    def row_hash(self, seed: int, columns: list[str], buckets: int) -> str:
        """A hash of the row's ``columns`` and ``seed`` in [0, buckets) (each engine's own hash)."""
        cols = ", ".join(self.quote(c) for c in columns)
        if self.name == "duckdb":
            return f"(hash({int(seed)}, {cols}) % {int(buckets)})"
        return f"pmod(xxhash64({int(seed)}, {cols}), {int(buckets)})"

    def quantiles(self, expr: str, probs: list[float]) -> str:
        """Exact quantiles of ``expr`` at ``probs``, interpolated linearly as ``np.quantile``."""
        if self.name == "duckdb":
            return f"quantile_cont({expr}, [{', '.join(map(repr, probs))}])"
        return f"percentile({expr}, array({', '.join(map(repr, probs))}))"

    def array(self, items: list[str]) -> str:
        """An array (list) of the SQL expressions ``items``."""
        return f"[{', '.join(items)}]" if self.name == "duckdb" else f"array({', '.join(items)})"

    def element(self, array: str, index: str) -> str:
        """The element of ``array`` at the 0-based ``index`` (which must lie inside it)."""
        if self.name == "duckdb":
            return f"({array})[({index}) + 1]"
        return f"element_at({array}, ({index}) + 1)"

    def state_type(self, states: int) -> str:
        """The smallest integer type the engine stores a state number of ``states`` states in."""
        return self.state_types[0] if states <= 255 else self.state_types[1]


DUCKDB = Dialect("duckdb", "DuckDB", '"', False, ("UTINYINT", "USMALLINT"))
#: Spark SQL: backquoted names, backslash escapes in strings, no unsigned types
SPARK = Dialect("spark", "Spark", "`", True, ("SMALLINT", "INT"))


def number(x: float) -> str:
    """A double literal that reads back as exactly ``x`` (text → double is correctly rounded)."""
    x = float(x)
    if math.isnan(x):
        return "CAST('NaN' AS DOUBLE)"
    if math.isinf(x):
        return f"CAST('{'' if x > 0 else '-'}Infinity' AS DOUBLE)"
    return f"CAST('{x!r}' AS DOUBLE)"


def literal(value: Any, d: Dialect = DUCKDB) -> str:
    """A category label as a SQL literal of its own type."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number(value)
    return d.text(str(value))


def searchsorted(expr: str, edges: np.ndarray | list[float], side: str = "right") -> str:
    """How many ``edges`` (sorted) are ≤ ``expr`` (``side="left"``: < ``expr``):
    ``np.searchsorted(edges, x, side)``. NaN counts every edge, as numpy sorts it last."""
    edges = [float(e) for e in edges]
    below = "<" if side == "right" else "<="  # expr below this edge: the count is at most its index

    def tree(lo: int, hi: int) -> str:  # the count lies in [lo, hi]
        if lo == hi:
            return str(lo)
        mid = (lo + hi) // 2
        return f"CASE WHEN {expr} {below} {number(edges[mid])} THEN {tree(lo, mid)} ELSE {tree(mid + 1, hi)} END"

    return tree(0, len(edges))


def value_state(expr: str, lo: np.ndarray, hi: np.ndarray) -> str:
    """:func:`clinsynth.models.bayesnet.value_states`: a numeric variable's state."""
    point = lo == hi
    if point.all() or not point.any():
        return searchsorted(expr, (lo[1:] + hi[:-1]) / 2)
    # an exact value's state is the first state starting at it (it sits before the bin starting
    # there): the count of states starting below it. One set test, not one comparison per value
    exact = ", ".join(number(lo[i]) for i in np.flatnonzero(point))
    return (f"(CASE WHEN {expr} IN ({exact}) THEN {searchsorted(expr, lo, side='left')} "
            f"ELSE greatest(0, {searchsorted(expr, lo)} - 1) END)")


def bucket(expr: str, edges: np.ndarray, d: Dialect = DUCKDB) -> str:
    """:func:`clinsynth.privacy.histograms.bucket`: the grid bucket, values off the grid at its ends.
    Edges on the number grid (the fine grid, or the coarse grid's subset of it) are found by the
    grid's formula (:func:`grid_count`); any others by a search tree."""
    count = grid_count(expr, edges, d)
    return f"greatest(0, least({len(edges) - 2}, {count if count is not None else searchsorted(expr, edges)} - 1))"


def grid_count(expr: str, edges: np.ndarray, d: Dialect = DUCKDB) -> str | None:
    """``searchsorted(expr, edges)`` when ``edges`` are fine number-grid edges (None otherwise), by
    arithmetic instead of a 601-edge search tree: the fine count is guessed from the grid's formula
    (``floor(asinh(|x| / unit)·sign(x) / step) + half + 1``), corrected by one either way against
    the exact edges (the guess's rounding moves it by less than one bucket), then mapped to the count
    of ``edges`` by a table. So the bucket is numpy's exactly, NaN included (above every edge)."""
    from clinsynth.privacy.histograms import grid_edges, number_grid

    fine = grid_edges("continuous")
    edges = np.asarray(edges, dtype=float)
    at = np.searchsorted(fine, edges)
    if edges.size < 2 or at[-1] >= fine.size or not np.array_equal(fine[at], edges):
        return None
    unit, step, half = number_grid()
    n = fine.size
    # the guess, clamped in t first: NaN sorts above every number in both engines, so it lands on n
    t = f"(sign({expr}) * asinh(abs({expr}) / {number(unit)}) / {number(step)})"
    guess = f"CAST(floor(least(greatest({t}, {-half - 1}), {half + 1})) + {half + 1} AS INTEGER)"
    guess = f"least(greatest({guess}, 0), {n})"
    # the edges padded with -inf and +inf: the k-th count lies between padded[k] and padded[k + 1]
    padded = d.array([number(-math.inf)] + [number(e) for e in fine] + [number(math.inf)])
    count = (f"({guess} - CAST({expr} < {d.element(padded, guess)} AS INTEGER) "
             f"+ CAST({expr} >= {d.element(padded, f'{guess} + 1')} AS INTEGER))")
    count = f"least({count}, {n})"
    if edges.size == n:
        return count
    # fine count k → count of edges: those ≤ fine[k − 1] (every edge is a fine edge)
    table = np.concatenate([[0], np.searchsorted(edges, fine, side="right")])
    return d.element(d.array([str(int(c)) for c in table]), count)


def number_format(expr: str, tolerance: float | str) -> str:
    """:func:`clinsynth.privacy.formats.number_formats` of one observed value (``tolerance``: a
    number, or a SQL expression giving it)."""
    tol = tolerance if isinstance(tolerance, str) else number(tolerance)
    atol = f"{tol} * greatest(1.0, abs({expr}))"
    cases = [f"WHEN {expr} = 0 THEN 1", f"WHEN {expr} = 1 THEN 2"]
    cases += [f"WHEN abs(round({expr}, {d}) - {expr}) <= {atol} THEN {3 + d}" for d in range(MAX_DECIMALS + 1)]
    return f"CASE {' '.join(cases)} ELSE {len(NUMBER_FORMATS) - 1} END"


def fold(position: str, seed: int, folds: int) -> str:
    """:func:`clinsynth.models.bayesnet.fold_labels` of the row at ``position`` (0-based)."""
    from clinsynth.models.bayesnet import _FOLD_PRIME, fold_hash

    a, b = fold_hash(seed)
    return f"((({position}) * {a} + {b}) % {_FOLD_PRIME}) % {folds}"


def clip(expr: str, lo: float, hi: float) -> str:
    """``expr`` clipped into [lo, hi], NULL and NaN kept (as pandas' ``clip``; SQL's ``greatest``
    would turn NULL into the bound, and NaN sorts above every number)."""
    return (f"(CASE WHEN isnan({expr}) THEN {expr} WHEN {expr} < {number(lo)} THEN {number(lo)} "
            f"WHEN {expr} > {number(hi)} THEN {number(hi)} ELSE {expr} END)")


def as_double(column: str, sql_type: str, d: Dialect = DUCKDB) -> str:
    """A column read as numbers (NULL where it is missing or not a number), as ``numeric_values``."""
    if sql_type in INTEGER_TYPES or sql_type in ("DOUBLE", "FLOAT", "REAL") or sql_type.startswith("DECIMAL"):
        return f"CAST({d.quote(column)} AS DOUBLE)"
    return f"TRY_CAST({d.quote(column)} AS DOUBLE)"


def observed(expr: str) -> str:
    """Whether a number is observed (not NULL, not NaN)."""
    return f"({expr} IS NOT NULL AND NOT isnan({expr}))"


def last_visit(groups: list[Any], d: Dialect = DUCKDB) -> str:
    """:func:`clinsynth.schema.last_observed_visit`: the last visit (1-based) with any measure, 0 for none."""
    visits = len(groups[0].visits)
    cases = []
    for j in range(visits, 0, -1):
        seen = " OR ".join(f"{d.quote(g.columns[j - 1])} IS NOT NULL" for g in groups)
        cases.append(f"WHEN {seen} THEN {j}")
    return f"(CASE {' '.join(cases)} ELSE 0 END)"


def after_dropout(schema: Any, d: Dialect = DUCKDB) -> dict[str, str]:
    """Per longitudinal column of a dropout timeline, a condition true where the participant had left
    (``Schema._after_dropout``)."""
    out = {}
    for visits, groups in schema.timelines():
        if not all(g.dropout for g in groups):
            continue
        last = last_visit(groups, d)
        for g in groups:
            for j, c in enumerate(g.columns):
                out[c] = f"({last} < {j + 1})"
    return out


def category_code(column: str, categories: list[Any], if_null: int, if_unknown: int, d: Dialect = DUCKDB) -> str:
    """Index of the value in ``categories`` (``CategoricalCodec.codes``)."""
    col = d.quote(column)
    cases = " ".join(f"WHEN {col} = {literal(c, d)} THEN {k}" for k, c in enumerate(categories))
    null = f"WHEN {col} IS NULL THEN {if_null}"
    if any(isinstance(c, float) for c in categories) or not categories:
        null += f" WHEN TRY_CAST({col} AS DOUBLE) = {number(math.nan)} THEN {if_null}"
    return f"(CASE {cases} {null} ELSE {if_unknown} END)"
