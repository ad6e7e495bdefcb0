"""The network's ancestral draw as one compiled loop per variable (numba, the ``fast`` extra).

Why: the numpy draw (:meth:`CompiledNetwork._draw_block`) costs about a dozen whole-column passes
per variable — grid cell, one gather and one add per parent, the look-up, the step check, the
write-out — each reading and writing the block's arrays again. The loop here does all of it in one
pass per variable, rows innermost so the gathers of different rows stay independent (a loop over
variables innermost chains each row's loads and runs slower than numpy). It reads the same tables
and the same uniforms and writes the same numbers, bit for bit; the numpy draw stays the fallback
where numba is not installed (``pip install "clinsynth[fast]"``) or ``CLINSYNTH_NUMBA=0``
(see :mod:`clinsynth.compiled`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from ..compiled import compile_loops


class Tables(NamedTuple):
    """Every variable's look-up tables concatenated, with per-variable starts (``x[x_at[v]:x_at[v+1]]``).

    Cells are the variable's own flat cells (config · states + state), as the numpy draw's."""

    lookup: np.ndarray         # int32: grid row → flat cell, ~cell where the grid cell holds a step
    lookup_at: np.ndarray
    thresholds: np.ndarray     # uint32: flat cell → upper CDF threshold
    thresholds_at: np.ndarray
    by_target: np.ndarray      # grid-row offset per target class (0: the target is no parent)
    state: np.ndarray          # int16: flat cell → state (categorical code)
    state_at: np.ndarray
    shift: np.ndarray          # numeric: flat cell → value = shift + u · slope
    slope: np.ndarray
    shift_at: np.ndarray
    flag: np.ndarray           # int16: numeric with a missing state: flat cell → 1 if missing
    flag_at: np.ndarray        # −1: no missing flag
    value_row: np.ndarray      # −1: categorical
    code_row: np.ndarray       # categorical: its codes row; numeric: its missing flag's row (−1: none)


class Graph(NamedTuple):
    """The draw order and, per variable, its parents (but the target) and their offsets."""

    order: np.ndarray          # variables in draw order
    target: int                # the target's index, −1 without one
    parents_at: np.ndarray     # CSR over variables: parents[parents_at[v]:parents_at[v+1]]
    parents: np.ndarray
    offsets: np.ndarray        # per (variable, parent): parent's flat cell → grid-row offset
    offsets_at: np.ndarray


class Refills(NamedTuple):
    """Per dropout-timeline column (as ``CompiledNetwork.refills``): which cells are "after dropout"."""

    pairs: np.ndarray          # (variable, its timeline) per refill
    is_blank: np.ndarray       # uint8, per refill: the variable's flat cell → 1 if "after dropout"
    is_blank_at: np.ndarray
    attends: np.ndarray        # uint8, per refill: the timeline's flat cell → 1 if that visit was attended
    attends_at: np.ndarray


class Block(NamedTuple):
    """Rows ``start …`` of the outputs (spans × rows, C-ordered) and the work arrays one block uses:
    whole arrays and an offset, never slices (each memory layout is a compile)."""

    start: int
    values: np.ndarray
    codes: np.ndarray
    cells: np.ndarray          # int32, variables × block width
    row: np.ndarray            # int64, block width


def _joined(parts: list[np.ndarray], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(len(parts) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(p) for p in parts])
    data = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
    return np.ascontiguousarray(data), starts


def _as_int(xs: Any) -> np.ndarray:
    return np.asarray(xs, dtype=np.int64)


def flat_tables(compiled: list[Any]) -> Tables:
    """:class:`Tables` from :class:`~clinsynth.models.bayesnet_sampler.CompiledNetwork`'s per-variable parts."""
    empty_f, empty_i = np.zeros(0), np.zeros(0, np.int16)
    lookup, lookup_at = _joined([c.sampler.lookup for c in compiled], np.int32)
    thresholds, thresholds_at = _joined([c.sampler.thresholds for c in compiled], np.uint32)
    state, state_at = _joined([c.state for c in compiled], np.int16)
    shift, shift_at = _joined([c.shift if c.shift is not None else empty_f for c in compiled], np.float64)
    slope, _ = _joined([c.slope if c.slope is not None else empty_f for c in compiled], np.float64)
    flag, flag_at = _joined([c.flag if c.flag is not None else empty_i for c in compiled], np.int16)
    flag_at = np.where([c.flag is not None for c in compiled] + [True], flag_at, -1)
    return Tables(lookup, lookup_at, thresholds, thresholds_at, _as_int([c.by_target for c in compiled]), state,
                  state_at, shift, slope, shift_at, flag, flag_at,
                  _as_int([-1 if c.value_row is None else c.value_row for c in compiled]),
                  _as_int([-1 if c.code_row is None else c.code_row for c in compiled]))


