"""The schema: what each column is, what may be missing, and what is public knowledge.

Everything downstream (encoders, models, evaluation, the privacy engine) reads the table through
the schema, so it is inferred once, saved as editable JSON, and validated against every frame
before any training. Bounds and category lists recorded here are *public* only when the steward
says so (``public: true``); an inferred schema learns them from the data, which DP mode must not
rely on.

Size: ~720 lines. The column and schema models, inference and validation share the value rules
(kinds, decimals, dates, categories) that make a frame and its JSON agree; long-format specifics
already live in :mod:`clinsynth.long_schema`.
"""
from __future__ import annotations

import difflib

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinsynth.errors import SchemaError

FORMAT_VERSION = 1

Kind = Literal["continuous", "integer", "binary", "categorical", "datetime", "id"]
MissingPolicy = Literal["none", "indicator"]
Category = str | int | float | bool

NUMERIC_KINDS = ("continuous", "integer", "datetime")
DISCRETE_KINDS = ("binary", "categorical")

#: A target with at most this many distinct numbers is treated as classes, not a quantity.
MAX_TARGET_CLASSES = 20
#: A text column with more distinct values than this (and mostly unique) is free text or an id.
MAX_CATEGORIES = 200
#: Numbers beyond this magnitude are refused: a mean and standard deviation of them, their squares
#: and the float32 that networks and scikit-learn compute in would overflow (1e308 sampled as all
#: NaN; above ~1e38 the evaluation fails). Clinical values (cell counts per litre ~1e12) and
#: nanosecond timestamps (~1e18) sit far below it.
MAX_MAGNITUDE = 1e30
#: Rounding to more decimals than float64 holds digits changes nothing but can overflow.
MAX_DECIMALS = 15
ID_NAME = re.compile(r"(^|_)(id|mrn|maskid|patid|subject|patient)($|_)|(id$)", re.IGNORECASE)
_VISIT = re.compile(
    r"^(?P<measure>.+?)[_.\-]?(?P<label>rz|bl|baseline|base|screening|(?P<unit>visit|month|week|year|day|v|m|w|y|d|t)(?P<num>\d+))$",
    re.IGNORECASE,
)
_BASELINE_LABELS = {"rz", "bl", "baseline", "base", "screening"}


class ColumnSpec(BaseModel):
    """One column: its kind, its missing-value policy and its domain."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Kind
    missing: MissingPolicy = "none"
    bounds: tuple[float, float] | tuple[str, str] | None = Field(
        default=None, description="[low, high] for numbers (ISO dates for datetime)")
    categories: list[Category] | None = None
    decimals: int | None = Field(default=None, description="round synthetic values to this many decimals")
    public: bool = Field(default=False, description="bounds/categories are declared domain knowledge, not read from the data")
    sensitive: bool = False
    quasi_identifier: bool = False
    dtype: str | None = Field(default=None, description="pandas dtype of the input, restored on output")
    level: Literal["patient", "visit"] | None = Field(
        default=None, description="long format: constant within every patient, or one value per visit")

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        if self.decimals is not None and not 0 <= self.decimals <= MAX_DECIMALS:
            raise ValueError(f"column '{self.name}': decimals must be a whole number from 0 to {MAX_DECIMALS}, "
                             f"got {self.decimals} (null: no rounding)")
        if self.bounds is not None and self.kind in ("continuous", "integer"):
            if not all(isinstance(b, (int, float)) and abs(b) <= MAX_MAGNITUDE for b in self.bounds):
                raise ValueError(f"column '{self.name}': bounds {list(self.bounds)} are infinite or beyond "
                                 f"±{MAX_MAGNITUDE:g}, too large to scale; declare finite bounds or none")
        if any(isinstance(c, float) and not np.isfinite(c) for c in self.categories or []):
            raise ValueError(f"column '{self.name}': categories cannot hold NaN or infinite numbers")
        if self.kind in DISCRETE_KINDS and not self.categories:
            raise ValueError(f"column '{self.name}': kind {self.kind} needs a non-empty 'categories' list")
        if self.kind == "binary" and len(self.categories or []) != 2:
            raise ValueError(f"column '{self.name}': kind binary needs exactly 2 categories")
        if self.bounds is not None and self.kind in NUMERIC_KINDS:
            lo, hi = self.bounds
            if _as_number(lo, self.kind) > _as_number(hi, self.kind):
                raise ValueError(f"column '{self.name}': bounds low {lo} is above high {hi}")
        return self


class LongitudinalGroup(BaseModel):
    """One measure taken at ordered visits, e.g. SBP at randomisation and months 1..27.

    Groups that share the same visits share one *timeline*: a participant's dropout (the last
    visit with any observed measure) is modelled once for all of them, so a synthetic participant
    never comes back after leaving.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    columns: list[str]
    visits: list[str]
    dropout: bool = True

    @model_validator(mode="after")
    def _check(self) -> LongitudinalGroup:
        if len(self.columns) != len(self.visits):
            raise ValueError(f"longitudinal group '{self.name}': {len(self.columns)} columns but {len(self.visits)} visits")
        if len(self.columns) < 2:
            raise ValueError(f"longitudinal group '{self.name}' needs at least 2 visits")
        return self


