"""The end-to-end jobs the CLI exposes, as plain functions: the CLI only parses and prints.

``run_release`` is the main job (``clinsynth run``): from one table to the five files of a
release; ``run_code_release`` the same for an EHR code matrix (``clinsynth run --codes``), whose
synthetic patients are written back in long format. ``run_demo`` and ``run_ehr_demo`` are the
same on bundled simulated data (the trial, the EHR extract), the first thing a newcomer runs;
``run_long_demo`` the same on the simulated long-format trial (one row per visit). ``fit_bundle``
is ``clinsynth fit`` (a model bundle, no release) and ``write_sample`` what ``clinsynth sample``
writes. The holdout splits are in :mod:`clinsynth.splits`, what a model promises in
:mod:`clinsynth.guarantee`.

A release is a folder of two parts (see :mod:`clinsynth.data.output_dir` for how it is written):

* ``share/`` — what may leave the steward's hands: the synthetic table, the model bundle and
  ``guarantee.html`` (the privacy guarantee and ledger, no figure computed on real records);
* ``steward/`` — what may not: ``report.html`` and ``metrics.json`` (the evaluation on real data)
  and ``manifest.json`` (the input's path and hashes, config, seeds, versions, timings).

Size: ~550 lines: the three jobs (a table release, a code-matrix release, the demos) each write
the same two-part release through the same helpers.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from clinsynth import threads
from clinsynth.data.digest import codes_hash, file_hash, table_hash  # noqa: F401 (the manifest's hashes, re-exported)
from clinsynth.data.io import jsonable, write_table, write_text_atomic
from clinsynth.data.output_dir import Stage, output_size, staged_output
from clinsynth.errors import ConfigError
from clinsynth.guarantee import guarantee_of, privacy_unit_of
from clinsynth.privacy.budget import Privacy, budget
from clinsynth.schema import Schema
from clinsynth.splits import split_holdout, split_patients, split_patients_holdout


@dataclass
class RunConfig:
    """Everything that decides a release, recorded in its manifest."""

    target: str | None
    model: str = "auto"  # a registry name; auto chooses by models.registry.choose_model
    epsilon: float | None = None
    delta: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.2
    n_synthetic: int | None = None  # default: as many as the training split (patients, for a long table)
    max_visits: int = 100  # long format: a patient with more visits is refused ...
    truncate_visits: bool = False  # ... or, with this, cut to their first max_visits visits
    seed: int = 0
    output_format: str = "csv"
    max_queries: int = 20_000
    csv_safe: bool = True  # quote formula-like text in CSV output (see data.io.write_table)
    evaluate: str = "full"  # evaluation level: full, fast or none (see clinsynth.evaluate.bounds)

    def privacy(self) -> Privacy | None:
        """The budget the model is given: ``epsilon`` and ``delta`` as one ``Privacy`` (None without ε)."""
        return budget(self.epsilon, self.delta)


@dataclass
class CodeColumns:
    """The column names of a long-format code table, read and written with the same names."""

    patient_col: str = "patient_id"
    code_col: str = "code"
    count_col: str = "count"


@dataclass
class RunResult:
    out_dir: Path
    files: dict[str, Path]
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    seconds: float = 0.0


SHARE, STEWARD = "share", "steward"


class _Release:
    """The parts every release shares: checked options, timed steps, metrics, report, manifest.

    Everything is written into a staging folder (``stage.dir``) that appears at ``--out`` whole
    when the run ends, so a reader never sees a half-written or mixed release.
    """

    def __init__(self, config: RunConfig, stage: Stage, on_step: Any = None):
        check_run_config(config)
        self.stage = stage
        self.out = stage.path
        self.share = stage.dir / SHARE
        self.steward = stage.dir / STEWARD
        self.share.mkdir(exist_ok=True)
        self.steward.mkdir(exist_ok=True)
        self.config = config
        self.say = on_step or (lambda name: None)
        self.choice: Any = None  # what auto chose and why, when it chose
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    def step(self, name: str, fn: Any) -> Any:
        self.say(name)
        t = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t, 2)
        return result

    def fit_and_sample(self, train: Any, schema: Schema | None, n_train: int, progress: bool) -> tuple[Any, Any]:
        """The model fitted on ``train`` (or, on a resume after the fit, the one saved then) and
        its synthetic records: as many as it trained on unless configured."""
        from clinsynth.models.auto import build, resolve
        from clinsynth.models.registry import load

        params = dict(self.config.params)
        privacy = self.config.privacy()
        name, self.choice = resolve(self.config.model, train, schema, privacy)
        if self.choice is not None:
            self.say(self.choice.reason)
        bundle = self.share / "model"
        if self.stage.done("fit") is not None and bundle.is_dir():
            self.say("fit (resumed: the model was saved before the interruption)")
            model = load(bundle)
        else:
            model = build(name, params, self.choice, privacy, seed=self.config.seed, progress=progress)
            self.step("fit", lambda: model.fit(train, schema, checkpoint_dir=checkpoints_of(model, self.stage)))
            model.write_bundle(bundle)
            self.stage.mark("fit")
        n = self.config.n_synthetic or n_train
        return model, self.step("sample", lambda: model.sample(n, seed=self.config.seed))

    def evaluate(self, model: Any, train: Any, test: Any, synthetic: Any, schema: Schema | None,
                 dataset: str) -> dict[str, Any]:
        from clinsynth.evaluate.suite import evaluate

        guarantee = self.step("privacy ledger", lambda: guarantee_of(model))
        evaluation = self.step("evaluate", lambda: evaluate(
            train, test, synthetic, schema, guarantee=guarantee,
            model=self.model_facts(model), dataset=dataset,
            seed=self.config.seed, max_queries=self.config.max_queries, progress=self.say, level=self.config.evaluate))
        return evaluation.to_dict()

    def model_facts(self, model: Any) -> dict[str, Any]:
        """The model as the report and manifest name it: name, parameters, and auto's choice."""
        facts = {"name": model.name, "params": jsonable(model.get_params())}
        return {**facts, "choice": self.choice.to_dict()} if self.choice is not None else facts

    def finish(self, model: Any, files: dict[str, Path], metrics: dict[str, Any], input_info: dict[str, Any],
               split: dict[str, Any], extra: dict[str, Any] | None = None) -> RunResult:
        from clinsynth import __version__
        from clinsynth.models.base import library_versions
        from clinsynth.report.html import write_guarantee, write_report

        files["model"] = self.share / "model"
        files["guarantee"] = write_guarantee(metrics, self.share / "guarantee.html")
        files["metrics"] = self.steward / "metrics.json"
        write_text_atomic(files["metrics"], json.dumps(metrics, indent=1) + "\n")
        files["report"] = self.step("report", lambda: write_report(metrics, self.steward / "report.html"))
        self.timings["total"] = round(time.perf_counter() - self.start, 2)
        seed = self.config.seed
        manifest = {
            "clinsynth_version": __version__,
            "created": metrics["created"],
            "config": jsonable(asdict(self.config)),
            **(extra or {}),
            "model": {**self.model_facts(model), "resolved_params": jsonable(model.resolved_params())},
            "input": input_info,
            "split": split,
            "seeds": {"split": seed, "model": seed, "sample": seed, "evaluation": seed},
            "versions": library_versions(),
            "device": str(getattr(model, "device_", "cpu")),
            "threads": threads.describe(),
            **({"privacy_unit": privacy_unit_of(model)} if getattr(model, "ledger_", None) is not None else {}),
            "timings_seconds": self.timings,
            "resumed": self.stage.resumed,
            "files": {k: {"path": self._relative(v), **({"sha256": file_hash(v)} if v.is_file() else {})}
                      for k, v in files.items()},
        }
        files["manifest"] = self.steward / "manifest.json"
        write_text_atomic(files["manifest"], json.dumps(jsonable(manifest), indent=1) + "\n")
        final = {k: self.out / self._relative(v) for k, v in files.items()}
        return RunResult(self.out, final, metrics, manifest, seconds=time.perf_counter() - self.start)

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.stage.dir))