@dataclass(frozen=True)
class FlatNetwork:
    """The network as flat arrays a compiled loop can read: its tables, graph and dropout refills,
    and per refill its redraw (the column given the target alone) as tables of its own."""

    tables: Tables
    graph: Graph
    refills: Refills
    attended: Tables | None

    @classmethod
    def build(cls, compiled: list[Any], order: list[int], target: int | None, refills: list[Any]) -> FlatNetwork:
        """From :class:`~clinsynth.models.bayesnet_sampler.CompiledNetwork`'s per-variable parts and
        its refills (one per dropout-timeline column)."""
        offsets, offsets_at = _joined([o for c in compiled for o in c.offsets], np.int64)
        parents_at = np.zeros(len(compiled) + 1, dtype=np.int64)
        parents_at[1:] = np.cumsum([len(c.parents) for c in compiled])
        graph = Graph(_as_int(order), -1 if target is None else int(target), parents_at,
                      _as_int([p for c in compiled for p in c.parents]), offsets, offsets_at)
        is_blank, is_blank_at = _joined([r.is_blank for r in refills], np.uint8)
        attends, attends_at = _joined([r.attends for r in refills], np.uint8)
        pairs = _as_int([(r.variable, r.timeline) for r in refills]).reshape(len(refills), 2)
        return cls(flat_tables(compiled), graph, Refills(pairs, is_blank, is_blank_at, attends, attends_at),
                   flat_tables([r.attended for r in refills]) if refills else None)

    def draw(self, bits: np.ndarray, labels: np.ndarray, block: Block, grid_shift: int) -> None:
        """Draw rows ``block.start … + bits.shape[1]`` of the block's outputs in place.

        ``bits``: (variables × rows) uint32 uniforms; ``labels``: contiguous int16 target codes, or
        empty without a target; ``grid_shift``: uniform bits minus grid bits (a uniform's grid cell)."""
        _kernels().draw(self.tables, self.graph, bits, labels, block, grid_shift)

    def attended_blanks(self, cells: np.ndarray, width: int, found: np.ndarray) -> np.ndarray:
        """Per refill, the rows (of the first ``width`` in ``cells``) drawn "after dropout" at a visit
        the participant attended: ``found[r, :count[r]]``, ascending; returns ``count``."""
        count = np.zeros(len(self.refills.pairs), dtype=np.int64)
        _kernels().attended_blanks(self.refills, cells, width, found, count)
        return count

    def refill(self, block: Block, found: np.ndarray, count: np.ndarray, bits: np.ndarray, grid_shift: int) -> None:
        """Redraw :meth:`attended_blanks`' rows from their ``attended`` tables, one uniform (``bits``,
        in refill then row order) each, written at ``block.start`` + row."""
        assert self.attended is not None
        _kernels().refill(self.attended, self.refills, self.graph.target, block, found, count, bits, grid_shift)


class WorkBuffers:
    """One thread's work arrays for drawing blocks of ``block`` rows, written once when made: a
    page touched for the first time costs about as much as drawing into it."""

    def __init__(self, block: int, variables: int, refills: int):
        self.block = block
        self.bits = np.zeros(variables * block, dtype=np.uint32)
        self.refill_bits = np.zeros(refills * block, dtype=np.uint32)
        self.cells = np.zeros((variables, block), dtype=np.int32)
        self.row = np.zeros(block, dtype=np.int64)
        self.found = np.zeros((refills, block), dtype=np.int64)
        for buffer in (self.bits, self.refill_bits, self.cells, self.row, self.found):
            buffer.fill(1)  # np.zeros maps zero pages lazily: fill them now

    def uniforms(self, rng: np.random.Generator, size: int, refill: bool = False) -> np.ndarray:
        """``size`` uniforms below 2**31 in a buffer: the numbers (and stream position) of
        ``bayesnet_sampler.uniform_bits(rng, (size,))``, straight from the bit generator."""
        out = (self.refill_bits if refill else self.bits)[:size]
        bitgen = rng.bit_generator.ctypes
        _kernels().uniform_bits(bitgen.next_uint64, bitgen.state_address, out)
        return out


