"""The ``clinsynth`` command: a thin typer app over the Python API.

Each command parses its options, calls one API function and prints one summary line. Any
``ClinsynthError`` becomes one red line and a non-zero exit; ``--debug`` shows the traceback.
Library errors speak of settings (epsilon, a hyperparameter); ``_options`` prefixes the flags that
gave them, and an ``OutputError`` is worded with the output flags (``OUTPUT_FLAGS``). The jobs
themselves are in :mod:`clinsynth.pipeline`. Size: ~600 lines, most of them typer option
declarations (one per flag, with its help).
"""
from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from clinsynth.errors import ClinsynthError, ClinsynthWarning, ConfigError, OutputError, OutputWords
from clinsynth.streaming import PARTITION_ROWS

try:  # recent typer vendors click as typer._click; older typer depends on click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

app = typer.Typer(
    name="clinsynth",
    help="Synthetic twins of clinical tables: fit, sample, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: how the command line names the output settings an ``OutputError`` speaks of
OUTPUT_FLAGS = OutputWords(out="--out", overwrite="--overwrite", resume="--resume")
console = Console(stderr=True, soft_wrap=True)  # one line per message, however long (paths!)
out = Console()
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


# -- parsing helpers ---------------------------------------------------------------------
def parse_conditions(items: list[str] | None) -> dict[str, dict[str, float]] | None:
    """``["arm=0:0.5,1:0.5"]`` → ``{"arm": {"0": 0.5, "1": 0.5}}``; ``arm=1`` means all class 1."""
    if not items:
        return None
    conditions: dict[str, dict[str, float]] = {}
    for item in items:
        column, sep, spec = item.partition("=")
        if not sep or not column.strip() or not spec.strip():
            raise ConfigError(f"--condition {item!r}: expected COLUMN=VALUE[:WEIGHT],… e.g. arm=0:0.5,1:0.5")
        weights: dict[str, float] = {}
        for part in spec.split(","):
            value, colon, weight = part.partition(":")
            try:
                weights[value.strip()] = float(weight) if colon else 1.0
            except ValueError:
                raise ConfigError(f"--condition {item!r}: weight {weight!r} is not a number") from None
        conditions[column.strip()] = weights
    return conditions


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=50", "device=cpu"]`` → hyperparameters, values read as JSON where they parse."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE, e.g. epochs=100")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _load_schema(data: Any, schema_path: Optional[Path], target: Optional[str], privacy_unit: Optional[str] = None,
                 patient: Optional[str] = None, time: Optional[str] = None) -> Any:
    from clinsynth.schema import Schema

    if (patient is None) != (time is None):
        raise ConfigError("a long-format table (one row per visit) needs both --patient-col and --time-col")
    if schema_path is not None:
        schema = Schema.load(schema_path)
        if target is not None and schema.target != target:
            raise ConfigError(f"--target {target} disagrees with the schema's target {schema.target!r}; edit the schema or drop --target")
        if patient is not None and (schema.patient, schema.time) != (patient, time):
            raise ConfigError(f"--patient-col {patient} --time-col {time} disagree with the schema's patient "
                              f"{schema.patient!r} and time {schema.time!r}; edit the schema or drop the options")
        return schema.model_copy(update={"privacy_unit": privacy_unit}) if privacy_unit else schema
    return Schema.infer(data, target=target, privacy_unit=privacy_unit, patient=patient, time=time)


OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace a previous clinsynth output at --out "
                                                "(only the files it lists are removed).")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run into the same --out from its "
                                             "last checkpoint.")]


ThreadsOption = Annotated[Optional[int], typer.Option("--threads", help="Threads for PyTorch, numba and BLAS (default: "
                          "the CPUs this process may use, less those kept busy by others; PyTorch 1). Also CLINSYNTH_THREADS.",
                          min=1)]
EngineOption = Annotated[str, typer.Option(
    "--engine", help="Where counts come from: auto (DuckDB for a glob, a database or a large file with a counting "
    "model), pandas (in memory), duckdb (out of core) or spark (Spark SQL; pip install 'clinsynth[spark]'); "
    "duckdb and spark fit bayesnet and dp-bayesnet only.")]
SparkMasterOption = Annotated[Optional[str], typer.Option(
    "--spark-master", help="Spark master URL for --engine spark (default local[2]; implies --engine spark).")]
TableOption = Annotated[Optional[str], typer.Option("--table", help="Table to read when DATA is a DuckDB database file "
                                                   "or a postgresql:// URL (name or schema.name).")]
ModelOption = Annotated[str, typer.Option(help="Registered model name (see `clinsynth models`); auto chooses by the "
                                          "input's kind, size and ε, and says which and why.")]
class PrivacyUnit(str, Enum):
    row = "row"


def _unit(unit: Optional[PrivacyUnit]) -> Optional[str]:
    return unit.value if unit is not None else None


PatientOption = Annotated[Optional[str], typer.Option(
    "--patient-col", help="Patient id column: of a long-format table (one row per visit; with --time-col), or of "
    "the --codes table (default patient_id).", rich_help_panel="Long format (visits)")]
TimeOption = Annotated[Optional[str], typer.Option(
    "--time-col", help="Visit time column of a long-format table: numbers (e.g. days since baseline) or dates.",
    rich_help_panel="Long format (visits)")]