def check_run_config(config: RunConfig) -> None:
    """Options a release cannot run with, refused before anything is read or written."""
    if config.output_format not in ("csv", "parquet"):
        raise ConfigError(f"output format must be csv or parquet, got {config.output_format!r}")
    if config.n_synthetic is not None and config.n_synthetic < 1:
        raise ConfigError(f"n_synthetic must be at least 1, got {config.n_synthetic}")
    if not 0 < config.test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {config.test_size}")
    from clinsynth.evaluate.bounds import limits_for

    limits_for(config.evaluate)  # an unknown level is refused here
    privacy = config.privacy()  # a budget that cannot work, and a DP model without one, are refused here
    if config.model != "auto":
        from clinsynth.models.registry import check_hyperparameters, private_name

        check_hyperparameters(private_name(config.model, privacy), config.params)


def release_reserve(inputs: tuple[str | Path, ...]) -> int:
    """Free space a release asks for before it starts: the synthetic table is about the size of
    the input (× 3 for a CSV of a Parquet input and the model), plus 20 MB for the rest."""
    return 3 * output_size(list(inputs)) + (20 << 20)


@contextmanager
def open_release(out_dir: str | Path, overwrite: bool = False, resume: bool = False,
                 inputs: tuple[str | Path, ...] = ()) -> Iterator[Stage]:
    """Check, lock and stage the release folder, before any data is read; commit it whole at the
    end of the block. ``inputs`` are the files the release reads: their size sets the free space
    asked for."""
    with staged_output(out_dir, "release", overwrite=overwrite, resume=resume,
                       reserve_bytes=release_reserve(inputs)) as stage:
        yield stage