class CodeBlock(BaseModel):
    """A patients × codes block (diagnoses, drugs) next to the ordinary columns: the "code matrix" kind.

    A patient's codes are a sparse vector over ``vocabulary`` — presence (``binary``) or counts —
    and travel as a :class:`clinsynth.data.ehr.CodeMatrix`, never as a thousand dense columns.
    ``public`` says the vocabulary is declared domain knowledge (a code list such as ICD-10),
    not read from the data: in DP mode a vocabulary that is not public is chosen by a charged
    mechanism. ``max_count`` caps counts (a public bound, so clipping costs no privacy).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "codes"
    vocabulary: list[str]
    binary: bool = True
    public: bool = Field(default=False, description="the vocabulary is a declared code list, not read from the data")
    max_count: int | None = Field(default=None, description="counts are capped at this public bound")

    @model_validator(mode="after")
    def _check(self) -> CodeBlock:
        if not self.vocabulary:
            raise ValueError(f"code block '{self.name}' needs a non-empty vocabulary")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            dupes = sorted({c for c in self.vocabulary if self.vocabulary.count(c) > 1})
            raise ValueError(f"code block '{self.name}' repeats codes: {', '.join(dupes[:5])}")
        if self.max_count is not None and self.max_count < 1:
            raise ValueError(f"code block '{self.name}': max_count must be ≥ 1, got {self.max_count}")
        if self.binary and self.max_count is not None:
            raise ValueError(f"code block '{self.name}': max_count applies to counts, not to binary codes")
        return self


class Schema(BaseModel):
    """The table's contract: columns, target, longitudinal groups, and an optional code block. JSON round-trips."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    columns: list[ColumnSpec]
    target: str | None = None
    longitudinal: list[LongitudinalGroup] = Field(default_factory=list)
    codes: CodeBlock | None = None
    # whose data a DP guarantee protects: "row" declares each row a different person; unset, a DP fit
    # refuses a table whose identifier column repeats (clinsynth.privacy.unit)
    privacy_unit: Literal["row"] | None = None
    # long format (one row per visit; clinsynth.long_schema): the patient id and visit-time columns
    patient: str | None = None
    time: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Schema:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"schema format_version {self.format_version} is not supported (this clinsynth reads {FORMAT_VERSION})")
        names = [c.name for c in self.columns]
        if not names and self.codes is None:
            raise ValueError("a schema needs at least one column or a code block")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns listed twice: {', '.join(dupes)}")
        known = set(names)
        if self.target is not None:
            if self.target not in known:
                raise ValueError(f"target '{self.target}' is not a column of the schema")
            if self.column(self.target).kind not in DISCRETE_KINDS:
                raise ValueError(f"target '{self.target}' must be binary or categorical, not {self.column(self.target).kind}")
        seen: set[str] = set()
        for g in self.longitudinal:
            for c in g.columns:
                if c not in known:
                    raise ValueError(f"longitudinal group '{g.name}' names unknown column '{c}'")
                if c in seen:
                    raise ValueError(f"column '{c}' is in more than one longitudinal group")
                if self.column(c).kind not in ("continuous", "integer"):
                    raise ValueError(f"longitudinal column '{c}' must be continuous or integer")
                if c == self.target:
                    raise ValueError(f"the target '{c}' cannot be part of a longitudinal group")
                seen.add(c)
        self._check_long(known)
        return self

    def _check_long(self, known: set[str]) -> None:
        if (self.patient is None) != (self.time is None):
            raise ValueError("a long-format schema names both its patient and its time column")
        if self.patient is None:
            leveled = [c.name for c in self.columns if c.level is not None]
            if leveled:
                raise ValueError(f"columns {', '.join(leveled[:5])} have a level (patient or visit) but the schema "
                                 "names no patient column")
            return
        for role, name in (("patient", self.patient), ("time", self.time)):
            if name not in known:
                raise ValueError(f"{role} column '{name}' is not a column of the schema")
        if self.column(self.patient).kind != "id":
            raise ValueError(f"patient column '{self.patient}' must be of kind id")
        if self.column(self.time).kind not in ("continuous", "integer", "datetime"):
            raise ValueError(f"time column '{self.time}' must be continuous, integer or datetime")
        if self.longitudinal:
            raise ValueError("a long-format schema (a patient column) has no wide longitudinal groups")
        if self.privacy_unit == "row":
            raise ValueError("a long-format schema's privacy unit is the patient, not the row")
        for c in self.columns:
            if c.name not in (self.patient, self.time) and c.level is None:
                raise ValueError(f"column '{c.name}': a long-format schema says of each column whether it is "
                                 "per 'patient' or per 'visit' (level)")
        if self.target is not None and self.column(self.target).level != "patient":
            raise ValueError(f"target '{self.target}' must be a per-patient column (level: patient)")

    @property
    def is_long(self) -> bool:
        """One row per visit, several per patient (``patient`` and ``time`` named)."""
        return self.patient is not None

    # -- lookup -------------------------------------------------------------------------
    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def model_columns(self) -> list[ColumnSpec]:
        """Columns a model learns from: all but identifiers."""
        return [c for c in self.columns if c.kind != "id"]

    def timelines(self) -> list[tuple[tuple[str, ...], list[LongitudinalGroup]]]:
        """Longitudinal groups bundled by their shared visit list, largest first."""
        by_visits: dict[tuple[str, ...], list[LongitudinalGroup]] = {}
        for g in self.longitudinal:
            by_visits.setdefault(tuple(g.visits), []).append(g)
        return sorted(by_visits.items(), key=lambda kv: -sum(len(g.columns) for g in kv[1]))

    # -- persistence --------------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)

    @classmethod
    def from_json(cls, text: str, source: str = "schema") -> Schema:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{source} is not valid JSON: {e}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = [f"{'.'.join(str(p) for p in err['loc']) or 'schema'}: {err['msg']}" for err in e.errors()]
            raise SchemaError(f"{source} is not a valid clinsynth schema:", problems) from None

    def save(self, path: str | Path) -> None:
        from clinsynth.data.io import write_text_atomic

        write_text_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.is_file():
            raise SchemaError(f"schema file '{path}' does not exist")
        return cls.from_json(path.read_text(), source=f"schema file '{path}'")

    # -- inference ----------------------------------------------------------------------
    @classmethod
    def infer(
        cls,
        df: pd.DataFrame,
        target: str | None = None,
        longitudinal: Sequence[LongitudinalGroup] | Literal["auto"] | None = "auto",
        ids: Iterable[str] = (),
        privacy_unit: Literal["row"] | None = None,
        patient: str | None = None,
        time: str | None = None,
    ) -> Schema:
        """Infer a schema from a frame; edit the result (or its JSON) where it guessed wrong.

        Raises one ``SchemaError`` listing every column it cannot read (all missing, mixed types,
        infinite or unscalable numbers, nested values); a one-row table is refused outright.
        ``privacy_unit="row"`` declares each row a different person, which a DP fit of a table whose
        identifier column repeats requires (:mod:`clinsynth.privacy.unit`).
        ``patient`` and ``time`` name the columns of a long-format table (one row per visit): each other
        column is then found per patient or per visit (:mod:`clinsynth.long_schema`).
        """
        check_frame_basics(df)
        check_trainable(df)
        if target is not None and target not in df.columns:
            raise SchemaError(absent_column("target", target, df.columns))
        if (patient is None) != (time is None):
            raise SchemaError("a long-format table needs both its patient column and its time column")
        levels: dict[str, str] = {}
        if patient is not None:
            from clinsynth.long_schema import check_layout_columns, infer_levels

            check_layout_columns(df, patient, time, target)
            levels = infer_levels(df, patient, time, target)
            longitudinal = []
        ids = set(ids) | ({patient} if patient is not None else set())
        problems: list[str] = []
        specs: list[ColumnSpec] = []
        for name in df.columns:
            try:
                specs.append(_infer_column(df[name], is_target=name == target, force_id=name in ids))
            except SchemaError as e:
                problems.append(str(e))
        if problems:
            raise SchemaError("cannot infer a schema; fix these columns first:", problems)
        if target is not None:
            spec = next(s for s in specs if s.name == target)
            if df[target].nunique() < 2:
                raise SchemaError(f"target column '{target}' has only one class ({_python([df[target].dropna().iloc[0]])[0]!r}); "
                                  "a class-conditional model needs at least 2")
            if spec.kind not in DISCRETE_KINDS:
                raise SchemaError(f"target column '{target}' has {df[target].nunique()} distinct numeric values; "
                                  "a target must be a class label (binary or categorical)")
            if df[target].isna().any():
                raise SchemaError(blank_target_problem(target, int(df[target].isna().sum()), len(df)))
        groups = detect_longitudinal(df.columns, specs) if longitudinal == "auto" else list(longitudinal or [])
        specs = _longitudinal_missing_policy(df, specs, groups)
        specs = [s.model_copy(update={"level": levels[s.name]}) if s.name in levels else s for s in specs]
        try:
            return cls(columns=specs, target=target, longitudinal=groups, privacy_unit=privacy_unit,
                       patient=patient, time=time)
        except ValidationError as e:
            raise SchemaError("inferred schema is inconsistent:", [err["msg"] for err in e.errors()]) from None

    # -- validation ---------------------------------------------------------------------
    def _after_dropout(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per longitudinal column, the rows where it is empty because the participant had left.

        Columns absent from ``df`` are left out (they are reported on their own), so one absent
        column does not turn every dropout gap of the others into a problem.
        """
        out: dict[str, np.ndarray] = {}
        for visits, groups in self.timelines():
            if not all(g.dropout for g in groups):
                continue
            observed = np.zeros((len(df), len(visits)), dtype=bool)
            for g in groups:
                for j, col in enumerate(g.columns):
                    if col in df.columns:
                        observed[:, j] |= df[col].notna().to_numpy()
            last = np.where(observed.any(axis=1), len(visits) - np.argmax(observed[:, ::-1], axis=1), 0)
            for g in groups:
                for j, col in enumerate(g.columns):
                    out[col] = last < j + 1
        return out

    def validate(self, df: pd.DataFrame) -> None:
        """Raise one ``SchemaError`` listing every column of ``df`` that breaks this schema."""
        check_frame_basics(df)
        problems: list[str] = []
        missing = [n for n in self.names if n not in df.columns]
        extra = [n for n in df.columns if n not in set(self.names)]
        if missing:
            problems.append(f"columns in the schema but not in the table: {_preview(missing)}")
        if extra:
            problems.append(f"columns in the table but not in the schema: {_preview(extra)} (add them to the schema or drop them)")
        allowed_missing = self._after_dropout(df)
        for spec in self.columns:
            if spec.name in df.columns:
                problems.extend(_column_problems(spec, df[spec.name], allowed_missing.get(spec.name)))
        if self.is_long:
            from clinsynth.long_schema import layout_problems

            problems.extend(layout_problems(df, self))
        if self.target is not None and self.target in df.columns:
            n_classes = df[self.target].nunique(dropna=True)
            if n_classes < 2:
                problems.append(f"target '{self.target}' has {n_classes} class(es); a class-conditional model needs at least 2")
            blanks = int(df[self.target].isna().sum())  # a target is never in a longitudinal group: no dropout
            if blanks:
                problems.append(blank_target_problem(self.target, blanks, len(df)))
        if problems:
            raise SchemaError("the table does not match the schema:", problems)


# ---------------------------------------------------------------------------------------
def blank_target_problem(target: str, blanks: int, rows: int) -> str:
    """The refusal of a target with blanks: the class-conditional models and the utility test need
    every record's class (a blank reached scikit-learn as "Input contains NaN")."""
    return (f"target '{target}' is blank in {blanks:,} of {rows:,} rows; every row needs a class — give the "
            "blanks a class of their own (e.g. 'unknown'), or choose another target")


def check_frame_basics(df: pd.DataFrame) -> None:
    """Problems that make a frame unusable whatever the schema: no rows, no columns, duplicate names."""
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if df.shape[1] == 0:
        raise SchemaError("the table has no columns")
    if df.shape[0] == 0:
        raise SchemaError("the table has no rows")
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"duplicate column names: {', '.join(dupes)}; every column needs a unique name")
    not_text = [c for c in df.columns if not isinstance(c, str)]
    if not_text:  # a schema names columns by text: 0 and "0" would be different columns
        raise SchemaError(f"column names must be text, not {_preview(f'{c!r} ({type(c).__name__})' for c in not_text)}; "
                          "rename them, e.g. df.columns = df.columns.astype(str)")


