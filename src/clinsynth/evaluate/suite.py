"""One evaluation of a synthetic table: fidelity, utility and privacy attacks, with verdicts.

``evaluate`` is the API behind ``clinsynth evaluate`` and the report: it takes frames (and,
from the caller, what the model promised), never a model, and returns an :class:`Evaluation`
whose ``to_dict()`` is ``metrics.json``: every number the report shows, and the report is
drawn from it alone.

The result is the data's family's: a :class:`TableEvaluation` for a table, a
:class:`PatientEvaluation` for a long-format table (the table parts per patient plus the
patients' shape), a :class:`CodeEvaluation` for three :class:`~clinsynth.data.ehr.CodeMatrix`
objects (a ``codes`` section in place of ``fidelity``, ``utility`` and ``privacy_attacks``).

``level`` (full, fast, none) sets how much work it may do; the caps that keep ``full`` finite on
many classes, columns and rows are in :mod:`clinsynth.evaluate.bounds`, and what they changed is
in ``metrics["evaluation"]``.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clinsynth.data.io import jsonable, write_text_atomic
from clinsynth.errors import InputError
from clinsynth.evaluate import bounds
from clinsynth.evaluate.bounds import Limits
from clinsynth.evaluate.verdicts import verdicts
from clinsynth.schema import Schema


def no_guarantee(model: str | None = None) -> dict[str, Any]:
    """The guarantee of a model trained without differential privacy: none."""
    return {"differentially_private": False, "model": model}


@dataclass(kw_only=True)
class Evaluation:
    """What every family's evaluation carries: the context the report needs, the guarantee, the
    level with its limits and caps (see :mod:`clinsynth.evaluate.bounds`), and the seconds each
    part took. A family's subclass adds its result objects (:class:`TableEvaluation`,
    :class:`PatientEvaluation`, :class:`CodeEvaluation`); ``to_dict()`` is ``metrics.json``."""

    context: dict[str, Any]
    guarantee: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=lambda: _evaluation_section(bounds.LEVELS["full"], []))

    def _parts(self) -> dict[str, Any]:
        """The family's sections of ``metrics.json`` (before ``seconds``)."""
        return {}

    def _extra(self) -> dict[str, Any]:
        """The family's sections after ``seconds``."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        metrics = jsonable({**self.context, "evaluation": self.evaluation, "guarantee": self.guarantee,
                            **self._parts(), "seconds": self.seconds, **self._extra()})
        metrics["verdicts"] = verdicts(metrics)
        return metrics

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def to_html(self, path: str | Path) -> Path:
        from clinsynth.report.html import write_report

        return write_report(self.to_dict(), path)


@dataclass(kw_only=True)
class TableEvaluation(Evaluation):
    """A table's evaluation: fidelity, utility (None without a target) and the privacy attacks;
    each None when the level runs none."""

    fidelity: Any | None = None
    utility: Any | None = None
    privacy_attacks: Any | None = None

    def _parts(self) -> dict[str, Any]:
        def part(result: Any) -> Any:
            return result.to_dict() if result is not None else None

        return {"fidelity": part(self.fidelity), "utility": part(self.utility),
                "privacy_attacks": part(self.privacy_attacks)}


@dataclass(kw_only=True)
class PatientEvaluation(TableEvaluation):
    """A long table's evaluation: the table parts read one record per patient, plus the
    patient-level shape (visits per patient, gaps, order, trajectories)."""

    patients: dict[str, Any]

    def _extra(self) -> dict[str, Any]:
        return {"patients": self.patients}


@dataclass(kw_only=True)
class CodeEvaluation(Evaluation):
    """A code matrix's evaluation (:func:`clinsynth.evaluate.codes.evaluate_codes`)."""

    codes: dict[str, Any]

    def _parts(self) -> dict[str, Any]:
        return {"codes": self.codes}


def _check_columns(name: str, df: pd.DataFrame, schema: Schema) -> None:
    missing = [c.name for c in schema.model_columns if c.name not in df.columns]
    if missing:
        raise InputError(f"{name} table lacks schema column(s) {', '.join(missing[:8])}"
                         f"{' …' if len(missing) > 8 else ''}; is it the table the schema describes?")
    if len(df) < 2:
        raise InputError(f"{name} table has {len(df)} row(s); evaluation needs at least 2")