def shuffle(rng: np.random.Generator, x: np.ndarray) -> None:
    """``rng.shuffle(x)`` for a 1-D array, about twice as fast where numba is installed: the same
    permutation and the same stream position after it (numpy's Fisher–Yates, mirrored below)."""
    kernels = compiled_kernel()
    if kernels is None or x.ndim != 1 or not x.flags.writeable:
        rng.shuffle(x)
        return
    bitgen = rng.bit_generator.ctypes
    kernels.shuffle(bitgen.next_uint32, bitgen.state_address, x)


def _shuffle(next_uint32, state, x):  # pragma: no cover (compiled)
    """numpy's ``Generator.shuffle``: for i = n−1 … 1 swap x[i] with x[j], j uniform in [0, i] by
    ``random_interval`` (32-bit draws masked to i's bit length, redrawn while above i)."""
    for i in range(x.shape[0] - 1, 0, -1):
        top = np.uint64(i)
        mask = top
        for s in (1, 2, 4, 8, 16):
            mask |= mask >> np.uint64(s)
        j = np.uint64(next_uint32(state)) & mask
        while j > top:
            j = np.uint64(next_uint32(state)) & mask
        kept = x[i]
        x[i] = x[j]
        x[j] = kept


def _uniform_bits(next_uint64, state, out):  # pragma: no cover (compiled)
    """Each raw 64-bit draw as two uniforms (low half first), shifted below 2**31; an odd count
    drops the last draw's high half — as ``random_raw(...).view(uint32) >> 1`` does."""
    n = out.shape[0]
    for k in range(n // 2):
        x = next_uint64(state)
        out[2 * k] = np.uint32(x & 0xFFFFFFFF) >> 1
        out[2 * k + 1] = np.uint32(x >> 32) >> 1
    if n % 2:
        out[n - 1] = np.uint32(next_uint64(state) & 0xFFFFFFFF) >> 1


def _draw_variables(tables, graph, bits, labels, block, grid_shift):  # pragma: no cover (compiled)
    """The numpy draw's steps, each one loop over the block's rows (see :class:`Tables`,
    :class:`Graph`, :class:`Block` for the arrays). One-dimensional views of every row and table,
    taken once per variable, let the compiler keep their addresses in registers instead of
    re-deriving them per element."""
    lookup, lookup_at, thresholds, thresholds_at = tables.lookup, tables.lookup_at, tables.thresholds, tables.thresholds_at
    by_target, state, state_at, shift, slope = tables.by_target, tables.state, tables.state_at, tables.shift, tables.slope
    shift_at, flag, flag_at, value_row, code_row = tables.shift_at, tables.flag, tables.flag_at, tables.value_row, \
        tables.code_row
    order, target, parents_at, parents = graph.order, graph.target, graph.parents_at, graph.parents
    offsets, offsets_at = graph.offsets, graph.offsets_at
    start, values, codes, cells, row = block.start, block.values, block.codes, block.cells, block.row
    n = bits.shape[1]
    for k in range(order.shape[0]):
        v = order[k]
        own = cells[v]
        if v == target:
            out = codes[code_row[v], start:start + n]
            for i in range(n):
                own[i] = labels[start + i]
                out[i] = labels[start + i]
            continue
        u, per_class = bits[v], by_target[v]
        if per_class != 0:  # grid row: the uniform's grid cell plus each parent's offset
            of_target = cells[target]
            for i in range(n):
                row[i] = (np.int64(u[i]) >> grid_shift) + per_class * of_target[i]
        else:
            for i in range(n):
                row[i] = np.int64(u[i]) >> grid_shift
        for j in range(parents_at[v], parents_at[v + 1]):
            of_parent, offset = cells[parents[j]], offsets[offsets_at[j]:offsets_at[j + 1]]
            for i in range(n):
                row[i] += offset[of_parent[i]]
        grid, upper = lookup[lookup_at[v]:lookup_at[v + 1]], thresholds[thresholds_at[v]:thresholds_at[v + 1]]
        for i in range(n):
            cell = np.int64(grid[row[i]])
            if cell < 0:  # a grid cell holding a step: move on past every threshold ≤ u
                cell = ~cell
                while np.int64(u[i]) >= upper[cell]:
                    cell += 1
            own[i] = cell
        if value_row[v] >= 0:
            value = values[value_row[v], start:start + n]
            at = shift_at[v]
            for i in range(n):
                value[i] = shift[at + own[i]] + np.int64(u[i]) * slope[at + own[i]]
            if flag_at[v] >= 0:
                out, is_missing = codes[code_row[v], start:start + n], flag[flag_at[v]:]
                for i in range(n):
                    out[i] = is_missing[own[i]]
        else:
            out, of_state = codes[code_row[v], start:start + n], state[state_at[v]:state_at[v + 1]]
            for i in range(n):
                out[i] = of_state[own[i]]


def _attended_blanks(refills, cells, width, found, count):  # pragma: no cover (compiled)
    """:meth:`FlatNetwork.attended_blanks`: one pass over two cell rows per dropout-timeline column."""
    refill, is_blank, is_blank_at = refills.pairs, refills.is_blank, refills.is_blank_at
    attends, attends_at = refills.attends, refills.attends_at
    for r in range(refill.shape[0]):
        own, line = cells[refill[r, 0]], cells[refill[r, 1]]
        blank, attended = is_blank[is_blank_at[r]:is_blank_at[r + 1]], attends[attends_at[r]:attends_at[r + 1]]
        m = 0
        for i in range(width):
            if blank[own[i]] and attended[line[i]]:
                found[r, m] = i
                m += 1
        count[r] = m


def _refill(tables, refills, target, block, found, count, bits, grid_shift):  # pragma: no cover (compiled)
    """:meth:`FlatNetwork.refill`: the draw's steps for the found rows, with the target as the only parent.

    The look-up, step and write repeat :func:`_draw_variables`' on purpose: a shared helper would
    have to be a compiled function itself, compiled at import, where numba is optional and
    compiles lazily (:mod:`clinsynth.compiled`). Both are held to the numpy passes' numbers by
    one test (compiled against numpy draws, with refills)."""
    lookup, lookup_at, thresholds, thresholds_at = tables.lookup, tables.lookup_at, tables.thresholds, tables.thresholds_at
    by_target, state, state_at, shift, slope = tables.by_target, tables.state, tables.state_at, tables.shift, tables.slope
    shift_at, flag, flag_at, value_row, code_row = tables.shift_at, tables.flag, tables.flag_at, tables.value_row, \
        tables.code_row
    refill, start, values, codes, cells = refills.pairs, block.start, block.values, block.codes, block.cells
    at = 0
    for r in range(refill.shape[0]):
        grid, upper = lookup[lookup_at[r]:lookup_at[r + 1]], thresholds[thresholds_at[r]:thresholds_at[r + 1]]
        for k in range(count[r]):
            i, u = found[r, k], np.int64(bits[at])
            at += 1
            row = u >> grid_shift
            if by_target[r] != 0:
                row += by_target[r] * cells[target, i]
            cell = np.int64(grid[row])
            if cell < 0:
                cell = ~cell
                while u >= upper[cell]:
                    cell += 1
            if value_row[r] >= 0:
                values[value_row[r], start + i] = shift[shift_at[r] + cell] + u * slope[shift_at[r] + cell]
                if flag_at[r] >= 0:
                    codes[code_row[r], start + i] = flag[flag_at[r] + cell]
            else:
                codes[code_row[r], start + i] = state[state_at[r] + cell]


@dataclass(frozen=True)
class Kernels:
    draw: Callable[..., None]
    attended_blanks: Callable[..., None]
    refill: Callable[..., None]
    uniform_bits: Callable[..., None]
    shuffle: Callable[..., None]


def compiled_kernel() -> Kernels | None:
    """The compiled loops, or None where numba is missing, fails, or ``CLINSYNTH_NUMBA=0``."""
    loops = compile_loops(_draw_variables, _attended_blanks, _refill, _uniform_bits, _shuffle)
    return None if loops is None else Kernels(*loops)


def _kernels() -> Kernels:
    kernels = compiled_kernel()
    assert kernels is not None, "a FlatNetwork without numba: check compiled_kernel() first"
    return kernels