@contextmanager
def _staged(out: str | Path | Stage, overwrite: bool, resume: bool) -> Iterator[Stage]:
    if isinstance(out, Stage):
        yield out
    else:
        with open_release(out, overwrite=overwrite, resume=resume) as stage:
            yield stage


def run_fingerprint(*parts: Any) -> str:
    """What ties an interrupted run to its resume: the same data (a content hash among ``parts``)
    and the same options."""
    return hashlib.sha256(json.dumps(jsonable(list(parts)), sort_keys=True).encode()).hexdigest()


def checkpoints_of(model: Any, stage: Stage) -> Path | None:
    """The stage's checkpoint folder for a model that writes checkpoints, else None: a model that
    writes none refuses a folder (``fit --model visitrnn`` failed with "writes no checkpoints yet")."""
    return stage.checkpoint_dir if getattr(model, "checkpoints", False) else None


def fit_bundle(df: pd.DataFrame, schema: Schema, stage: Stage, model: str, params: dict[str, Any],
               privacy: Privacy | None, seed: int = 0, progress: bool = True, max_visits: int = 100,
               truncate_visits: bool = False, on_choice: Any = None) -> tuple[Any, pd.DataFrame]:
    """``clinsynth fit``: the model ``model`` (a registry name; ``auto`` chooses and ``on_choice(reason)``
    is told why) fitted on ``df`` and written as a bundle into ``stage`` (a bundle stage the caller
    opened: checkpoints go there, and a resume must be of the same data and options). A long-format
    table's patients with more than ``max_visits`` visits are refused (or cut: ``truncate_visits``).
    Returns the fitted model and the table it learned from."""
    from clinsynth.models.auto import build, resolve

    schema.validate(df)
    if schema.is_long:
        from clinsynth.long_schema import limit_visits

        df = limit_visits(df, schema.patient, schema.time, max_visits, truncate_visits)
    stage.claim(run_fingerprint(model, params, privacy, seed, schema.to_json(), table_hash(df)))
    name, choice = resolve(model, df, schema, privacy)
    fitted = build(name, params, choice, privacy, seed=seed, progress=progress)
    if choice is not None and on_choice is not None:
        on_choice(choice.reason)
    fitted.fit(df, schema, checkpoint_dir=checkpoints_of(fitted, stage))
    fitted.write_bundle(stage.dir)
    return fitted, df