def check_trainable(df: pd.DataFrame) -> None:
    """A table a model may learn from has at least 2 records: a model of one record can only copy it."""
    if len(df) < 2:
        raise SchemaError(f"the table has only {len(df)} row; clinsynth needs at least 2 records to learn from "
                          "(a model of one record would copy it)")


def parse_datetimes(s: pd.Series) -> pd.Series:
    """Dates and times as a datetime Series, NaT where a value is not one.

    Text with one UTC offset keeps it (a fixed-offset zone); text mixing offsets (or offsets and
    none) is read as UTC, the one zone that holds them all, where pandas would refuse.
    """
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    try:
        return pd.to_datetime(s, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):  # "Mixed timezones detected"
        return pd.to_datetime(s, errors="coerce", format="ISO8601", utc=True)


def wall_clock(ts: pd.Series) -> pd.Series:
    """Zone-aware times as the local times they show (the zone dropped); naive times as they are.

    Models learn dates as wall-clock time, so a column of local midnights stays whole days and
    bounds read as the steward reads them; the zone, kept in the column's ``dtype``, is put back
    on decoding."""
    return ts.dt.tz_localize(None) if getattr(ts.dt, "tz", None) is not None else ts


#: What pandas calls an object column that holds only plain values (one C pass decides it).
_PLAIN_OBJECTS = ("string", "boolean", "integer", "empty", "bytes", "date", "datetime", "time", "period", "interval")


