"""How decoded columns are built: the one interface between the encoders and the speed code.

Decoding ends in three steps per draw — text columns from category codes, numeric columns
clipped, rounded and blanked, and the frame put together. :class:`PlainColumns` does each with
plain numpy, pyarrow and pandas calls; :mod:`clinsynth.data.fast_columns` does the same with
compiled loops (numba, the ``fast`` extra), a process-wide Arrow memory pool and pandas' block
constructor. Both give the same frames to the bit (tests hold them to it); :func:`column_paths`
chooses the fast one where numba is installed and ``CLINSYNTH_NUMBA`` is not ``0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class Rounding:
    """How a numeric column's values are finished: clipped to ``[lo, hi]``, then rounded to
    ``decimals`` places (0: whole numbers; None: not rounded), as ``np.round`` rounds."""

    lo: float = -np.inf
    hi: float = np.inf
    decimals: int | None = None


class ColumnPaths(Protocol):
    """What decoding asks of a column path (the plain one and the fast one)."""

    memory_pool: pa.MemoryPool

    def text(self, index: np.ndarray, labels: tuple[str, ...], missing: np.ndarray | None, dtype: Any) -> Any:
        """``labels[index]`` (index clipped into the labels; null where ``missing``) as a pandas
        string array of ``dtype``."""

    def finish_numeric(self, x: np.ndarray, rounding: Rounding, missing: np.ndarray | None,
                       blank: np.ndarray | None) -> None:
        """``x`` (float64) clipped and rounded by ``rounding``, NaN where ``missing`` or ``blank`` is
        nonzero, in place."""

    def frame(self, columns: dict[str, Any], n: int, block: np.ndarray | None, names: pd.Index | None) -> pd.DataFrame:
        """``pd.DataFrame(columns)``; ``block``: a (columns × n) float64 array some columns are rows
        of, ``names``: ``pd.Index(list(columns))`` when the caller keeps one."""


class PlainColumns:
    """The plain path: numpy, pyarrow and pandas as they are meant to be called."""

    memory_pool = pa.default_memory_pool()

    def text(self, index: np.ndarray, labels: tuple[str, ...], missing: np.ndarray | None, dtype: Any) -> Any:
        positions = pa.array(np.clip(index, 0, len(labels) - 1).astype(np.int64, copy=False), mask=missing)
        return pd.array(pa.array(labels, pa.large_string()).take(positions), dtype=dtype)

    def finish_numeric(self, x: np.ndarray, rounding: Rounding, missing: np.ndarray | None,
                       blank: np.ndarray | None) -> None:
        np.clip(x, rounding.lo, rounding.hi, out=x)
        if rounding.decimals is not None:
            np.round(x, rounding.decimals, out=x)
        gone = None if missing is None else missing.astype(bool)
        if blank is not None:
            gone = blank if gone is None else np.logical_or(gone, blank, out=gone)
        if gone is not None:
            np.copyto(x, np.nan, where=gone)

    def frame(self, columns: dict[str, Any], n: int, block: np.ndarray | None, names: pd.Index | None) -> pd.DataFrame:
        return pd.DataFrame(columns, copy=False)


PLAIN = PlainColumns()


_FAST_PATHS: list[Any] = []  # fast_columns.fast_columns, imported on first use (that module builds on this one)


def column_paths() -> ColumnPaths:
    """The fast path where its compiled loops are available, else the plain one (a dict look-up
    per call: decoding asks once per column)."""
    if not _FAST_PATHS:
        from clinsynth.data.fast_columns import fast_columns
        _FAST_PATHS.append(fast_columns)
    return _FAST_PATHS[0]() or PLAIN