def fit_engine_bundle(rows: Any, schema: Schema, stage: Stage, model: str, params: dict[str, Any],
                      privacy: Privacy | None, seed: int = 0, progress: bool = True) -> Any:
    """``clinsynth fit`` on an engine's table (``clinsynth.engines``: the rows stay in DuckDB or Spark): the
    counting model ``model`` fitted on its counts and written as a bundle into ``stage``."""
    from clinsynth.engines.choose import source_fingerprint
    from clinsynth.models.auto import build, resolve

    stage.claim(run_fingerprint(model, params, privacy, seed, schema.to_json(), source_fingerprint(rows.source)))
    name, _ = resolve(model, None, schema, privacy)
    fitted = build(name, params, None, privacy, seed=seed, progress=progress)
    fitted.fit(rows, schema)
    fitted.write_bundle(stage.dir)
    return fitted


def file_source(data: Path) -> dict[str, Any]:
    """The input file as the manifest names it."""
    return {"name": data.name, "path": str(data), "file_sha256": file_hash(data)}


def run_release(df: pd.DataFrame, config: RunConfig, out_dir: str | Path | Stage, schema: Schema | None = None,
                source: dict[str, Any] | None = None, progress: bool = True,
                on_step: Any = None, overwrite: bool = False, resume: bool = False) -> RunResult:
    """The main job: holdout split, fit, sample, evaluate, report, manifest.

    ``out_dir`` is a folder (checked, locked, written whole: see :func:`open_release`) or a stage
    the caller opened. ``on_step(name)`` is told each step as it starts (the CLI prints it).
    """
    check_run_config(config)
    schema = schema or Schema.infer(df, target=config.target)
    schema.validate(df)
    if schema.is_long:  # patients with too many visits: refused, or cut when the config asks
        from clinsynth.long_schema import limit_visits

        df = limit_visits(df, schema.patient, schema.time, config.max_visits, config.truncate_visits)
    elif config.epsilon is not None:  # refused on the whole table, before anything is staged or split
        from clinsynth.privacy.unit import check_privacy_unit

        check_privacy_unit(df, schema)
    content = table_hash(df)
    with _staged(out_dir, overwrite, resume) as stage:
        stage.claim(run_fingerprint(asdict(config), content))
        release = _Release(config, stage, on_step)
        if schema.is_long:
            train, test = split_patients_holdout(df, schema.patient, schema.target, config.test_size, seed=config.seed)
            n_train, unit = int(train[schema.patient].nunique()), "patients"
        else:
            train, test = split_holdout(df, schema.target, config.test_size, seed=config.seed)
            n_train, unit = len(train), "rows"
        model, synthetic = release.fit_and_sample(train, schema, n_train, progress)
        files = {"synthetic": write_table(synthetic, release.share / f"synthetic.{config.output_format}",
                                                 csv_safe=config.csv_safe)}
        metrics = release.evaluate(model, train, test, synthetic, model.schema_, (source or {}).get("name", "table"))
        result = release.finish(
            model, files, metrics,
            input_info={**(source or {}), "rows": len(df), "columns": int(df.shape[1]), "table_sha256": content},
            split={"n_train": len(train), "n_test": len(test), "stratified_by": schema.target,
                   **({"n_train_patients": n_train, "n_test_patients": int(test[schema.patient].nunique()),
                       "by": "patient"} if unit == "patients" else {})})
    return result


#: rows of each side the evaluation reads when the table stays in the engine (bounded samples)
ENGINE_EVALUATION_ROWS = 50_000
#: synthetic rows drawn by default when the table stays in the engine (streamed sampling: later)
ENGINE_DEFAULT_SYNTHETIC = 100_000