def _nested(values: pd.Series) -> str | None:
    """The type of the first nested value (dict, list…) in an object column, or None."""
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) in _PLAIN_OBJECTS:
        return None
    nested = values.map(lambda v: isinstance(v, (dict, list, tuple, set, np.ndarray)))
    return type(values[nested].iloc[0]).__name__ if nested.any() else None


def _number_problem(name: str, x: np.ndarray) -> str | None:
    """Infinite numbers, or numbers too large to scale (see ``MAX_MAGNITUDE``), in a column."""
    infinite = np.isinf(x)
    if infinite.any():
        signs = ", ".join(sorted({"inf" if v > 0 else "-inf" for v in x[infinite]}))
        return (f"column '{name}' has {int(infinite.sum())} infinite value(s) ({signs}); "
                "blank them (a missing value) or replace them with numbers")
    huge = np.abs(x) > MAX_MAGNITUDE
    if huge.any():
        return (f"column '{name}' has {int(huge.sum())} value(s) beyond ±{MAX_MAGNITUDE:g} (e.g. {x[huge][0]:g}), "
                "too large to scale; blank them if they are error codes, or rescale the column (another unit)")
    return None


def absent_column(role: str, name: str, columns: Iterable[Any]) -> str:
    """The one line for a named column the table lacks: the closest name when there is one (a
    typo, or another case), else the columns there are."""
    names = [str(c) for c in columns]
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.75)
    hint = f"did you mean '{lowered[close[0]]}'?" if close else f"columns are: {_preview(names)}"
    return f"{role} column '{name}' is not in the table; {hint}"


