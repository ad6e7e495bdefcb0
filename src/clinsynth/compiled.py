"""Optional numba compilation for the few hot loops numpy cannot fuse (the ``fast`` extra).

Every compiled loop has a numpy fallback that gives the same numbers, so numba stays optional:
``pip install "clinsynth[fast]"`` adds it, ``CLINSYNTH_NUMBA=0`` switches it off — and with it
every fast path: the Bayesian network's kernel (``models/bayesnet_kernel.py``) and decoding's fast
column path (``data/fast_columns.py``, behind ``data/columns.py``). Compiled code is
cached on disk (numba's cache) where the package directory or the user cache is writable, so only
the first use on a machine pays for the compilation.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

_COMPILED: dict[tuple[Callable[..., Any], ...], tuple[Callable[..., Any], ...] | None] = {}


def numba_enabled() -> bool:
    return os.environ.get("CLINSYNTH_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")


def compile_loops(*functions: Callable[..., Any]) -> tuple[Callable[..., Any], ...] | None:
    """``functions`` compiled (nopython, GIL released), once per process; None without numba."""
    if functions not in _COMPILED:
        _COMPILED[functions] = _compile(functions)
    return _COMPILED[functions]


def _compile(functions: tuple[Callable[..., Any], ...]) -> tuple[Callable[..., Any], ...] | None:
    if not numba_enabled():
        return None
    try:
        import numba
    except ImportError:
        return None
    try:
        return tuple(numba.njit(cache=True, nogil=True)(f) for f in functions)
    except Exception:  # noqa: BLE001 - no writable cache directory: compile per process instead
        try:
            return tuple(numba.njit(nogil=True)(f) for f in functions)
        except Exception as exc:  # noqa: BLE001 - a broken numba install must not stop the work
            warnings.warn(f"numba could not compile {functions[0].__name__} ({exc}); using numpy", stacklevel=3)
            return None