def run_table_release(table: Any, config: RunConfig, out_dir: str | Path | Stage, schema: Schema | None = None,
                      source: dict[str, Any] | None = None, progress: bool = True, on_step: Any = None,
                      overwrite: bool = False, resume: bool = False) -> RunResult:
    """:func:`run_release` for a table an engine reads in place (``clinsynth.engines``): the
    holdout is ``test_size`` of the rows chosen by a hash of each row (identical rows together;
    not stratified), the model learns from the engine's counts of the rest, and the evaluation —
    for the steward's eyes, outside the release's guarantee — reads bounded reservoir samples of
    both sides (:data:`ENGINE_EVALUATION_ROWS` each); the manifest says so."""
    check_run_config(config)
    schema = schema or table.infer_schema(target=config.target, seed=config.seed)
    if schema.is_long:
        raise ConfigError("a long-format table (patients and visits) is not read through DuckDB yet: "
                          "pass --engine pandas with a CSV/Parquet file")
    content = (source or {}).get("fingerprint", "")
    with _staged(out_dir, overwrite, resume) as stage:
        stage.claim(run_fingerprint(asdict(config), content))
        release = _Release(config, stage, on_step)
        test, n_test = release.step("hold out", lambda: table.hold_out(config.test_size, config.seed,
                                                                       ENGINE_EVALUATION_ROWS))
        if config.n_synthetic is None:
            config = replace(config, n_synthetic=min(table.n, ENGINE_DEFAULT_SYNTHETIC))
            release.config = config
        model, synthetic = release.fit_and_sample(table, schema, table.n, progress)
        files = {"synthetic": write_table(synthetic, release.share / f"synthetic.{config.output_format}",
                                          csv_safe=config.csv_safe)}
        train = table.sample(ENGINE_EVALUATION_ROWS, config.seed)
        metrics = release.evaluate(model, train, test, synthetic, model.schema_, (source or {}).get("name", "table"))
        result = release.finish(
            model, files, metrics,
            input_info={**(source or {}), "engine": table.dialect.name, "rows": table.total,
                        "columns": len(table.columns)},
            split={"n_train": table.n, "n_test": n_test, "stratified_by": None,
                   "by": f"a hash of each row's values and the seed, in {table.dialect.label}",
                   "evaluated_on": {"train_sample": len(train), "test_sample": len(test),
                                    "note": f"bounded samples drawn in {table.dialect.label}; the model learnt "
                                            "from every training row's counts"}})
    return result


# -- EHR code matrices -------------------------------------------------------------------------
def write_codes(codes: Any, out: Path, output_format: str, names: CodeColumns, csv_safe: bool = True) -> dict[str, Path]:
    """Synthetic patients as the steward's long format (``synthetic.<fmt>``: id, code[, count]) and,
    when they have ordinary columns, one row per patient in ``synthetic_static.<fmt>`` — the only
    place a synthetic patient without any code appears."""
    return _write_code_files(codes, out / f"synthetic.{output_format}", out / f"synthetic_static.{output_format}",
                             names, csv_safe)


def _write_code_files(codes: Any, path: Path, static_path: Path, names: CodeColumns,
                      csv_safe: bool) -> dict[str, Path]:
    from clinsynth.data.ehr import write_long

    files = {"synthetic": write_long(codes, path, patient_col=names.patient_col, code_col=names.code_col,
                                     count_col=names.count_col, csv_safe=csv_safe)}
    if codes.static is not None:
        static = codes.static.copy()
        static.insert(0, names.patient_col, codes.patient_ids)
        files["synthetic_static"] = write_table(static, static_path, csv_safe=csv_safe)
    return files


def write_sample(synthetic: Any, path: str | Path, csv_safe: bool = True, overwrite: bool = False) -> str:
    """Write what a model sampled to ``path`` and say its kind (``data.kinds``): a table as one file;
    a code matrix in long format (patient_id, code[, count]) with its patients' ordinary columns, if
    any, in ``<stem>_static<suffix>`` beside it. An existing file is replaced only with ``overwrite``."""
    from clinsynth.data.kinds import data_kind
    from clinsynth.data.output_dir import check_file_target

    path = Path(path)
    kind = data_kind(synthetic)
    check_file_target(path, overwrite, what="synthetic table")
    if kind != "codes":
        write_table(synthetic, path, csv_safe=csv_safe)
        return kind
    static_path = path.with_name(f"{path.stem}_static{path.suffix}")
    if synthetic.static is not None:
        check_file_target(static_path, overwrite, what="synthetic per-patient table")
    _write_code_files(synthetic, path, static_path, CodeColumns(), csv_safe)
    return kind


@dataclass
class CodeInput:
    """How to read a long-format code table for a release (recorded in the manifest)."""

    columns: CodeColumns = field(default_factory=CodeColumns)
    counts: bool = False  # read the count column (else presence)
    truncate: int | None = None
    min_count: int = 1
    vocabulary_file: str | None = None  # a declared (public) code list
    static_file: str | None = None  # per-patient ordinary columns (demographics)
    id_col: str | None = None  # the static table's id column (default: the patient column)
    max_count: int | None = None  # public cap on counts (needed under DP)