def _evaluation_section(limits: Limits, capped: list[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json's ``evaluation``: the level, its limits, and each cap that applied (part, what,
    column or table, total, kept)."""
    return {"level": limits.level, "limits": limits.to_dict(), "capped": capped}


def _evaluate_codes(real_train: Any, real_test: Any, synthetic: Any, guarantee: dict[str, Any] | None,
                    model: dict[str, Any] | None, dataset: str, seed: int, max_queries: int,
                    progress: Any, limits: Limits) -> Evaluation:
    from clinsynth import __version__
    from clinsynth.data.ehr import CodeMatrix
    from clinsynth.evaluate.codes import evaluate_codes

    named = (("real_train", real_train), ("real_test", real_test), ("synthetic", synthetic))
    others = [f"{name} is a {type(x).__name__}" for name, x in named if not isinstance(x, CodeMatrix)]
    if others:
        raise InputError("code matrices are evaluated against code matrices: real_train, real_test and synthetic "
                         f"must all be CodeMatrix objects, but {', '.join(others)}")
    kept = synthetic.n_codes
    if set(synthetic.vocabulary) < set(real_train.vocabulary):  # a DP vocabulary: the codes it dropped are never sampled
        synthetic = synthetic.widened_to(real_train.vocabulary)
    codes = evaluate_codes(real_train, real_test, synthetic, seed=seed, max_queries=max_queries, progress=progress,
                           level=limits.level)
    if kept < synthetic.n_codes:
        codes["synthetic_vocabulary"] = {"kept": kept, "of": synthetic.n_codes}
    context = {
        "clinsynth_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seed": seed,
        "dataset": {"name": "code matrix" if dataset == "table" else dataset, "kind": "codes",
                    "n_train": real_train.n_patients, "n_test": real_test.n_patients,
                    "n_synthetic": synthetic.n_patients, "n_codes": real_train.n_codes, "binary": real_train.binary},
        "model": model,
    }
    return CodeEvaluation(context=context, guarantee=guarantee or no_guarantee((model or {}).get("name")),
                          seconds=dict(codes["seconds"]), codes=codes,
                          evaluation=_evaluation_section(limits, codes.pop("capped")))


def evaluate(real_train: Any, real_test: Any, synthetic: Any, schema: Schema | None = None,
             guarantee: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
             dataset: str = "table", seed: int = 0, max_queries: int = 20_000, progress: Any = None,
             level: str = "full") -> Evaluation:
    """Score ``synthetic`` against the records the model saw (``real_train``) and a holdout it
    never saw (``real_test``). ``guarantee`` is what the model promises (see ``no_guarantee``);
    ``progress(step)`` is called before each step, for a progress display.

    ``level``: ``"full"`` (every part, within the caps of :mod:`clinsynth.evaluate.bounds`),
    ``"fast"`` (fewer models, rows, columns and queries: see there) or ``"none"`` (no real-data
    evaluation: the frames are not read and may be None; the report holds the guarantee and the
    model). ``metrics["evaluation"]`` records the level and every cap that applied.

    Frames need their ``schema``; three :class:`~clinsynth.data.ehr.CodeMatrix` objects (same
    vocabulary) need none and get the code-matrix evaluation."""
    from clinsynth import __version__

    from clinsynth.data.kinds import data_kind

    limits = bounds.limits_for(level)
    if any(data_kind(x) == "codes" for x in (real_train, real_test, synthetic)):
        return _evaluate_codes(real_train, real_test, synthetic, guarantee, model, dataset, seed, max_queries, progress,
                               limits)
    if schema is None:
        raise InputError("evaluating tables needs their schema (schema=…); only code matrices are evaluated without one")
    patients = None
    if data_kind(real_train, schema) == "patients" and limits.evaluate:  # patients, not rows: every part below reads one record per patient
        real_train, real_test, synthetic, schema, patients = patient_records(real_train, real_test, synthetic,
                                                                               schema, seed, progress)
    if limits.evaluate:
        for name, df in (("real training", real_train), ("real holdout", real_test), ("synthetic", synthetic)):
            _check_columns(name, df, schema)

    def size(df: Any) -> int | None:
        return len(df) if limits.evaluate and df is not None else None

    context = {
        "clinsynth_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seed": seed,
        "dataset": {"name": dataset, "n_train": size(real_train), "n_test": size(real_test),
                    "n_synthetic": size(synthetic), "n_columns": len(schema.model_columns)},
        "model": model,
        "schema": {"target": schema.target,
                   "longitudinal": [{"name": g.name, "columns": g.columns} for g in schema.longitudinal],
                   "sensitive": [c.name for c in schema.columns if c.sensitive],
                   "quasi_identifiers": [c.name for c in schema.columns if c.quasi_identifier]},
    }
    guarantee = guarantee or no_guarantee((model or {}).get("name"))
    seconds: dict[str, float] = {}
    capped: list[dict[str, Any]] = []
    if not limits.evaluate:
        return TableEvaluation(context=context, guarantee=guarantee, seconds=seconds,
                               evaluation=_evaluation_section(limits, capped))

    def step(name: str, fn: Any) -> Any:
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        result = fn()
        seconds[name] = round(time.perf_counter() - start, 2)
        return result

    from clinsynth.evaluate.parts import bounded_attacks, bounded_fidelity, bounded_utility

    fid = step("fidelity", lambda: bounded_fidelity(real_train, synthetic, schema, limits, seed, capped))
    util = (step("utility", lambda: bounded_utility(real_train, real_test, synthetic, schema, limits, seed, capped))
            if schema.target else None)
    attacks = step("privacy attacks", lambda: bounded_attacks(real_train, real_test, synthetic, schema, limits, seed,
                                                              max_queries, capped))
    parts = dict(context=context, guarantee=guarantee, seconds=seconds, evaluation=_evaluation_section(limits, capped),
                 fidelity=fid, utility=util, privacy_attacks=attacks)
    return TableEvaluation(**parts) if patients is None else PatientEvaluation(**parts, patients=patients)


def patient_records(real_train: pd.DataFrame, real_test: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema,
                     seed: int, progress: Any) -> tuple[Any, ...]:
    """A long table's three sides as one record per patient (per-patient columns, first and last
    value of each lab, visits, follow-up, missing share: :mod:`clinsynth.evaluate.patient_features`)
    with their schema — so fidelity, utility and the attacks compare patients, and membership means
    a patient — plus the patient-level shape (visits per patient, gaps, order, per-visit marginals,
    within-patient correlation, trajectories: :func:`clinsynth.evaluate.patients.evaluate_patients`)."""
    from clinsynth.evaluate.patient_features import feature_tables
    from clinsynth.evaluate.patients import LongLayout, patient_metrics, read_tables

    if progress is not None:
        progress("patients")
    layout = LongLayout.from_schema(schema)
    tables = read_tables(real_train, real_test, synthetic, layout)  # read once: the shape and the parts below
    features = feature_tables(tables, layout, schema)
    shape = patient_metrics(tables, features, layout, seed, utility=False, privacy=False)
    return features.train, features.test, features.synthetic, features.schema, shape