MaxVisitsOption = Annotated[int, typer.Option(
    "--max-visits", min=1, help="A patient with more visits is refused (or cut, with --truncate-visits).",
    rich_help_panel="Long format (visits)")]
TruncateOption = Annotated[bool, typer.Option(
    "--truncate-visits", help="Keep each patient's first --max-visits visits instead of refusing.",
    rich_help_panel="Long format (visits)")]
PrivacyUnitOption = Annotated[Optional[PrivacyUnit], typer.Option(
    "--privacy-unit", help="Whose data --epsilon protects. 'row' declares each row a different person; without it a "
    "DP run refuses a table whose identifier column repeats (rows sharing a patient).")]
EvaluateOption = Annotated[str, typer.Option("--evaluate", help="How much to evaluate: full (every part, within "
                                              "documented caps), fast (a cheaper first look) or none (no real-data "
                                              "evaluation).")]


# -- commands ----------------------------------------------------------------------------
@app.command()
def schema(
    data: Annotated[str, typer.Argument(help="CSV or Parquet table (or, with --table, a DuckDB database file or a "
                                        "postgresql:// URL).")],
    target: Annotated[Optional[str], typer.Option(help="Target (class) column.")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of standard output.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    table: TableOption = None,
) -> None:
    """Infer a schema and print it as JSON, for you to edit and pass to `fit --schema`. A glob or a
    database table is inferred as `fit` infers it through DuckDB (a sample, then whole-table facts)."""
    from clinsynth.data.io import read_table
    from clinsynth.data.output_dir import check_file_target
    from clinsynth.engines.source import is_engine_input
    from clinsynth.schema import Schema

    if output is not None:
        check_file_target(output, overwrite, what="schema")
    if is_engine_input(data, table):
        from clinsynth.engines.choose import open_table

        with open_table(data, table) as rows:
            inferred = rows.infer_schema(target=target)
    else:
        inferred = Schema.infer(read_table(Path(data)), target=target)
    if output is None:
        sys.stdout.write(inferred.to_json() + "\n")
        return
    inferred.save(output)
    console.print(f"[green]wrote[/green] {output}: {len(inferred.columns)} columns, "
                  f"{len(inferred.longitudinal)} longitudinal group(s), target {inferred.target!r}")


@app.command()
def fit(
    data: Annotated[str, typer.Argument(help="CSV or Parquet training table, a glob of Parquet files, a DuckDB "
                                        "database file or a postgresql:// URL (with --table).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Directory for the model bundle.")] = Path("model"),
    target: Annotated[Optional[str], typer.Option(help="Target (class) column.")] = None,
    schema_path: Annotated[Optional[Path], typer.Option("--schema", help="Schema JSON (from `clinsynth schema`).")] = None,
    model: ModelOption = "auto",
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    param: Annotated[Optional[list[str]], typer.Option(help="Hyperparameter NAME=VALUE (repeatable).")] = None,
    epsilon: Annotated[Optional[float], typer.Option(help="Train with differential privacy at this ε (uses the model's dp- version).")] = None,
    delta: Annotated[Optional[float], typer.Option(help="DP δ; default min(1e-5, 1/(10 n)), never above 1/n.")] = None,
    select: Annotated[Optional[str], typer.Option(help="Epoch selection: 'last' or 'topK' (e.g. top5), scored train-on-synthetic/test-on-real.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    threads: ThreadsOption = None,
    privacy_unit: PrivacyUnitOption = None,
    patient_col: PatientOption = None,
    time_col: TimeOption = None,
    max_visits: MaxVisitsOption = 100,
    truncate_visits: TruncateOption = False,
    engine: EngineOption = "auto",
    table: TableOption = None,
    spark_master: SparkMasterOption = None,
) -> None:
    """Train a model on a table and save its bundle. A glob of Parquet files or a DuckDB database
    (--table) is read in place by DuckDB: only counts leave it (bayesnet, dp-bayesnet)."""
    from clinsynth import threads as thread_counts
    from clinsynth.data.io import read_table
    from clinsynth.data.output_dir import output_size, staged_output
    from clinsynth.pipeline import fit_bundle

    from clinsynth.engines.choose import wants_engine

    thread_counts.configure(threads)
    privacy = _privacy(epsilon, delta)
    engine = _engine_for_master(engine, spark_master)
    if wants_engine(data, table, engine, model):
        _refuse_torchrun(f"an engine fit ({engine} counts) runs in one process: start it without torchrun")
        _fit_engine(data, table, output, target, schema_path, model, param, seed, privacy, quiet, overwrite,
                    _unit(privacy_unit), engine, spark_master)
        return
    model, params = _model_and_params(model, param, epochs, select, privacy)
    reserve = 2 * output_size([Path(data)]) + (20 << 20)
    with _process_share(output, quiet, resume) as (output, quiet, writer):
        with staged_output(output, "bundle", overwrite=overwrite, resume=resume, reserve_bytes=reserve) as stage:
            df = read_table(Path(data))
            table_schema = _load_schema(df, schema_path, target, _unit(privacy_unit), patient_col, time_col)
            with _param_options(params):
                fitted, df = fit_bundle(df, table_schema, stage, model, params, privacy, seed=seed, progress=not quiet,
                                        max_visits=max_visits, truncate_visits=truncate_visits,
                                        on_choice=lambda reason: console.print(escape(reason)))
    if not writer:
        return
    console.print(f"[green]wrote[/green] {output}/: {fitted.name} trained on {len(df):,} rows × {df.shape[1]} columns"
                  + _processes_note())
    if getattr(fitted, "ledger_", None) is not None:
        from clinsynth.privacy.schema_facts import schema_facts

        print_ledger(fitted.ledger_)
        console.print(escape(schema_facts(fitted.schema_, getattr(fitted, "facts_", None))["summary"]))


def _refuse_torchrun(why: str) -> None:
    from clinsynth import distributed

    if distributed.active():
        raise ConfigError(f"torchrun started {distributed.launch().world_size} processes, but {why}")


def _processes_note() -> str:
    from clinsynth import distributed

    world = distributed.launch().world_size
    return f" by {world} processes (torchrun)" if world > 1 else ""


@contextmanager
def _process_share(output: Path, quiet: bool, resume: bool) -> Iterator[tuple[Path, bool, bool]]:
    """``(output, quiet, writes)`` of this process. Alone: as given. Under torchrun: rank 0 writes
    --out and prints; the others train the same model into a scratch folder, silently, and it is
    removed. All wait for each other at the end (``clinsynth.distributed.finish``)."""
    import shutil
    import tempfile

    from clinsynth import distributed

    here = distributed.launch()
    if not here.active:
        yield output, quiet, True
        return
    if resume:
        raise ConfigError("--resume cannot continue a torchrun training (only rank 0 kept a checkpoint): "
                          "run it again without --resume, or resume it in one process")
    if here.rank == 0:
        yield output, quiet, True
        distributed.finish()
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"clinsynth-rank{here.rank}-"))
    was_quiet, console.quiet = console.quiet, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank 0 says it once
            yield scratch / "bundle", True, False
        distributed.finish()  # not on an error: torchrun stops the other processes then
    finally:
        console.quiet = was_quiet
        shutil.rmtree(scratch, ignore_errors=True)


def _engine_for_master(engine: str, spark_master: Optional[str]) -> str:
    """``--spark-master`` implies ``--engine spark`` and goes with no other engine."""
    if spark_master is None:
        return engine
    if engine not in ("auto", "spark"):
        raise ConfigError(f"--spark-master names a Spark cluster, but --engine is {engine}: use --engine spark "
                          "or drop --spark-master")
    return "spark"


def _open_engine_table(data: str, table: Optional[str], schema_path: Optional[Path], target: Optional[str],
                       privacy_unit: Optional[str], seed: int, engine: str = "duckdb",
                       spark_master: Optional[str] = None) -> tuple[Any, Any]:
    """The engine's table and its schema: the one given (only its columns are read), else inferred
    from the table's sample. The caller closes the table; it is closed here if the schema fails."""
    from clinsynth.engines.choose import open_table

    given = _load_schema(None, schema_path, target, privacy_unit) if schema_path is not None else None
    rows = open_table(data, table, columns=[c.name for c in given.columns] if given is not None else None,
                      engine="spark" if engine == "spark" else "duckdb", spark_master=spark_master)
    try:
        return rows, given if given is not None else rows.infer_schema(target=target, seed=seed,
                                                                        privacy_unit=privacy_unit)
    except BaseException:
        rows.close()
        raise


def _fit_engine(data: str, table: Optional[str], output: Path, target: Optional[str], schema_path: Optional[Path],
                model: str, param: Optional[list[str]], seed: int, privacy: Any, quiet: bool, overwrite: bool,
                privacy_unit: Optional[str], engine: str = "duckdb", spark_master: Optional[str] = None) -> None:
    """`fit` through DuckDB or Spark: the table stays where it is, the counting model learns from its counts."""
    from clinsynth.data.output_dir import staged_output
    from clinsynth.engines.choose import engine_model
    from clinsynth.pipeline import fit_engine_bundle

    name, params = _model_and_params(engine_model(model), param, None, None, privacy)
    rows, table_schema = _open_engine_table(data, table, schema_path, target, privacy_unit, seed, engine, spark_master)
    try:
        with staged_output(output, "bundle", overwrite=overwrite, reserve_bytes=20 << 20) as stage:
            with _param_options(params):
                fitted = fit_engine_bundle(rows, table_schema, stage, name, params, privacy, seed=seed,
                                           progress=not quiet)
    finally:
        rows.close()
    console.print(f"[green]wrote[/green] {output}/: {fitted.name} trained through {rows.dialect.label} on {rows.n:,} rows × "
                  f"{len(rows.columns)} columns of {rows.source.describe()}")
    if getattr(fitted, "ledger_", None) is not None:
        from clinsynth.privacy.schema_facts import schema_facts

        print_ledger(fitted.ledger_)
        console.print(escape(schema_facts(fitted.schema_, getattr(fitted, "facts_", None))["summary"]))


def _privacy(epsilon: Optional[float], delta: Optional[float]) -> Any:
    """``--epsilon``/``--delta`` as the one ``Privacy`` the model is given (None without ``--epsilon``)."""
    from clinsynth.privacy.budget import budget

    with _options("--epsilon/--delta"):
        return budget(epsilon, delta)


@contextmanager
def _options(flags: str, hint: str = "", kind: type[ConfigError] = ConfigError) -> Iterator[None]:
    """A library error of ``kind`` about a setting, printed with the command-line flags that gave it."""
    try:
        yield
    except kind as e:
        raise type(e)(f"{flags}: {e}{hint}") from None


def _param_options(params: dict[str, Any]) -> Any:
    """Hyperparameter refusals (``HyperparameterError``) named by the flags that give hyperparameters."""
    from clinsynth.errors import HyperparameterError

    reserved = " (seed and progress are --seed and --quiet)" if {"seed", "progress"} & set(params) else ""
    return _options("--param", reserved, HyperparameterError)


def _model_and_params(model: str, param: Optional[list[str]], epochs: Optional[int], select: Optional[str],
                      privacy: Any) -> tuple[str, dict[str, Any]]:
    """The registry name (the dp- alias under a budget) and its checked hyperparameters."""
    from clinsynth.models.registry import check_hyperparameters, private_name

    params = parse_params(param)
    if epochs is not None:
        params["epochs"] = epochs
    if select is not None:
        params["select"] = select
    with _options("--model", "" if privacy is not None else " (give it with --epsilon)"):
        name = private_name(model, privacy)
    with _param_options(params):
        check_hyperparameters(name, params)
    return name, params


def print_ledger(ledger: Any) -> None:
    """The privacy ledger as a table: what was charged, for what, and the running total ε, per privacy unit."""
    from rich.table import Table

    unit = getattr(ledger, "unit", "record")
    table = Table(title=f"privacy ledger — budget ε = {ledger.epsilon:g}, δ = {ledger.delta:g} ({ledger.accountant.upper()}), "
                        f"privacy unit: {unit}")
    for column in ("#", "mechanism", "purpose", "noise ×", "sample rate", "steps", "δ spent", "total ε"):
        table.add_column(column, justify="left" if column in ("mechanism", "purpose") else "right")
    for i, row in enumerate(ledger.table(), start=1):
        table.add_row(str(i), row["mechanism"], row["purpose"], f"{row['noise_multiplier']:.3g}", f"{row['sample_rate']:.3g}",
                      f"{row['steps']:,}", f"{row['delta']:.2g}", f"{row['cumulative_epsilon']:.3f}")
    wide = console if console.is_terminal else Console(stderr=True, width=160)  # logs: keep rows whole
    wide.print(table)
    console.print(f"total: ε = {ledger.spent():.3f} of {ledger.epsilon:g} at δ = {ledger.delta:g}, per {unit}")


class SampleFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


@app.command()
def sample(
    model_dir: Annotated[Path, typer.Argument(help="Model bundle directory (from `clinsynth fit`).")],
    n: Annotated[int, typer.Option("--n", "-n", help="Number of synthetic records.")] = 1000,
    output: Annotated[Path, typer.Option("--out", "-o", help="Output table (.csv or .parquet), or a folder for "
                                         "partitioned Parquet (part-00000.parquet, …), drawn in bounded memory.")]
    = Path("synthetic.csv"),
    output_format: Annotated[Optional[SampleFormat], typer.Option("--format", help="Output format (default: from "
                             "--out's suffix; a folder is partitioned Parquet).")] = None,
    partition_rows: Annotated[int, typer.Option("--partition-rows", min=1, help="Rows per Parquet partition when "
                              "--out is a folder (the files depend on it and --seed, not on --threads).")]
    = PARTITION_ROWS,
    condition: Annotated[Optional[list[str]], typer.Option(help="Reshape a class mix: COLUMN=VALUE:WEIGHT,… (e.g. arm=0:0.5,1:0.5).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file or partitioned sample.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Partitioned Parquet: continue an interrupted sample into the "
                      "same --out, drawing only the missing partitions.")] = False,
    csv_safe: Annotated[bool, typer.Option("--csv-safe/--no-csv-safe", help="Quote text cells that begin with = + - @ (a spreadsheet would run them as formulas) with a leading ' in CSV output.")] = True,
    threads: ThreadsOption = None,
    engine: Annotated[str, typer.Option("--engine", help="Partitioned Parquet: 'local' (--threads worker processes) or "
                      "'spark' (Spark tasks on the executors; --out must be storage they can all write).")] = "local",
    spark_master: SparkMasterOption = None,
) -> None:
    """Draw synthetic records from a saved model; into a folder, as partitioned Parquet across --threads processes
    or Spark's executors (--engine spark)."""
    from clinsynth import threads as thread_counts

    thread_counts.configure(threads)
    from clinsynth.data.io import table_format
    from clinsynth.data.output_dir import check_file_target
    from clinsynth.models.registry import load
    from clinsynth.pipeline import write_sample

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if engine not in ("local", "spark"):
        raise ConfigError(f"--engine {engine}: sample draws with 'local' worker processes or 'spark' executors")
    use_spark = engine == "spark" or spark_master is not None
    if use_spark and not (output.is_dir() or not output.suffix):
        raise ConfigError(f"--engine spark draws partitioned Parquet into a folder, but --out {output} is one file: "
                          "give a folder, or drop --engine spark")
    if output.is_dir() or not output.suffix:  # a folder: partitioned Parquet
        if output_format == SampleFormat.csv:
            raise ConfigError(f"--out {output} is a folder, which is written as partitioned Parquet: add "
                              "--format parquet, or give a file name ending .csv")
        _sample_partitions(model_dir, n, output, partition_rows, parse_conditions(condition), seed, overwrite, resume,
                           spark_master if use_spark else None, use_spark)
        return
    if output_format is not None and table_format(output) != output_format.value:
        raise ConfigError(f"--format {output_format.value} disagrees with --out {output}; give a file name ending "
                          f".{output_format.value}, or a folder for partitioned Parquet")
    if resume:
        raise ConfigError("--resume continues a partitioned sample (--out FOLDER); a single file is drawn afresh")
    table_format(output)
    check_file_target(output, overwrite, what="synthetic table")
    model = load(model_dir)
    synthetic = model.sample(n, conditions=parse_conditions(condition), seed=seed)
    if write_sample(synthetic, output, csv_safe=csv_safe, overwrite=overwrite) == "codes":  # patients, long format
        console.print(f"[green]wrote[/green] {output}: {synthetic.n_patients:,} synthetic patients, {synthetic.nnz:,} codes")
        return
    mix = ""
    if model.schema_.target is not None:
        shares = synthetic[model.schema_.target].astype(str).value_counts(normalize=True).sort_index()
        mix = " (" + ", ".join(f"{model.schema_.target}={k}: {v:.1%}" for k, v in shares.items()) + ")"
    console.print(f"[green]wrote[/green] {output}: {len(synthetic):,} synthetic rows × {synthetic.shape[1]} columns{mix}")


def _sample_partitions(model_dir: Path, n: int, output: Path, partition_rows: int, conditions: Any, seed: int,
                       overwrite: bool, resume: bool, spark_master: Optional[str] = None, use_spark: bool = False) -> None:
    from clinsynth.streaming import sample_to_parquet

    spark = None
    if use_spark:
        from clinsynth.engines.spark_engine import spark_session

        spark = spark_session(spark_master)

    def progress(done: int, total: int) -> None:
        if console.is_terminal:
            console.print(f"  partition {done:,} of {total:,}", end="\r")

    result = sample_to_parquet(model_dir, n, output, partition_rows=partition_rows, seed=seed, conditions=conditions,
                               overwrite=overwrite, resume=resume, on_partition=progress, spark=spark)
    kept = f", {result.resumed:,} kept from the interrupted run" if result.resumed else ""
    where = (f"Spark, {result.processes} task slot{'s' if result.processes != 1 else ''}" if spark is not None
             else f"{result.processes} process{'es' if result.processes != 1 else ''}")
    console.print(f"[green]wrote[/green] {output}: {result.rows:,} synthetic rows in {result.partitions:,} Parquet "
                  f"partitions ({where}, {result.rows_per_second:,.0f} rows/s{kept})")


@app.command()
def models() -> None:
    """List the registered models."""
    from clinsynth.models.registry import list_models

    for entry in list_models():
        out.print(f"[bold]{entry.name:<12}[/bold] {entry.summary}")


def _step_printer(quiet: bool) -> Any:
    return (lambda name: None) if quiet else (lambda name: console.print(f"[dim]▸ {name}[/dim]"))


def _release_summary(result: Any) -> None:
    """The verdicts of a release, one line each, then where the files are."""
    colours = {"pass": "green", "caution": "yellow", "fail": "red", "warning": "red", "info": "blue"}
    for v in result.metrics["verdicts"]:
        console.print(f"  [{colours.get(v['level'], 'white')}]{v['level']:<8}[/] {v['section']}: {escape(v['headline'])}")
    parts: dict[str, list[str]] = {}
    for p in result.files.values():
        rel = p.relative_to(result.out_dir)
        parts.setdefault(rel.parts[0] if len(rel.parts) > 1 else "", []).append(p.name + ("/" if p.is_dir() else ""))
    listing = " · ".join(f"{folder}/ ({', '.join(names)})" if folder else ", ".join(names) for folder, names in parts.items())
    facts = result.metrics.get("guarantee", {}).get("schema_facts")
    if facts:
        console.print(escape(facts["summary"]))
    console.print(f"[green]wrote[/green] {result.out_dir}/: {listing} in {result.seconds:.0f} s")
    console.print(f"share [bold]{result.out_dir / 'share'}/[/bold] only; {result.out_dir / 'steward'}/ holds figures "
                  "computed on the real data and the input's hashes")


@app.command()
def run(
    data: Annotated[str, typer.Argument(help="CSV or Parquet table of real records, a glob of Parquet files, a "
                                        "DuckDB database file or a postgresql:// URL (with --table).")],
    target: Annotated[Optional[str], typer.Option(help="Target (class) column: stratifies the split, conditions the model, scores utility.")] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Release directory.")] = Path("release"),
    schema_path: Annotated[Optional[Path], typer.Option("--schema", help="Schema JSON (from `clinsynth schema`).")] = None,
    model: ModelOption = "auto",
    epsilon: Annotated[Optional[float], typer.Option(help="Train with differential privacy at this ε (uses the model's dp- version).")] = None,
    delta: Annotated[Optional[float], typer.Option(help="DP δ; default min(1e-5, 1/(10 n)), never above 1/n.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    select: Annotated[Optional[str], typer.Option(help="Epoch selection: 'last' or 'topK' (e.g. top5).")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Hyperparameter NAME=VALUE (repeatable).")] = None,
    n: Annotated[Optional[int], typer.Option("--n", "-n", help="Synthetic records to draw (default: as many as the training split).")] = None,
    test_size: Annotated[float, typer.Option(help="Share of rows held out from training, for evaluation.")] = 0.2,
    output_format: Annotated[str, typer.Option("--format", help="Synthetic table format: csv or parquet.")] = "csv",
    seed: Annotated[int, typer.Option(help="Random seed (split, model, sampling, evaluation).")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    csv_safe: Annotated[bool, typer.Option("--csv-safe/--no-csv-safe", help="Quote text cells that begin with = + - @ (a spreadsheet would run them as formulas) with a leading ' in CSV output.")] = True,
    codes: Annotated[bool, typer.Option("--codes", help="DATA is EHR codes in long format (patient, code[, count]).",
                                        rich_help_panel="EHR codes")] = False,
    patient_col: PatientOption = None,
    time_col: TimeOption = None,
    max_visits: MaxVisitsOption = 100,
    truncate_visits: TruncateOption = False,
    code_col: Annotated[str, typer.Option(help="Code column.", rich_help_panel="EHR codes")] = "code",
    count_col: Annotated[Optional[str], typer.Option(help="Count column (model counts; default: presence).", rich_help_panel="EHR codes")] = None,
    truncate: Annotated[Optional[int], typer.Option(help="Keep the first N characters of each code (dots removed), e.g. 3 for ICD-9 categories.", rich_help_panel="EHR codes")] = None,
    min_count: Annotated[int, typer.Option(help="Drop codes held by fewer patients (not with a declared vocabulary).", rich_help_panel="EHR codes")] = 1,
    vocabulary: Annotated[Optional[Path], typer.Option(help="Declared public code list, one code per line (costs no privacy budget).", rich_help_panel="EHR codes")] = None,
    static: Annotated[Optional[Path], typer.Option(help="Per-patient table (demographics) to model with the codes.", rich_help_panel="EHR codes")] = None,
    id_col: Annotated[Optional[str], typer.Option(help="Patient id column of --static (default: --patient-col).", rich_help_panel="EHR codes")] = None,
    max_count: Annotated[Optional[int], typer.Option(help="Public cap on counts (needed with --count-col under DP).", rich_help_panel="EHR codes")] = None,
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    level: EvaluateOption = "full",
    threads: ThreadsOption = None,
    privacy_unit: PrivacyUnitOption = None,
    engine: EngineOption = "auto",
    table: TableOption = None,
    spark_master: SparkMasterOption = None,
) -> None:
    """The main job: split, fit, sample, evaluate and write a release: share/ (synthetic table, model, guarantee page)
    and steward/ (report, metrics, manifest). A glob of Parquet files or a DuckDB database (--table) stays in DuckDB:
    the counting model learns from its counts, the evaluation reads bounded samples."""
    from clinsynth import threads as thread_counts
    from clinsynth.data.io import read_table
    from clinsynth.pipeline import CodeColumns, CodeInput, RunConfig, file_source, open_release, run_code_file, run_release

    if n is not None and n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if output_format not in ("csv", "parquet"):
        raise ConfigError(f"--format must be csv or parquet, got {output_format!r}")
    from clinsynth.evaluate.bounds import limits_for

    limits_for(level)
    thread_counts.configure(threads)
    privacy = _privacy(epsilon, delta)
    settings = dict(epsilon=epsilon, delta=delta, test_size=test_size, n_synthetic=n, seed=seed,
                    output_format=output_format, csv_safe=csv_safe, evaluate=level)
    if codes:
        if privacy_unit is not None:
            raise ConfigError("--privacy-unit is for tables: the privacy unit of --codes is the patient (all of a patient's codes)")
        if time_col is not None:
            raise ConfigError("--time-col is for long-format tables; --codes reads patient, code[, count]")
        spec = CodeInput(CodeColumns(patient_col or "patient_id", code_col, count_col or "count"), counts=count_col is not None,
                         truncate=truncate, min_count=min_count,
                         vocabulary_file=str(vocabulary) if vocabulary is not None else None,
                         static_file=str(static) if static is not None else None, id_col=id_col,
                         max_count=max_count)
        name, params = _code_model_and_params(model, param, epochs, select, privacy, target)
        config = RunConfig(target=None, model=name, params=params, **settings)
        with open_release(output, overwrite=overwrite, resume=resume, inputs=(Path(data), static) if static else (Path(data),)) as stage:
            with _param_options(config.params):
                result = run_code_file(Path(data), spec, config, stage, schema_path, progress=not quiet,
                                       on_step=_step_printer(quiet))
        _release_summary(result)
        return
    code_options = {"--count-col": count_col, "--truncate": truncate, "--vocabulary": vocabulary,
                    "--static": static, "--id-col": id_col, "--max-count": max_count}
    given = [flag for flag, value in code_options.items() if value is not None] + (["--min-count"] if min_count != 1 else [])
    if given:
        raise ConfigError(f"{', '.join(given)} read EHR codes: add --codes (DATA is then long format: patient, code[, count])")
    from clinsynth.engines.choose import wants_engine

    engine = _engine_for_master(engine, spark_master)
    if not codes and wants_engine(data, table, engine, model):
        _run_engine(data, table, output, target, schema_path, model, param, privacy, settings, overwrite, resume,
                    _unit(privacy_unit), quiet, engine, spark_master)
        return
    name, params = _model_and_params(model, param, epochs, select, privacy)
    with open_release(output, overwrite=overwrite, resume=resume, inputs=(Path(data),)) as stage:
        df = read_table(Path(data))
        table_schema = _load_schema(df, schema_path, target, _unit(privacy_unit), patient_col, time_col)
        config = RunConfig(target=table_schema.target, model=name, params=params, max_visits=max_visits,
                           truncate_visits=truncate_visits, **settings)
        with _param_options(params):
            result = run_release(df, config, stage, schema=table_schema, source=file_source(Path(data)),
                                 progress=not quiet, on_step=_step_printer(quiet))
    _release_summary(result)


def _run_engine(data: str, table: Optional[str], output: Path, target: Optional[str], schema_path: Optional[Path],
                model: str, param: Optional[list[str]], privacy: Any, settings: dict[str, Any], overwrite: bool,
                resume: bool, privacy_unit: Optional[str], quiet: bool, engine: str = "duckdb",
                spark_master: Optional[str] = None) -> None:
    """`run` through DuckDB or Spark (``pipeline.run_table_release``)."""
    from clinsynth.engines.choose import engine_model, source_info
    from clinsynth.pipeline import RunConfig, open_release, run_table_release

    name, params = _model_and_params(engine_model(model), param, None, None, privacy)
    rows, table_schema = _open_engine_table(data, table, schema_path, target, privacy_unit, settings["seed"],
                                            engine, spark_master)
    try:
        config = RunConfig(target=table_schema.target, model=name, params=params, **settings)
        source = source_info(data, table, rows.source)
        with open_release(output, overwrite=overwrite, resume=resume, inputs=()) as stage:
            with _param_options(params):
                result = run_table_release(rows, config, stage, schema=table_schema, source=source,
                                           progress=not quiet, on_step=_step_printer(quiet))
    finally:
        rows.close()
    _release_summary(result)


def _code_model_and_params(model: str, param: Optional[list[str]], epochs: Optional[int], select: Optional[str],
                           privacy: Any, target: Optional[str]) -> tuple[str, dict[str, Any]]:
    """`run --codes`: the code model and its options, checked before any output is made."""
    from clinsynth.models.registry import models_of

    if target is not None:
        raise ConfigError("--target does not apply to --codes: a code release is scored code by code "
                          "(dimension-wise prediction), with no single target")
    if select is not None:
        raise ConfigError("--select applies to the AC-GAN's epoch selection, not to the code models")
    name, params = _model_and_params(model, param, epochs, None, privacy)
    code_models = models_of("codes")
    if name not in code_models + ["auto"]:
        raise ConfigError(f"model '{name}' does not model EHR codes; code models: {', '.join(code_models)}")
    return name, params


@app.command()
def evaluate(
    real_train: Annotated[Path, typer.Option("--real-train", help="The real records the model was trained on.")],
    real_test: Annotated[Path, typer.Option("--real-test", help="Real holdout records the model never saw.")],
    synthetic: Annotated[Path, typer.Option("--synthetic", help="The synthetic table.")],
    schema_path: Annotated[Optional[Path], typer.Option("--schema", help="Schema JSON; default: the model's, or inferred from the training table.")] = None,
    model_dir: Annotated[Optional[Path], typer.Option("--model", help="Model bundle: its privacy ledger goes into the report.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target column (when the schema is inferred).")] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="metrics.json to write.")] = Path("metrics.json"),
    report_path: Annotated[Optional[Path], typer.Option("--report", help="Also write the HTML report here.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --out / --report files.")] = False,
    level: EvaluateOption = "full",
    threads: ThreadsOption = None,
) -> None:
    """Score a synthetic table against the real training and holdout tables: fidelity, utility, privacy attacks."""
    from clinsynth import threads as thread_counts

    from clinsynth.data.io import read_table
    from clinsynth.data.output_dir import check_file_target
    from clinsynth.evaluate.bounds import limits_for
    from clinsynth.evaluate.suite import evaluate as evaluate_tables
    from clinsynth.models.registry import load
    from clinsynth.pipeline import guarantee_of

    limits_for(level)  # an unknown level is refused before any file is read
    thread_counts.configure(threads)
    check_file_target(output, overwrite, what="metrics file")
    if report_path is not None:
        check_file_target(report_path, overwrite, what="report")
    fitted = load(model_dir) if model_dir is not None else None
    train = read_table(real_train)
    if schema_path is None and fitted is not None:
        table_schema = fitted.schema_
    else:
        table_schema = _load_schema(train, schema_path, target)
    skip = level == "none"  # nothing is scored: the holdout and the synthetic table are not read
    result = evaluate_tables(train, None if skip else read_table(real_test), None if skip else read_table(synthetic),
                             table_schema,
                             guarantee=guarantee_of(fitted) if fitted is not None else None,
                             model={"name": fitted.name, "params": fitted.get_params()} if fitted is not None else None,
                             dataset=real_train.name, seed=seed, progress=_step_printer(quiet), level=level)
    result.to_json(output)
    written = [str(output)]
    if report_path is not None:
        result.to_html(report_path)
        written.append(str(report_path))
    for v in result.to_dict()["verdicts"]:
        console.print(f"  {v['level']:<8} {v['section']}: {escape(v['headline'])}")
    console.print(f"[green]wrote[/green] {', '.join(written)}")