def read_code_input(path: str | Path, spec: CodeInput, schema: Schema | None = None) -> tuple[Any, Schema]:
    """The code matrix (with its ordinary columns) and its schema, as ``clinsynth run --codes`` reads them.

    The vocabulary comes from, in order: the schema's code block, a declared code list (then it is
    public), or the data (then under DP it is chosen by a charged mechanism).
    """
    from clinsynth.data.ehr import attach_static, read_long, read_vocabulary
    from clinsynth.data.io import read_table
    from clinsynth.models.records import infer_record_schema

    names = spec.columns
    if schema is not None and schema.codes is None:
        raise ConfigError("the schema has no code block; a code release needs one (or no --schema)")
    if schema is not None and spec.vocabulary_file is not None:
        raise ConfigError("give the vocabulary once: in the schema's code block or as --vocabulary, not both")
    declared = (schema.codes.vocabulary if schema is not None
                else read_vocabulary(spec.vocabulary_file) if spec.vocabulary_file is not None else None)
    binary = not spec.counts if schema is None else schema.codes.binary
    if not binary and not spec.counts:
        raise ConfigError("the schema's code block holds counts: name the count column (--count-col)")
    codes = read_long(path, patient_col=names.patient_col, code_col=names.code_col,
                      count_col=names.count_col if not binary else None, binary=binary,
                      truncate=spec.truncate, min_count=spec.min_count, vocabulary=declared)
    if spec.static_file is not None:
        codes = attach_static(codes, read_table(spec.static_file), id_col=spec.id_col or names.patient_col)
    if schema is None:
        schema = infer_record_schema(codes, codes.static)
        update: dict[str, Any] = {"public": spec.vocabulary_file is not None}
        if spec.max_count is not None:
            if binary:
                raise ConfigError("--max-count caps counts: it needs --count-col")
            update["max_count"] = spec.max_count
        schema = schema.model_copy(update={"codes": schema.codes.model_copy(update=update)})
    return codes, schema


def run_code_file(path: Path, spec: CodeInput, config: RunConfig, stage: Stage, schema_path: Path | None = None,
                  progress: bool = True, on_step: Any = None) -> RunResult:
    """``clinsynth run --codes``: read the long-format code table at ``path`` as ``spec`` says (with
    the schema at ``schema_path``, if given) and make its release in ``stage``."""
    codes, schema = read_code_input(path, spec, Schema.load(schema_path) if schema_path is not None else None)
    return run_code_release(codes, config, stage, schema=schema, names=spec.columns,
                            source={**file_source(path), "read": asdict(spec)}, progress=progress, on_step=on_step)


def run_code_release(codes: Any, config: RunConfig, out_dir: str | Path | Stage, schema: Schema | None = None,
                     names: CodeColumns | None = None, source: dict[str, Any] | None = None,
                     progress: bool = True, on_step: Any = None, overwrite: bool = False,
                     resume: bool = False) -> RunResult:
    """``run_release`` for an EHR code matrix (optionally with ordinary columns attached): random
    patient holdout, fit a code model, sample new patients (new ids), write them in long format,
    evaluate the code matrix, report, manifest."""
    from clinsynth.data.ehr import CodeMatrix

    if not isinstance(codes, CodeMatrix):
        raise ConfigError(f"run_code_release takes a CodeMatrix (clinsynth.read_long), got {type(codes).__name__}")
    if config.target is not None:
        raise ConfigError("a code release has no target column: its utility is scored code by code "
                          "(dimension-wise prediction)")
    names = names or CodeColumns()
    check_run_config(config)
    content = codes_hash(codes)
    with _staged(out_dir, overwrite, resume) as stage:
        stage.claim(run_fingerprint(asdict(config), content))
        release = _Release(config, stage, on_step)
        train, test = split_patients(codes, config.test_size, seed=config.seed)
        model, synthetic = release.fit_and_sample(train, schema, train.n_patients, progress)
        files = write_codes(synthetic, release.share, config.output_format, names, csv_safe=config.csv_safe)
        metrics = release.evaluate(model, train, test, synthetic, None, (source or {}).get("name", "code matrix"))
        result = release.finish(
            model, files, metrics,
            input_info={**(source or {}), "patients": codes.n_patients, "codes": codes.n_codes, "entries": codes.nnz,
                        "binary": codes.binary, "static_columns": [] if codes.static is None else list(codes.static.columns),
                        "content_sha256": content},
            split={"n_train": train.n_patients, "n_test": test.n_patients, "stratified_by": None},
            extra={"long_format": asdict(names)})
    return result


