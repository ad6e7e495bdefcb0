"""Reversible encoders: a table to a float matrix a network can learn, and back.

One description drives both directions (after CTGAN's ``SpanInfo``): each column contributes
*spans* of the encoded vector, each either ``linear`` (a number) or ``softmax`` (a one-hot choice:
a category, "missing or not", a dropout visit). A generator applies activations span by span;
``decode`` walks the same spans back, vectorised per column, and always returns values the schema
allows (categories, bounds, integer rounding, missing codes). The column codecs are in
:mod:`clinsynth.data.codecs`; decoding's last steps go through :mod:`clinsynth.data.columns`
(a plain path and a fast one that give the same frames).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.data.codecs import (  # noqa: F401 - the codecs' helpers, imported from here by callers
    NUMERIC_TRANSFORMS, Activation, CategoricalCodec, NumericCodec, NumericTransform, PiecewiseLinear, Span,
    TimelineCodec, datetime_days, decode_bounds, localize, numeric_bounds, numeric_values, synthetic_ids)
from clinsynth.data.columns import column_paths
from clinsynth.errors import NotFittedError, SchemaError
from clinsynth.schema import Schema


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridLayout:
    """Where the primary timeline's cells sit in the encoded vector, for convolutional models.

    ``channels[c, v]`` is the encoded index of channel ``c`` at visit ``v``: each measure
    contributes its value channel and, if it has one, its two missing-indicator channels.
    """

    channels: np.ndarray
    visits: int


class TableEncoder:
    """Encode a whole table by its schema; ``decode(encode(df))`` gives ``df`` back.

    Parameters
    ----------
    schema : the table's schema; identifiers are kept out and re-made fresh on decode.
    numeric_transform : ``"standard"`` (mean/sd) or ``"quantile"`` (to a normal through the
        empirical quantiles; better for skewed labs, but stores data quantiles, so not for DP).
    """

    def __init__(self, schema: Schema, numeric_transform: NumericTransform = "standard"):
        if numeric_transform not in NUMERIC_TRANSFORMS:
            raise SchemaError(f"numeric_transform must be 'standard' or 'quantile', not {numeric_transform!r}")
        self.schema = schema
        self.numeric_transform = numeric_transform
        self.codecs: dict[str, NumericCodec | CategoricalCodec] = {}
        for spec in schema.model_columns:
            if spec.kind in ("binary", "categorical"):
                self.codecs[spec.name] = CategoricalCodec(spec)
            else:
                self.codecs[spec.name] = NumericCodec(spec, numeric_transform)
        self.timelines = [TimelineCodec(groups) for _, groups in schema.timelines() if all(g.dropout for g in groups)]
        self.spans: list[Span] = []
        start = 0
        for part in [*self.codecs.values(), *self.timelines]:
            for name, dim, act in part.spans():
                self.spans.append(Span(name, dim, act, start))
                start += dim
        self.dim = start
        self.fitted_ = False
        linear = [s for s in self.spans if s.activation == "linear"]
        softmax = [s for s in self.spans if s.activation == "softmax"]
        self._linear_idx = np.array([s.start for s in linear], dtype=np.intp)
        self._value_col = {s.name: j for j, s in enumerate(linear)}
        self._code_col = {s.name: k for k, s in enumerate(softmax)}
        self._n_codes = len(softmax)
        self._softmax_groups = [
            (dim, np.array([s.start for s in softmax if s.dim == dim], dtype=np.intp),
             np.array([k for k, s in enumerate(softmax) if s.dim == dim], dtype=np.intp))
            for dim in sorted({s.dim for s in softmax})
        ]

    # -- fitting ---------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> TableEncoder:
        for name, codec in self.codecs.items():
            codec.fit(df[name])
        self.fitted_ = True
        return self

    def fit_from_statistics(self, numeric: dict[str, dict[str, Any]]) -> TableEncoder:
        """Fit without reading records: each numeric column's scaling from released statistics
        (``loc``/``scale`` for ``standard``, ``knots``/``scores`` for ``quantile``), as DP mode needs."""
        keys = ("knots", "scores") if self.numeric_transform == "quantile" else ("loc", "scale")
        for name, codec in self.codecs.items():
            if isinstance(codec, NumericCodec):
                if name not in numeric:
                    raise SchemaError(f"no released statistics for numeric column '{name}'")
                codec.state = {k: numeric[name][k] for k in keys}
        self.fitted_ = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError("the encoder is not fitted; call fit(df) first")

    # -- lookup ----------------------------------------------------------------------
    @property
    def n_values(self) -> int:
        """How many linear spans (numbers) ``split`` returns per row."""
        return len(self._linear_idx)

    @property
    def n_codes(self) -> int:
        """How many softmax spans (codes) ``split`` returns per row."""
        return self._n_codes

    def span(self, name: str) -> Span:
        for s in self.spans:
            if s.name == name:
                return s
        raise KeyError(name)

    def grid_layout(self) -> GridLayout | None:
        """The primary timeline as a (channel × visit) grid, or None when there is none."""
        if not self.schema.longitudinal:
            return None
        _, groups = self.schema.timelines()[0]
        rows: list[list[int]] = []
        for g in groups:
            value = [self.span(c).start for c in g.columns]
            rows.append(value)
            if any(self.codecs[c].has_missing for c in g.columns):
                # columns without intermittent missingness still get indicator channels: fixed "observed"
                rows.append([self.span(f"{c}:missing").start if self.codecs[c].has_missing else -1 for c in g.columns])
                rows.append([self.span(f"{c}:missing").start + 1 if self.codecs[c].has_missing else -1 for c in g.columns])
        channels = np.array(rows, dtype=np.int64)
        return GridLayout(channels=channels, visits=len(groups[0].visits))

    # -- transforms ------------------------------------------------------------------
    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """The table as a float32 matrix (rows × ``dim``)."""
        self._check_fitted()
        blocks = [codec.encode(df[name]) for name, codec in self.codecs.items()]
        blocks += [t.encode(df) for t in self.timelines]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs (rows × ``dim``) to (values of the linear spans, argmax code of each softmax span)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"expected a matrix with {self.dim} columns, got shape {X.shape}")
        values, codes = self.split_features_major(X.T)
        return values.T, codes.T

    def split_features_major(self, XT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``split`` for a feature-major matrix (``dim`` × rows): every step reads whole rows.

        This is the expensive half of decoding; samplers call it on cache-sized chunks and
        ``decode_parts`` once per large block (pass the transposes: column-major is fastest there).
        """
        values = XT[self._linear_idx]
        codes = np.empty((self._n_codes, XT.shape[1]), dtype=np.int16)
        for dim, starts, code_cols in self._softmax_groups:
            if dim == 2:
                codes[code_cols] = XT[starts + 1] > XT[starts]
            else:
                codes[code_cols] = XT[starts[:, None] + np.arange(dim)].argmax(axis=1)
        return values, codes

    def decode(self, X: np.ndarray, id_prefix: str = "syn-", id_start: int = 0) -> pd.DataFrame:
        """A matrix back to a table in the schema's column order, every value within the schema.

        Identifier columns get fresh ids (``syn-000001``…), never real ones.
        """
        self._check_fitted()
        values, codes = self.split(X)  # fresh arrays of its own: they may be decoded in place
        return self.decode_parts(values, codes, id_prefix=id_prefix, id_start=id_start, overwrite_values=True)

    def decode_parts(self, values: np.ndarray, codes: np.ndarray, *, id_prefix: str = "syn-", id_start: int = 0,
                     scaled: bool = True, overwrite_values: bool = False) -> pd.DataFrame:
        """``decode`` from ``split``'s output (column-major arrays make this fastest); the inputs are
        only read.

        ``scaled=False``: ``values`` are in column units already (see :meth:`NumericCodec.affine`).
        ``overwrite_values=True`` (as ``scipy.linalg``'s ``overwrite_a``): the caller gives
        ``values`` up; when they are column-major float64 they are decoded in place and the frame
        keeps their memory. A sampler's own buffer is spared a second one of its size, whose fresh
        pages cost as much as the decoding (glibc returns a freed pair of them to the system)."""
        self._check_fitted()
        blank: dict[str, np.ndarray] = {}
        keep: dict[str, np.ndarray] = {}
        for t in self.timelines:
            last = codes[:, self._code_col[t.name]].astype(np.intp)
            mask = t.blank_mask(last)
            for g in t.groups:
                for j, c in enumerate(g.columns):
                    blank[c] = mask[j]
            keep.update(self._observed_at_last_visit(t, last, codes))
        n = values.shape[0]
        in_place = overwrite_values and values.dtype == np.float64 and values.T.flags.c_contiguous
        block = values.T if in_place else np.empty((values.shape[1], n))  # float columns' rows: the frame's block
        out: dict[str, Any] = {}
        for spec in self.schema.columns:
            name = spec.name
            if spec.kind == "id":
                out[name] = synthetic_ids(n, id_prefix, id_start)
                continue
            codec = self.codecs[name]
            if isinstance(codec, CategoricalCodec):
                out[name] = codec.decode(codes[:, self._code_col[name]])
            else:
                missing = codes[:, self._code_col[f"{name}:missing"]] if codec.has_missing else None
                if missing is not None and name in keep:
                    missing = missing.astype(bool) & ~keep[name]
                value = values[:, self._value_col[name]]
                target = value if in_place else block[self._value_col[name]]
                out[name] = codec.decode(value, missing, blank.get(name), scaled, out=target)
        return column_paths().frame(out, n, block, self._column_index)

    @functools.cached_property
    def _column_index(self) -> pd.Index:
        """The decoded frame's column names (Index objects are immutable: one serves every draw)."""
        return pd.Index([spec.name for spec in self.schema.columns])

    def _observed_at_last_visit(self, timeline: TimelineCodec, last: np.ndarray,
                                codes: np.ndarray) -> dict[str, np.ndarray]:
        """Cells whose missing flag must be overruled: the last visit a participant attended has, by
        definition, an observed measure, so where every flag there says "missing" all are kept."""
        n = len(last)
        all_missing = np.ones((len(timeline.visits), n), dtype=bool)  # visit-major, as blank_mask
        for g in timeline.groups:
            for j, c in enumerate(g.columns):
                key = f"{c}:missing"
                if key in self._code_col:
                    np.logical_and(all_missing[j], codes[:, self._code_col[key]], out=all_missing[j])
                else:
                    all_missing[j] = False
        fix = (last > 0) & all_missing[np.maximum(last - 1, 0), np.arange(n)]
        if not fix.any():
            return {}
        return {c: fix & (last == j + 1) for g in timeline.groups for j, c in enumerate(g.columns)}

    def activate(self, X: np.ndarray) -> np.ndarray:
        """Softmax spans to one-hot (argmax), as the decoder reads them; for comparisons and tests."""
        X = np.array(X, dtype=np.float32, copy=True)
        _, codes = self.split(X)
        for s in self.spans:
            if s.activation == "softmax":
                block = np.zeros((X.shape[0], s.dim), dtype=np.float32)
                block[np.arange(X.shape[0]), codes[:, self._code_col[s.name]]] = 1.0
                X[:, s.start:s.stop] = block
        return X

    # -- persistence -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "numeric_transform": self.numeric_transform,
            "columns": {name: codec.state for name, codec in self.codecs.items()},
        }

    @classmethod
    def from_state_dict(cls, schema: Schema, state: dict[str, Any]) -> TableEncoder:
        """The fitted encoder from :meth:`state_dict`; a state that does not fit ``schema`` column for
        column (a column dropped or added on either side, a scaling that is not a finite number)
        raises ``SchemaError`` here rather than failing at sampling time."""
        columns = state.get("columns") if isinstance(state, dict) else None
        if not isinstance(columns, dict):
            raise SchemaError("encoder state has no 'columns' object")
        enc = cls(schema, state.get("numeric_transform", "standard"))
        missing = [n for n in enc.codecs if n not in columns]
        if missing:
            raise SchemaError("encoder state does not fit the schema; no state for: " + ", ".join(missing))
        extra = [n for n in columns if n not in enc.codecs]
        if extra:
            raise SchemaError("encoder state does not fit the schema; it has columns the schema lacks: " + ", ".join(extra))
        for name, codec in enc.codecs.items():
            if isinstance(codec, NumericCodec):
                _check_numeric_state(name, columns[name], enc.numeric_transform)
            codec.state = columns[name]
        enc.fitted_ = True
        return enc


def _check_numeric_state(name: str, state: Any, transform: str) -> None:
    """A numeric column's saved scaling: finite numbers of the right shape, or ``SchemaError``."""
    keys = ("knots", "scores") if transform == "quantile" else ("loc", "scale")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise SchemaError(f"encoder state of column '{name}' lacks {' and '.join(keys)}")
    try:
        values = [np.asarray(state[k], dtype=float) for k in keys]
    except (TypeError, ValueError):
        raise SchemaError(f"encoder state of column '{name}' holds a {'/'.join(keys)} that is not numeric") from None
    if not all(np.isfinite(v).all() for v in values):
        raise SchemaError(f"encoder state of column '{name}' holds a {'/'.join(keys)} that is not finite")
    if transform == "quantile":
        knots, scores = values
        if knots.ndim != 1 or knots.shape != scores.shape or knots.size < 2 or np.any(np.diff(knots) < 0) \
                or np.any(np.diff(scores) < 0):
            raise SchemaError(f"encoder state of column '{name}': knots and scores must be increasing lists of one length")
    elif values[0].ndim or values[1].ndim or not values[1] > 0:
        raise SchemaError(f"encoder state of column '{name}': loc must be a number and scale a positive number")