def _preview(names: Iterable[Any], k: int = 8) -> str:
    names = [str(n) for n in names]
    more = f" … (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def _as_number(value: Any, kind: str) -> float:
    if kind == "datetime":
        return pd.Timestamp(value).value / 1e9
    return float(value)


def _python(values: Iterable[Any]) -> list[Category]:
    """Numpy scalars to plain Python so categories survive JSON."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _decimals(x: np.ndarray, max_decimals: int = 6, rel: float = 1e-9) -> int | None:
    for d in range(max_decimals + 1):
        if np.allclose(np.round(x, d), x, rtol=0, atol=rel * max(1.0, float(np.abs(x).max()))):
            return d
    return None


def _float_tolerance(dtype: Any) -> float:
    """Relative tolerance of ``_decimals``: float32 holds 1.2 only as 1.2000000477."""
    try:
        np_dtype = np.dtype(getattr(dtype, "numpy_dtype", dtype))
    except TypeError:
        return 1e-9
    return 4 * float(np.finfo(np_dtype).eps) if np_dtype.kind == "f" and np_dtype.itemsize < 8 else 1e-9


def _mixed_types(s: pd.Series) -> str | None:
    """Describe a column holding both numbers and text, or None."""
    values = s.dropna()
    if values.empty:
        return None
    if s.dtype == object:
        is_num = values.map(lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
        is_txt = values.map(lambda v: isinstance(v, str))
        if is_num.any() and is_txt.any():
            return f"mixes numbers and text (e.g. {values[is_num].iloc[0]!r} and {values[is_txt].iloc[0]!r})"
    if pd.api.types.is_string_dtype(s) or s.dtype == object:
        text = values.astype(str)
        parsed = pd.to_numeric(text, errors="coerce")
        bad = text[parsed.isna()]
        n_num = int(parsed.notna().sum())
        if n_num >= 0.8 * len(text) and len(bad) and parsed.nunique() > MAX_TARGET_CLASSES:
            return (f"is mostly numbers but has {len(bad)} text value(s) such as {bad.iloc[0]!r}; "
                    "fix or blank them, or declare the column categorical")
    return None


def _infer_column(s: pd.Series, is_target: bool, force_id: bool) -> ColumnSpec:
    name = str(s.name)
    values = s.dropna()
    if force_id:
        return ColumnSpec(name=name, kind="id", missing="indicator" if s.isna().any() else "none", dtype=str(s.dtype))
    if values.empty:
        raise SchemaError(f"column '{name}' is entirely missing; drop it or declare its kind in the schema")
    nested = _nested(values)
    if nested:
        raise SchemaError(f"column '{name}' holds nested values ({nested}); flatten them into plain columns")
    mixed = _mixed_types(s)
    if mixed:
        raise SchemaError(f"column '{name}' {mixed}")
    if s.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in _PLAIN_OBJECTS:
        # numbers held as Python objects are checked like a numeric column's
        floats = np.array([v for v in values if isinstance(v, (float, np.floating))], dtype=float)
        problem = _number_problem(name, floats) if floats.size else None
        if problem:
            raise SchemaError(problem)
    missing: MissingPolicy = "indicator" if s.isna().any() else "none"
    dtype = str(s.dtype)
    n_unique = values.nunique()
    common = dict(name=name, missing=missing, dtype=dtype)

    if pd.api.types.is_bool_dtype(s) or (s.dtype == object and values.map(lambda v: isinstance(v, (bool, np.bool_))).all()):
        return ColumnSpec(kind="binary", categories=[False, True], **common)
    if pd.api.types.is_datetime64_any_dtype(s):
        return _datetime_spec(values, common)
    if pd.api.types.is_numeric_dtype(s):
        x = values.to_numpy(dtype=float)
        problem = _number_problem(name, x)
        if problem:
            raise SchemaError(problem)
        whole = bool(np.all(np.mod(x, 1) == 0))
        if ID_NAME.search(name) and whole and n_unique == len(s) and len(s) > MAX_TARGET_CLASSES:
            return ColumnSpec(kind="id", **common)
        if n_unique == 2 or (is_target and n_unique == 1):
            return ColumnSpec(kind="binary" if n_unique == 2 else "categorical",
                              categories=sorted(_python(values.unique())), **common)
        if is_target and n_unique <= MAX_TARGET_CLASSES:
            return ColumnSpec(kind="categorical", categories=sorted(_python(values.unique())), **common)
        if whole:
            return ColumnSpec(kind="integer", bounds=(float(x.min()), float(x.max())), decimals=0, **common)
        return ColumnSpec(kind="continuous", bounds=(float(x.min()), float(x.max())), decimals=_decimals(x, rel=_float_tolerance(s.dtype)), **common)

    text = values.astype(str)
    if n_unique > 2 and not is_target:
        parsed = parse_datetimes(text.iloc[:1000])
        if parsed.notna().all() and text.iloc[:1000].str.contains(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}").all():
            full = parse_datetimes(text)
            if full.notna().all():
                return _datetime_spec(full, common)
    if (ID_NAME.search(name) or n_unique > MAX_CATEGORIES) and n_unique == len(s) and not is_target:
        return ColumnSpec(kind="id", **common)
    if n_unique > MAX_CATEGORIES and n_unique > 0.5 * len(values) and not is_target:
        raise SchemaError(f"column '{name}' has {n_unique} distinct text values in {len(values)} rows: "
                          "it looks like free text or an identifier; declare it as kind 'id' or drop it")
    cats = sorted(_python(values.unique()), key=str)
    kind: Kind = "binary" if n_unique == 2 else "categorical"
    if n_unique == 1:
        kind = "categorical"
    return ColumnSpec(kind=kind, categories=cats, **common)


def _datetime_spec(values: pd.Series, common: dict[str, Any]) -> ColumnSpec:
    """A datetime column: bounds and whole days read on the wall clock; a zone (from a zone-aware
    column, or from text with UTC offsets) is kept in ``dtype`` so decoding puts it back."""
    ts = parse_datetimes(values)
    zone = getattr(ts.dt, "tz", None)
    ts = wall_clock(ts)
    daily = bool((ts == ts.dt.normalize()).all())
    lo, hi = ts.min(), ts.max()
    dtype = common["dtype"] if "datetime" in common["dtype"] else \
        "datetime64[ns]" if zone is None else f"datetime64[ns, {zone}]"
    common = {**common, "dtype": dtype}
    return ColumnSpec(kind="datetime", bounds=(lo.isoformat(), hi.isoformat()), decimals=0 if daily else None, **common)


def visit_order(label: str) -> float:
    """Sort key of a visit label: baseline first, then by number (m01 < m02 < m12)."""
    m = _VISIT.match("x_" + label)
    if m is None:
        return float("inf")
    if m.group("label").lower() in _BASELINE_LABELS:
        return -1.0
    return float(m.group("num"))


def detect_longitudinal(columns: Iterable[Any], specs: Sequence[ColumnSpec]) -> list[LongitudinalGroup]:
    """Group numeric columns named ``<measure>_<visit>`` (``sbp_rz``, ``sbp_m01``…) with ≥ 3 visits."""
    kinds = {s.name: s.kind for s in specs}
    found: dict[str, list[tuple[str, str, str]]] = {}
    for col in map(str, columns):
        m = _VISIT.match(col)
        if m and kinds.get(col) in ("continuous", "integer"):
            unit = (m.group("unit") or "").lower()
            found.setdefault(m.group("measure"), []).append((col, m.group("label"), unit))
    groups = []
    for measure, items in found.items():
        units = {u for _, _, u in items if u}
        if len(items) < 3 or len(units) > 1:
            continue
        items.sort(key=lambda it: visit_order(it[1]))
        labels = [lab for _, lab, _ in items]
        if len(set(map(visit_order, labels))) != len(labels):
            continue
        groups.append(LongitudinalGroup(name=measure, columns=[c for c, _, _ in items], visits=labels))
    return groups


def _longitudinal_missing_policy(df: pd.DataFrame, specs: list[ColumnSpec],
                                 groups: Sequence[LongitudinalGroup]) -> list[ColumnSpec]:
    """In a timeline with dropout, only missingness *before* dropout needs a per-cell indicator."""
    by_name = {s.name: s for s in specs}
    by_visits: dict[tuple[str, ...], list[LongitudinalGroup]] = {}
    for g in groups:
        by_visits.setdefault(tuple(g.visits), []).append(g)
    for members in by_visits.values():
        if not all(g.dropout for g in members):
            continue
        last = last_observed_visit(df, members)
        for g in members:
            observed = df[g.columns].notna().to_numpy()
            visit = np.arange(1, len(g.columns) + 1)
            intermittent = (~observed) & (visit[None, :] <= last[:, None])
            for j, col in enumerate(g.columns):
                policy: MissingPolicy = "indicator" if intermittent[:, j].any() else "none"
                by_name[col] = by_name[col].model_copy(update={"missing": policy})
    return [by_name[s.name] for s in specs]


def last_observed_visit(df: pd.DataFrame, groups: Sequence[LongitudinalGroup]) -> np.ndarray:
    """Per row, the 1-based index of the last visit with any observed measure (0: none observed)."""
    n_visits = len(groups[0].visits)
    observed = np.zeros((len(df), n_visits), dtype=bool)
    for g in groups:
        observed |= df[g.columns].notna().to_numpy()
    any_obs = observed.any(axis=1)
    last = n_visits - np.argmax(observed[:, ::-1], axis=1)
    return np.where(any_obs, last, 0)


def _column_problems(spec: ColumnSpec, s: pd.Series, after_dropout: np.ndarray | None = None) -> list[str]:
    name = spec.name
    if spec.kind == "id":
        return []
    values = s.dropna()
    problems = []
    if values.empty:
        return [f"column '{name}' is entirely missing"]
    nested = _nested(values)
    if nested:
        return [f"column '{name}' holds nested values ({nested}); flatten them into plain columns"]
    unexplained = s.isna().to_numpy() if after_dropout is None else s.isna().to_numpy() & ~after_dropout
    if spec.missing == "none" and unexplained.any():
        where = "" if after_dropout is None else " before the participant's last visit"
        problems.append(f"column '{name}' has {int(unexplained.sum())} missing value(s){where} but its missing policy is 'none' "
                        "(set \"missing\": \"indicator\" in the schema)")
    if spec.kind in DISCRETE_KINDS:
        cats = pd.Index(spec.categories or [])
        unknown = values[~values.isin(cats)]
        if len(unknown):
            problems.append(f"column '{name}' has value(s) not in its categories: {_preview(sorted(map(str, unknown.unique())), 5)} "
                            f"(categories: {_preview(cats, 5)})")
        return problems
    if spec.kind == "datetime":
        parsed = parse_datetimes(values)
        if parsed.isna().any():
            problems.append(f"column '{name}' is datetime but {int(parsed.isna().sum())} value(s) are not dates, e.g. {values[parsed.isna()].iloc[0]!r}")
        return problems
    mixed = _mixed_types(s)
    if mixed:
        return problems + [f"column '{name}' {mixed}"]
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        parsed = pd.to_numeric(values, errors="coerce")
        if parsed.isna().any():
            bad = values[parsed.isna()]
            return problems + [f"column '{name}' is {spec.kind} but holds text such as {bad.iloc[0]!r}"]
        values = parsed
    x = values.to_numpy(dtype=float)
    problem = _number_problem(name, x)
    if problem:
        return problems + [problem]
    if spec.kind == "integer" and np.any(np.mod(x, 1) != 0):
        problems.append(f"column '{name}' is integer but holds fractions such as {x[np.mod(x, 1) != 0][0]}")
    if spec.public and spec.bounds is not None:
        lo, hi = float(spec.bounds[0]), float(spec.bounds[1])
        outside = (x < lo) | (x > hi)
        if outside.any():
            problems.append(f"column '{name}' has {int(outside.sum())} value(s) outside its declared bounds [{lo}, {hi}]")
    return problems
