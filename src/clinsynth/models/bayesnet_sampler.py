"""Ancestral sampling of a fitted Bayesian network, compiled once into flat look-up tables.

Why compiled: the network is small (a few dozen tables) and the draws are many, so each draw
must cost a handful of whole-column array operations per variable and nothing per row. Each
variable becomes

* a look-up grid per parent configuration (inverse CDF by table look-up, :class:`TableSampler`);
* for each parent, an offset indexed by the parent's drawn *cell* (configuration × state), so a
  child finds its grid row by adding gathers, without first decoding the parent's state;
* for a numeric variable, an affine map from the *same* uniform to a value within the drawn bin:
  given that u fell in the state's CDF interval [c, c + p), (u − c) / p is again uniform, so
  value = lo + (u − c)/p · width = shift[cell] + u · slope[cell]. One uniform per variable.

Values come out in the encoder's units (or, for an affine encoding, folded into column units) and
codes as the encoder's softmax indices, ready for ``TableEncoder.decode_parts``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .bayesnet_kernel import Block, FlatNetwork, WorkBuffers, compiled_kernel

_BITS = 31         # uniforms are whole numbers below 2**31: exact comparisons, no float conversion
_GRID_BITS = 10    # look-up cells per configuration (1024): few enough to build fast, enough that steps are rare
_BLOCK_CELLS = 262_144  # variables × rows drawn at once: work arrays of a few MB, reused block to block
_MIN_BLOCK = 4_096      # rows: fewer and numpy's per-call overhead dominates
_NO_LABELS = np.zeros(0, dtype=np.int16)  # the kernel reads an empty label array as "no target"


def uniform_bits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform whole numbers in [0, 2**31), as uint32: half a raw 64-bit draw each, the cheapest way
    numpy gives random numbers (about twice as fast as float32 uniforms)."""
    size = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((size + 1) // 2).view(np.uint32)[:size]
    np.right_shift(raw, np.uint32(32 - _BITS), out=raw)
    return raw.reshape(shape)


class TableSampler:
    """Draws states from the rows of a (configs × states) probability table by inverse CDF, fast.

    Uniforms are whole numbers u < 2**31 (:func:`uniform_bits`): state s is drawn when
    T[s-1] ≤ u < T[s], T = ⌈CDF · 2**31⌉ — exactly the state a binary search of the CDF gives for
    u / 2**31. A look-up grid of 1024 cells per row gives each draw the first state whose threshold
    passes its cell's left edge; the few draws in a cell holding a step are moved on by comparison.
    """

    grid = 1 << _GRID_BITS

    def __init__(self, probs: np.ndarray):
        configs, size = probs.shape
        cdf = np.cumsum(probs, axis=1)
        cdf /= cdf[:, -1:]
        thresholds = np.ceil(cdf * 2.0**_BITS)
        thresholds[:, -1] = 2.0**_BITS  # every u stops at the last state at the latest
        self.size = size
        self.thresholds = thresholds.astype(np.uint32).ravel()
        cell = 2.0 ** (_BITS - _GRID_BITS)
        left = np.arange(self.grid, dtype=np.float64) * cell
        start = np.stack([np.searchsorted(row, left, side="right") for row in thresholds])
        # a grid cell whose first candidate's threshold lies inside it holds a step: flagged by
        # storing the candidate as ~flat (negative), so only those draws are compared
        step = np.take_along_axis(thresholds, start, axis=1) < left + cell
        flat = (start + np.arange(configs)[:, None] * size).astype(np.int64)
        self.lookup = np.where(step, ~flat, flat).ravel()

    @staticmethod
    def grid_cells(u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Each uniform's look-up cell (int64), to which a row's ``config · grid`` is added."""
        if out is None:
            out = np.empty(u.shape, dtype=np.int64)
        return np.right_shift(u, np.uint32(_BITS - _GRID_BITS), out=out)

    def cells(self, row: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Flat cells (config · states + state) for look-up rows ``config · grid + grid_cells(u)``.

        ``out`` (int64), when given, is filled instead of a fresh array: fresh large arrays cost
        page faults that take as long as the gathers themselves."""
        flat = np.take(self.lookup, row, out=out, mode="clip")
        check = np.flatnonzero(flat < 0)
        if check.size:  # draws in a grid cell that holds a step: move on past every threshold ≤ u
            candidate, v = ~flat[check], u[check]
            moved = np.flatnonzero(v >= self.thresholds[candidate])
            while moved.size:
                candidate[moved] += 1
                moved = moved[v[moved] >= self.thresholds[candidate[moved]]]
            flat[check] = candidate
        return flat

    def __call__(self, config: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The state of each row ``config`` for uniforms ``u`` (whole numbers below 2**31)."""
        row = self.grid_cells(u)
        row += config * self.grid
        flat = self.cells(row, u)
        flat -= config * self.size
        return flat


class NetworkVariable(Protocol):
    """What sampling needs of a network variable (``bayesnet.Variable`` has it)."""

    name: str
    states: int
    coarse: list[int]
    lo: list[float] | None
    hi: list[float] | None
    missing: int | None
    blank: int | None
    visit: int | None
    timeline: str | None


@dataclass
class _Compiled:
    sampler: TableSampler
    parents: list[int]
    offsets: list[np.ndarray]      # per parent but the target: parent's flat cell -> grid-row offset
    by_target: int                 # grid-row offset per target class (0: the target is no parent)
    state: np.ndarray              # own flat cell -> state (int16, the codes' type)
    value_row: int | None          # numeric: row in the values output
    code_row: int | None           # categorical: row in the codes output; numeric: its missing flag's row
    flag: np.ndarray | None = None   # numeric with a missing state: flat cell -> 1 if missing
    shift: np.ndarray | None = None  # numeric: flat cell -> value = shift + u · slope
    slope: np.ndarray | None = None


@dataclass
class _Refill:
    """A dropout-timeline column's redraw at visits the participant attended (never "after dropout")."""

    variable: int
    timeline: int                  # the dropout variable whose state is the last visit attended
    attended: _Compiled            # the column as if its only parent were the target, blank ruled out
    is_blank: np.ndarray           # the variable's flat cell -> True if "after dropout"
    attends: np.ndarray            # the timeline's flat cell -> True if this visit was attended


class CompiledNetwork:
    """A fitted network (variables, parents, tables) ready to draw encoder-ready samples.

    ``value_rows``/``code_rows`` name the encoder's linear and softmax spans in output order; a
    numeric variable with a missing state writes its flag to the ``"<name>:missing"`` code row.
    ``units`` maps numeric variables to the (scale, loc) of an affine encoding: given for every
    one, values come out in column units (``decode_parts(..., scaled=False)``).
    """

    def __init__(self, variables: list[NetworkVariable], parents: list[list[int]], tables: list[np.ndarray],
                 order: list[int], target: int | None, *, value_rows: list[str], code_rows: list[str],
                 units: dict[str, tuple[float, float]] | None = None):
        self.variables, self.tables, self.order, self.target = variables, tables, order, target
        self.n_values, self.n_codes, self.units = len(value_rows), len(code_rows), units
        value_at = {name: j for j, name in enumerate(value_rows)}
        code_at = {name: j for j, name in enumerate(code_rows)}
        unit_of = lambda var: (units or {}).get(var.name, (1.0, 0.0))  # noqa: E731
        self.compiled = [self._compile(var, tables[v], parents[v], value_at, code_at, unit_of(var))
                         for v, var in enumerate(variables)]
        names = [var.name for var in variables]
        self.refills = [
            _Refill(v, names.index(var.timeline), self._compile(
                var, self._attended_table(v), [target] if self.compiled[v].by_target else [], value_at, code_at,
                unit_of(var)), self.compiled[v].state == var.blank,
                self.compiled[names.index(var.timeline)].state >= var.visit)
            for v, var in enumerate(variables) if var.blank is not None and var.timeline is not None]
        # the fused loops where numba is installed; the numpy passes otherwise (the same numbers)
        self.flat = (FlatNetwork.build(self.compiled, order, target, self.refills)
                     if compiled_kernel() is not None else None)

    def _attended_table(self, v: int) -> np.ndarray:
        """P(state | target) of variable ``v`` with "after dropout" ruled out (for attended visits)."""
        var, c, table = self.variables[v], self.compiled[v], self.tables[v]
        classes = self.variables[self.target].states if c.by_target else 1
        per_class = table.reshape(classes, -1, table.shape[1]).mean(axis=1)
        per_class[:, var.blank] = 0.0
        per_class[per_class.sum(axis=1) <= 0] = 1.0
        per_class[:, var.blank] = 0.0
        return per_class

    def _compile(self, var: NetworkVariable, table: np.ndarray, parents: list[int], value_at: dict[str, int],
                 code_at: dict[str, int], units: tuple[float, float]) -> _Compiled:
        configs, size = table.shape
        sampler = TableSampler(table)
        offsets, by_target, multiplier = [], 0, TableSampler.grid
        for p in reversed(parents):  # config = ((c_1 · n_2 + c_2) · n_3 + c_3) ...: last parent fastest
            parent = self.variables[p]
            if p == self.target:  # a categorical seen as itself: its offset is class · multiplier
                by_target = multiplier
            else:
                parent_cells = np.arange(self.tables[p].size) % parent.states
                offsets.append(np.asarray(parent.coarse, dtype=np.int64)[parent_cells] * multiplier)
            multiplier *= max(parent.coarse) + 1
        others = [p for p in parents if p != self.target]
        offsets.reverse()
        state = (np.arange(configs * size) % size).astype(np.int16)
        if var.lo is None:
            return _Compiled(sampler, others, offsets, by_target, state, None, code_at[var.name])
        extra = np.zeros(size - len(var.lo))  # missing/blank states: value 0, NaN on decode
        bin_lo, bin_width = np.concatenate([var.lo, extra]), np.concatenate([np.subtract(var.hi, var.lo), extra])
        lo, width = bin_lo[state], bin_width[state]
        upper = sampler.thresholds.reshape(configs, size).astype(np.float64)
        below = np.concatenate([np.zeros((configs, 1)), upper[:, :-1]], axis=1)  # u in [below, upper): the state
        below, p = below.ravel(), (upper - below).ravel()
        slope = np.divide(width, p, out=np.zeros_like(width), where=p > 0)  # a state never drawn: any value
        shift = lo - below * slope
        scale, loc = units
        missing_row = code_at[f"{var.name}:missing"] if var.missing is not None else None
        flag = (state == var.missing).astype(np.int16) if var.missing is not None else None
        return _Compiled(sampler, others, offsets, by_target, state, value_at[var.name], missing_row,
                         flag, shift * scale + loc, slope * scale)

    def sample(self, labels: np.ndarray | None, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(values, codes), feature-major (spans × n), of ``n`` records; ``labels`` fixes the target's.

        Rows go in blocks whose work arrays (uniforms, cells) stay near ``_BLOCK_CELLS`` entries and
        are reused: on a wide table, fresh arrays the size of the whole draw cost more in page faults
        than the draw itself."""
        # the fused loops index labels unchecked: a wrong length would read past them, not raise
        if (labels is None) != (self.target is None) or (labels is not None and len(labels) != n):
            raise ValueError(f"labels must be {'None' if self.target is None else f'{n} target codes'} for this network")
        values = np.empty((self.n_values, n))              # every row is written by its variable
        codes = np.zeros((self.n_codes, n), dtype=np.int16)
        if self.flat is None:
            self._sample_passes(labels, n, rng, values, codes)
        else:
            self._sample_compiled(labels, n, rng, values, codes)
        return values, codes

    @property
    def block_rows(self) -> int:
        return max(_MIN_BLOCK, _BLOCK_CELLS // len(self.variables))

    def _sample_compiled(self, labels: np.ndarray | None, n: int, rng: np.random.Generator, values: np.ndarray,
                         codes: np.ndarray) -> None:
        """The fused loops, with this thread's work buffers: kept from draw to draw, so a draw touches
        no fresh memory but its output (first touches cost a page fault each)."""
        flat, work = self.flat, self._work()
        assert flat is not None
        # converted once, not per block
        labels = _NO_LABELS if labels is None else np.ascontiguousarray(labels, dtype=np.int16)
        for start in range(0, n, work.block):
            size = min(n, start + work.block) - start
            u = work.uniforms(rng, len(self.variables) * size).reshape(len(self.variables), size)
            block = Block(start, values, codes, work.cells, work.row)
            flat.draw(u, labels, block, _BITS - _GRID_BITS)
            if self.refills:
                count = flat.attended_blanks(work.cells, size, work.found)
                total = int(count.sum())
                if total:
                    flat.refill(block, work.found, count, work.uniforms(rng, total, refill=True), _BITS - _GRID_BITS)

    def _work(self) -> WorkBuffers:
        local = self.__dict__.get("_local")
        if local is None:
            local = self._local = threading.local()
        if getattr(local, "work", None) is None:
            local.work = WorkBuffers(self.block_rows, len(self.variables), len(self.refills))
        return local.work

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}  # thread-local buffers do not copy

    def _sample_passes(self, labels: np.ndarray | None, n: int, rng: np.random.Generator, values: np.ndarray,
                       codes: np.ndarray) -> None:
        """The numpy passes, block by block (without numba)."""
        block = min(n, self.block_rows)
        cells = np.empty((len(self.variables), block), dtype=np.int64)
        work = (np.empty(block, np.int64), np.empty(block, np.int64), np.empty(block))
        for start in range(0, n, block):
            stop = min(n, start + block)
            size = stop - start
            u = uniform_bits(rng, (len(self.variables), size))
            self._draw_block(labels[start:stop] if labels is not None else None, u, cells[:, :size],
                             [w[:size] for w in work], values[:, start:stop], codes[:, start:stop])
            self._refill_attended(cells[:, :size], start, values, codes, rng)

    def _draw_block(self, labels: np.ndarray | None, u: np.ndarray, cells: np.ndarray, work: list[np.ndarray],
                    values: np.ndarray, codes: np.ndarray) -> None:
        row, gathered, scratch = work
        by_class: dict[int, np.ndarray] = {}  # the target's offsets: most variables share one multiplier
        for v in self.order:
            c = self.compiled[v]
            if v == self.target:
                cells[v] = labels
            else:
                TableSampler.grid_cells(u[v], out=row)
                if c.by_target:
                    if c.by_target not in by_class:
                        by_class[c.by_target] = cells[self.target] * c.by_target
                    row += by_class[c.by_target]
                for p, offset in zip(c.parents, c.offsets):
                    row += np.take(offset, cells[p], out=gathered, mode="clip")
                c.sampler.cells(row, u[v], out=cells[v])
            self._write(c, cells[v], u[v], values, codes, scratch)

    @staticmethod
    def _write(c: _Compiled, cell: np.ndarray, u: np.ndarray, values: np.ndarray, codes: np.ndarray,
               scratch: np.ndarray) -> None:
        """The drawn cells as encoder output (``take`` into place: no temporaries, no type casts)."""
        if c.value_row is None:
            np.take(c.state, cell, out=codes[c.code_row], mode="clip")
            return
        value = values[c.value_row]
        np.take(c.slope, cell, out=value, mode="clip")
        np.multiply(value, u, out=value)
        value += np.take(c.shift, cell, out=scratch, mode="clip")
        if c.flag is not None:
            np.take(c.flag, cell, out=codes[c.code_row], mode="clip")

    def _refill_attended(self, cells: np.ndarray, start: int, values: np.ndarray, codes: np.ndarray,
                         rng: np.random.Generator) -> None:
        """A visit the participant attended cannot be "after dropout": draw it again from P(value | target).

        One uniform per redrawn cell, all drawn at once after the rows are known (the same stream
        the compiled loops use)."""
        wrongs = [np.flatnonzero((self.compiled[r.variable].state[cells[r.variable]] == self.variables[r.variable].blank)
                                 & (self.compiled[r.timeline].state[cells[r.timeline]] >= self.variables[r.variable].visit))
                  for r in self.refills]
        total = sum(len(w) for w in wrongs)
        if not total:
            return
        bits, at = uniform_bits(rng, (total,)), 0
        for r, wrong in zip(self.refills, wrongs):
            c, u = r.attended, bits[at:at + len(wrong)]
            at += len(wrong)
            row = TableSampler.grid_cells(u)
            if c.by_target:
                row += cells[self.target, wrong] * c.by_target
            cell = c.sampler.cells(row, u)
            rows = wrong + start
            if c.value_row is None:
                codes[c.code_row, rows] = c.state[cell]
                continue
            values[c.value_row, rows] = c.slope[cell] * u + c.shift[cell]
            if c.flag is not None:
                codes[c.code_row, rows] = c.flag[cell]