@app.command()
def report(
    metrics: Annotated[Path, typer.Argument(help="metrics.json from `clinsynth run` or `clinsynth evaluate`.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Render the self-contained HTML report from a metrics file."""
    from clinsynth.data.io import read_json
    from clinsynth.data.output_dir import check_file_target
    from clinsynth.report.html import write_report

    check_file_target(output, overwrite, what="report")
    write_report(read_json(metrics, what="metrics file"), output)
    console.print(f"[green]wrote[/green] {output}")


@app.command()
def demo(
    output: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory (default clinsynth-demo, "
                                                   "clinsynth-ehr-demo with --ehr, clinsynth-long-demo with --long).")] = None,
    ehr: Annotated[bool, typer.Option("--ehr", help="The simulated EHR extract (codes + age, sex) instead of the trial.")] = False,
    long: Annotated[bool, typer.Option("--long", help="The simulated long-format trial (one row per visit, 5,000 "
                                       "patients) instead of the wide one; under --epsilon the guarantee is per patient.")] = False,
    model: ModelOption = "auto",
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs of a neural model (default: the model's own).")] = None,
    epsilon: Annotated[Optional[float], typer.Option(help="Train the model's DP version at this ε instead.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    threads: ThreadsOption = None,
) -> None:
    """`run` on bundled simulated data: the trial (target arm), with --ehr the EHR code extract, with --long the
    long-format trial (one row per visit; target event)."""
    from clinsynth import threads as thread_counts
    from clinsynth.pipeline import run_demo, run_ehr_demo, run_long_demo

    thread_counts.configure(threads)
    if ehr and long:
        raise ConfigError("--ehr and --long are two different demos: choose one")
    if long:
        _model_and_params(model, None, epochs, None, _privacy(epsilon, None))
        output = output or Path("clinsynth-long-demo")
        result = run_long_demo(output, model=model, epochs=epochs, seed=seed, epsilon=epsilon,
                               progress=not quiet, on_step=_step_printer(quiet), overwrite=overwrite, resume=resume)
    elif ehr:
        _code_model_and_params(model, None, epochs, None, _privacy(epsilon, None), None)
        output = output or Path("clinsynth-ehr-demo")
        result = run_ehr_demo(output, model=model, epochs=epochs, seed=seed, epsilon=epsilon,
                              progress=not quiet, on_step=_step_printer(quiet), overwrite=overwrite, resume=resume)
    else:
        _model_and_params(model, None, epochs, None, _privacy(epsilon, None))
        output = output or Path("clinsynth-demo")
        result = run_demo(output, model=model, epochs=epochs, seed=seed, epsilon=epsilon,
                          progress=not quiet, on_step=_step_printer(quiet), overwrite=overwrite, resume=resume)
    _release_summary(result)
    console.print(f"open {result.files['report']} in a browser")


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While a command runs, SIGTERM (a scheduler's stop, ``kill``) unwinds like Ctrl-C, so a
    half-built output is cleaned up and a checkpoint kept for --resume. Only the main thread can
    set a handler; the previous one is restored afterwards."""
    import signal
    import threading

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """clinsynth's own warnings (a fact released from a default, advice on a weak DP fit) as one
    yellow line each, said once — not Python's format, which prints a source line after the text."""
    shown: set[str] = set()
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' hook)
        if not issubclass(category, ClinsynthWarning):
            return default(message, category, filename, lineno, file, line)
        if str(message) not in shown:
            shown.add(str(message))
            console.print("[yellow]warning:[/yellow] " + escape(str(message)), highlight=False)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = default


def _aborted() -> int:
    console.print("[red]aborted[/red]: --out was left as it was; an interrupted run keeps what it can reuse "
                  "(a fitted model, a checkpoint) for --resume")
    return 130


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors as one red line, exit code 1; bugs keep their traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        command = next((a for a in args if not a.startswith("-")), None)
        if command not in (None, "fit"):
            _refuse_torchrun(f"`clinsynth {command}` runs in one process; under torchrun only `fit` trains "
                             "(then sample, evaluate and report from its bundle in one process)")
        with _terminate_cleanly(), _warnings_as_lines():
            result = app(args=args, standalone_mode=False, prog_name="clinsynth")
        if result == 130:  # typer turns Ctrl-C (and our SIGTERM) into a returned exit code 130
            return _aborted()
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _aborted()
    except ClickException as e:
        e.show()
        return e.exit_code
    except ClinsynthError as e:
        if debug:
            raise
        from clinsynth.engines.postgres import mask_text

        message = mask_text(e.worded(OUTPUT_FLAGS) if isinstance(e, OutputError) else str(e))
        console.print("[red]error:[/red] " + escape(message), highlight=False)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