# -- demos ---------------------------------------------------------------------------------------
def run_demo(out_dir: str | Path | Stage = "clinsynth-demo", n: int = 6502, model: str = "auto",
             epochs: int | None = None, seed: int = 0, epsilon: float | None = None, progress: bool = True,
             on_step: Any = None, overwrite: bool = False, resume: bool = False) -> RunResult:
    """``run`` on the bundled simulated trial (target: arm), with the model ``auto`` chooses unless one is named."""
    from clinsynth.data.datasets import simulate_trial

    df = simulate_trial(n=n, seed=seed)
    params = {} if epochs is None else {"epochs": epochs}
    config = RunConfig(target="arm", model=model, epsilon=epsilon, params=params, seed=seed)
    source = {"name": "simulated SPRINT-structured trial (clinsynth.data.datasets.simulate_trial)", "n": n, "seed": seed}
    return run_release(df, config, out_dir, source=source, progress=progress, on_step=on_step, overwrite=overwrite,
                       resume=resume)


def run_long_demo(out_dir: str | Path | Stage = "clinsynth-long-demo", n: int = 5_000, model: str = "auto",
                  epochs: int | None = None, seed: int = 0, epsilon: float | None = None, progress: bool = True,
                  on_step: Any = None, overwrite: bool = False, resume: bool = False) -> RunResult:
    """``run --patient-col patient_id --time-col day`` on the simulated long-format trial (one row per
    visit, 1–20 visits, dropout, labs missing before events; target: event), with the model ``auto``
    chooses for patients unless one is named. Under ε the guarantee is per patient."""
    from clinsynth.data.long_trial import simulate_long_trial

    df = simulate_long_trial(n, seed=seed)
    schema = Schema.infer(df, target="event", patient="patient_id", time="day")
    params = {} if epochs is None else {"epochs": epochs}
    config = RunConfig(target="event", model=model, epsilon=epsilon, params=params, seed=seed)
    source = {"name": "simulated long-format trial (clinsynth.data.long_trial.simulate_long_trial)", "n_patients": n,
              "seed": seed}
    return run_release(df, config, out_dir, schema=schema, source=source, progress=progress, on_step=on_step,
                       overwrite=overwrite, resume=resume)


def run_ehr_demo(out_dir: str | Path | Stage = "clinsynth-ehr-demo", n: int = 10_000, n_codes: int = 1_000,
                 model: str = "auto", epochs: int | None = None, seed: int = 0, epsilon: float | None = None,
                 progress: bool = True, on_step: Any = None, overwrite: bool = False,
                 resume: bool = False) -> RunResult:
    """``run --codes`` on the simulated EHR extract: codes plus age and sex (a mixed table), with the
    code model ``auto`` chooses unless one is named. The code list is the simulator's own,
    declared public (as an ICD code list would be), so DP spends nothing on choosing it."""
    from clinsynth.data.datasets import simulate_ehr
    from clinsynth.data.ehr import attach_static
    from clinsynth.models.records import infer_record_schema

    codes, people = simulate_ehr(n, n_codes, seed=seed)
    mixed = attach_static(codes, people, id_col="patient_id")
    schema = infer_record_schema(mixed, mixed.static)
    schema = schema.model_copy(update={"codes": schema.codes.model_copy(update={"public": True})})
    params = {} if epochs is None else {"epochs": epochs}
    config = RunConfig(target=None, model=model, epsilon=epsilon, params=params, seed=seed)
    source = {"name": "simulated EHR extract (clinsynth.data.datasets.simulate_ehr)", "n": n, "n_codes": n_codes,
              "seed": seed}
    return run_code_release(mixed, config, out_dir, schema=schema, source=source, progress=progress, on_step=on_step,
                            overwrite=overwrite, resume=resume)
