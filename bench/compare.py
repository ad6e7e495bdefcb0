"""clinsynth against SDV, smartnoise-synth and mostlyai-engine, scored by clinsynth's own evaluation, in one run.

For each dataset × synthesizer × ε × seed (a *cell*) the synthesizer is fitted on the real
training split in a subprocess of ``bench/run_cell.py`` — run by the python of that tool's venv
(``bench/.peers/<tool>/bin/python``, made by ``bench/peers/setup.sh``; clinsynth by this python),
so each tool keeps its own pinned libraries and a crash, a timeout or an out-of-memory kill costs
one cell, not the run. It samples as many rows as it trained on and reports fit time, sampling
speed and the fit's peak memory; this process then scores the synthetic table with clinsynth's
evaluation functions on one schema:

* utility — TSTR/TRTR AUROC ratio of logistic regression, random forest and gradient boosting
  (``evaluate.utility.tstr``: ``UtilityResult.ratio(classifier)``);
* fidelity — detection AUROC of a random forest telling real training rows from synthetic ones
  (``evaluate.fidelity.detection_auroc``; 0.5 = indistinguishable);
* privacy — from ``evaluate.privacy.privacy_attacks``: the size-adjusted distance-to-closest-record
  share (``dcr.share_closer_to_train``, 0.5 ideal), the membership-inference AUROC
  (``membership.auroc``, 0.5 ideal) and the synthetic exact-copy rate (``exact_copies.synthetic_rate``).

The full ``cs.evaluate`` is not run: its all-pairs association step is slow on the 1,000-column EHR
table. Evaluation uses the cell's seed, so the spread over seeds covers the evaluation's own noise.

Datasets (stratified 80/20 split, seed 0): scikit-learn's breast cancer; scikit-survival's WHAS500
(target ``fstat``, ``lenfol`` dropped) and FLCHAIN (target ``death``, ``futime`` and ``chapter``
dropped) — scikit-survival is GPL-3 and only a ``bench`` extra (``pip install -e ".[bench]"``);
the simulated trial (target ``arm``); the simulated EHR as one wide table (age, sex = target,
1,000 codes as "0"/"1" columns; 5,000 patients). Bounds and category lists come from the whole
dataset and are declared public knowledge for every tool alike (``meta.json``), as far as its API
takes them (mostlyai-engine's takes none: it learns them from the data, under DP with part of its
budget; see ``bench/adapters/mostlyai.py``); δ = min(1e-5, 1/(10 n_train)) is offered to every DP
tool (what each used is in its result, and in the report).

Every finished cell is appended to ``bench/results/compare_cells.jsonl`` and skipped when the
script runs again; a failed or timed-out seed 0 is recorded for the other seeds of its
(dataset, synthesizer, ε) without running them. ``compare.csv`` and ``compare.md`` are rebuilt
from that file after each run.

    python bench/compare.py --dry-run
    python bench/compare.py --datasets breast_cancer --tools clinsynth --seeds 0
    python bench/compare.py                      # everything: hours on 2 cores
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.data.io import jsonable, write_text_atomic

BENCH = Path(__file__).resolve().parent
DISCRETE = ("binary", "categorical")
NUMERIC = ("continuous", "integer")
#: statuses of a cell that is done; "not installed" is looked at again on every run
FINISHED = ("ok", "failed", "timeout")
HOPELESS = ("failed", "timeout")  # a seed 0 with one of these spares the other seeds
TSTR_CLASSIFIERS = {"lr": "logistic_regression", "rf": "random_forest", "gb": "gradient_boosting"}


@dataclass(frozen=True)
class Paths:
    """Where the run reads and writes; tests point all of it at a temporary directory."""

    work: Path = BENCH / ".compare"
    results: Path = BENCH / "results"
    peers: Path = BENCH / ".peers"
    run_cell: Path = BENCH / "run_cell.py"

    @property
    def cells(self) -> Path:
        return self.results / "compare_cells.jsonl"

    @property
    def speed_cells(self) -> Path:
        return self.results / "speed_cells.jsonl"

    def python(self, tool: str) -> Path:
        """The interpreter of a tool's venv; clinsynth runs in this one."""
        return Path(sys.executable) if tool == "clinsynth" else self.peers / tool / "bin" / "python"


# -- datasets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    name: str
    target: str
    load: Callable[[], pd.DataFrame]  # the whole table, dropped columns already gone
    codes: bool = False  # a wide EHR table: every column but age and sex is a 0/1 code
    needs: str | None = None  # an import the loader needs (the bench extra)


def _breast_cancer() -> pd.DataFrame:
    from clinsynth.data.datasets import load_breast_cancer

    return load_breast_cancer()


def _survival(loader: str, event: str, drop: Sequence[str]) -> pd.DataFrame:
    """A scikit-survival table with its event indicator as the target; the time and ``drop`` go."""
    import sksurv.datasets

    X, y = getattr(sksurv.datasets, loader)()
    df = X.drop(columns=list(drop)).reset_index(drop=True)
    df[event] = y[event]
    return df


def _trial() -> pd.DataFrame:
    from clinsynth.data.datasets import simulate_trial

    return simulate_trial().drop(columns=["participant_id"])


EHR_PATIENTS, EHR_CODES = 5_000, 1_000


def _ehr() -> pd.DataFrame:
    """``simulate_ehr`` as one wide table: age, sex, then each code as a "0"/"1" column."""
    from clinsynth.data.datasets import simulate_ehr

    codes, people = simulate_ehr(EHR_PATIENTS, EHR_CODES, seed=0)
    dense = codes.matrix.toarray() > 0
    wide = pd.DataFrame(np.where(dense, "1", "0"), columns=list(codes.vocabulary))
    return pd.concat([people[["age", "sex"]].reset_index(drop=True), wide], axis=1)


DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("breast_cancer", "diagnosis", _breast_cancer),
    Dataset("whas500", "fstat", lambda: _survival("load_whas500", "fstat", []), needs="sksurv"),
    Dataset("flchain", "death", lambda: _survival("load_flchain", "death", ["chapter"]), needs="sksurv"),
    Dataset("trial", "arm", _trial),
    Dataset("ehr", "sex", _ehr, codes=True),
]}


def label(value: Any) -> str:
    """A category as text: booleans as "0"/"1", whole floats without ".0"."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def column_meta(s: pd.Series, is_target: bool = False, code: bool = False) -> tuple[pd.Series, dict[str, Any]]:
    """The column as the benchmark stores it, and its meta entry (kind, public domain, nullable).

    Text, categorical and boolean columns, numbers with at most two values (run_cell needs
    lower < upper), the target and EHR codes are categories (text; a pandas categorical keeps its
    own order, the rest are sorted); other numbers are integer when whole, else continuous, with
    the whole dataset's range as bounds.
    """
    name, nullable = str(s.name), bool(s.isna().any())
    entry: dict[str, Any] = {"name": name}
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    values = s.dropna()
    if code:  # already "0"/"1" text: skip the per-value relabelling of a thousand columns
        return s.astype(object), {**entry, "kind": "binary", "categories": ["0", "1"], "nullable": nullable}
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(values.map(label))
        cats = [c for c in map(label, s.dtype.categories) if c in present]
    elif numeric and not is_target and values.nunique() > 2:
        whole = bool(np.all(np.mod(values.to_numpy(float), 1) == 0))
        lo, hi = float(values.min()), float(values.max())
        entry.update(kind="integer" if whole else "continuous", lower=int(lo) if whole else lo,
                     upper=int(hi) if whole else hi, nullable=nullable)
        return s.astype(float), entry
    else:
        cats = sorted(set(values.map(label)), key=_category_order)
    text = s.astype(object).map(lambda v: label(v) if pd.notna(v) else None)
    entry.update(kind="binary" if len(cats) == 2 else "categorical", categories=cats, nullable=nullable)
    return text, entry


def _category_order(text: str) -> tuple[int, float, str]:
    """Numbers by value ("2" before "10"), then text."""
    try:
        return 0, float(text), text
    except ValueError:
        return 1, 0.0, text


def default_delta(n_train: int) -> float:
    """δ offered to every DP tool: 1e-5, or 1/(10 n) when that is smaller (a δ near 1/n can leak a record)."""
    return min(1e-5, 1.0 / (10 * n_train))


def build_meta(df: pd.DataFrame, name: str, target: str, code_columns: Iterable[str] = ()) -> tuple[pd.DataFrame, dict]:
    """The table in the benchmark's form and its meta.json (δ is set once the split is known)."""
    codes = set(code_columns)
    columns, entries = {}, []
    for col in df.columns:
        columns[col], entry = column_meta(df[col], is_target=col == target, code=col in codes)
        entries.append(entry)
    meta: dict[str, Any] = {"dataset": name, "target": target, "delta": None, "columns": entries}
    if codes:
        meta["codes"] = [c for c in df.columns if c in codes]
    return pd.DataFrame(columns), meta


@dataclass
class DatasetFiles:
    """One prepared dataset: its split and meta.json on disk, and the frames scoring reads."""

    name: str
    directory: Path

    @property
    def train_csv(self) -> Path:
        return self.directory / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.directory / "test.csv"

    @property
    def meta_json(self) -> Path:
        return self.directory / "meta.json"

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_json.read_text())

    @cached_property
    def train(self) -> pd.DataFrame:
        return read_table(self.train_csv, self.meta)

    @cached_property
    def test(self) -> pd.DataFrame:
        return read_table(self.test_csv, self.meta)

    @cached_property
    def schema(self) -> Any:
        return scoring_schema(self.meta)

    @property
    def n_train(self) -> int:
        return int(self.meta["n_train"])


def prepare_dataset(dataset: Dataset, work: Path) -> DatasetFiles:
    """Write train.csv, test.csv and meta.json once (they are deterministic); reuse them after."""
    from clinsynth.pipeline import split_holdout

    files = DatasetFiles(dataset.name, work / dataset.name)
    if files.meta_json.is_file():
        return files
    raw = dataset.load()
    code_columns = [c for c in raw.columns if c not in ("age", "sex")] if dataset.codes else []
    table, meta = build_meta(raw, dataset.name, dataset.target, code_columns)
    train, test = split_holdout(table, dataset.target, seed=0)
    meta.update(delta=default_delta(len(train)), n_train=len(train), n_test=len(test),
                split="stratified 80/20 on the target, seed 0")
    files.directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(files.train_csv, train.to_csv(index=False, na_rep=""))
    write_text_atomic(files.test_csv, test.to_csv(index=False, na_rep=""))
    write_text_atomic(files.meta_json, json.dumps(meta, indent=1) + "\n")  # last: it marks the set complete
    return files


def read_table(path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """A benchmark CSV: categories as text, numbers as floats, empty = missing."""
    kinds = {c["name"]: c["kind"] for c in meta["columns"]}
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return pd.DataFrame({name: pd.to_numeric(df[name]) if kinds[name] in NUMERIC else df[name].astype(object)
                         for name in kinds if name in df.columns})


def scoring_schema(meta: dict[str, Any]) -> Any:
    """One clinsynth schema for scoring every tool's table, straight from meta.json."""
    from clinsynth.schema import ColumnSpec, Schema

    specs = []
    for c in meta["columns"]:
        common = dict(name=c["name"], kind=c["kind"], missing="indicator" if c.get("nullable") else "none", public=True)
        if c["kind"] in DISCRETE:
            specs.append(ColumnSpec(categories=list(c["categories"]), **common))
        else:
            specs.append(ColumnSpec(bounds=(float(c["lower"]), float(c["upper"])), **common))
    return Schema(columns=specs, target=meta["target"], longitudinal=[])


# -- synthetic tables --------------------------------------------------------------------------
_MISSING_TEXT = {"nan", "NaN", "None", "<NA>", "NA", "null"}


def coerce_synthetic(synth: pd.DataFrame, meta: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """A peer's table in the scoring schema's types: numbers to float, categories to their text.

    Raises ``ValueError`` for a table that cannot be scored (no rows, columns missing); values
    that do not fit (text in a number column, an unknown category) are counted in the notes.
    """
    if len(synth) < 2:
        raise ValueError(f"the synthetic table has {len(synth)} row(s)")
    names = [c["name"] for c in meta["columns"]]
    absent = [n for n in names if n not in synth.columns]
    if absent:
        raise ValueError(f"the synthetic table lacks {len(absent)} column(s): {', '.join(absent[:5])}")
    notes, out = [], {}
    for c in meta["columns"]:
        s = synth[c["name"]]
        if c["kind"] in NUMERIC:
            text = s.astype(object).where(s.notna(), None)
            blank = text.map(lambda v: v is None or (isinstance(v, str) and v.strip() in {"", *_MISSING_TEXT}))
            x = pd.to_numeric(s.where(~blank), errors="coerce").astype(float)
            x = x.where(np.isfinite(x))
            lost = int((x.isna() & ~blank).sum())
            if lost > 0:
                notes.append(f"{c['name']}: {lost} non-numeric value(s) read as missing")
            out[c["name"]] = x
        else:
            out[c["name"]], unknown = _as_categories(s, c["categories"])
            if unknown:
                notes.append(f"{c['name']}: {unknown} value(s) outside the declared categories")
    extra = [n for n in synth.columns if n not in set(names)]
    if extra:
        notes.append(f"dropped {len(extra)} extra column(s)")
    return pd.DataFrame(out), notes


def _as_categories(s: pd.Series, categories: list[str]) -> tuple[pd.Series, int]:
    known = set(categories)

    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return np.nan
        text = label(v)
        if text in known:
            return text
        if text in _MISSING_TEXT:
            return np.nan
        try:  # "1.0" read as text where the category is "1"
            number = float(text)
        except ValueError:
            return text
        return label(number) if label(number) in known else text

    values = s.astype(object).map(one).astype(object)
    unknown = int((values.notna() & ~values.isin(known)).sum())
    return values, unknown


def score(train: pd.DataFrame, test: pd.DataFrame, synth: pd.DataFrame, schema: Any, seed: int) -> dict[str, float]:
    """clinsynth's utility, detection and privacy-attack numbers of one synthetic table.

    Native thread pools are held at one thread: on a busy 2-core machine gradient boosting's
    OpenMP threads spin against each other (measured: 17 s with two threads, 0.5 s with one, on
    breast cancer)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _score(train, test, synth, schema, seed)


def _score(train: pd.DataFrame, test: pd.DataFrame, synth: pd.DataFrame, schema: Any, seed: int) -> dict[str, float]:
    from clinsynth.evaluate.fidelity import detection_auroc
    from clinsynth.evaluate.privacy import privacy_attacks
    from clinsynth.evaluate.utility import tstr

    utility = tstr(train, test, synth, schema, seed=seed, n_bootstrap=0, importance=False)
    row: dict[str, float] = {}
    for short, clf in TSTR_CLASSIFIERS.items():
        row[f"tstr_trtr_{short}"] = utility.ratio(clf)
        row[f"trtr_auroc_{short}"] = utility.get(clf, "real").auroc
        row[f"tstr_auroc_{short}"] = utility.get(clf, "synthetic").auroc
    row["detection_auroc"] = detection_auroc(train, synth, schema, seed=seed)
    attacks = privacy_attacks(train, test, synth, schema, seed=seed)
    row["dcr_share"] = attacks.dcr.share_closer_to_train
    row["mia_auroc"] = attacks.membership.auroc
    row["exact_copy_rate"] = attacks.exact_copies.synthetic_rate
    row["holdout_copy_rate"] = attacks.exact_copies.holdout_rate
    return {k: float(v) for k, v in row.items()}


# -- cells ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Synthesizer:
    tool: str
    name: str
    dp: bool | None  # None: with and without DP (clinsynth's auto, the default of `clinsynth run`)
    data: tuple[str, ...] = ("table", "codes")  # "codes": the wide EHR table


SYNTHESIZERS: list[Synthesizer] = [
    Synthesizer("clinsynth", "auto", None),
    Synthesizer("clinsynth", "acgan", False, ("table",)),
    Synthesizer("clinsynth", "medgan", False, ("codes",)),
    Synthesizer("clinsynth", "vae", False),
    Synthesizer("clinsynth", "dp-acgan", True, ("table",)),
    Synthesizer("clinsynth", "dp-medgan", True, ("codes",)),
    Synthesizer("clinsynth", "dp-vae", True),
    Synthesizer("clinsynth", "bayesnet", False, ("table",)),
    Synthesizer("clinsynth", "dp-bayesnet", True, ("table",)),
    Synthesizer("clinsynth", "codetree", False, ("codes",)),
    Synthesizer("clinsynth", "dp-codetree", True, ("codes",)),
    Synthesizer("sdv", "gaussiancopula", False),
    Synthesizer("sdv", "ctgan", False),
    Synthesizer("sdv", "tvae", False),
    Synthesizer("smartnoise", "aim", True),
    Synthesizer("smartnoise", "mst", True),
    Synthesizer("smartnoise", "dpctgan", True),
    Synthesizer("smartnoise", "patectgan", True),
    Synthesizer("mostlyai", "tabularargn", False),
    Synthesizer("mostlyai", "dp-tabularargn", True),
]
TOOLS = tuple(dict.fromkeys(s.tool for s in SYNTHESIZERS))


@dataclass(frozen=True)
class Cell:
    dataset: str
    tool: str
    synthesizer: str
    epsilon: float | None
    seed: int
    params: tuple[tuple[str, str], ...] = ()

    @property
    def eps_label(self) -> str:
        return "non-DP" if self.epsilon is None else f"{self.epsilon:g}"

    @property
    def params_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params)

    @property
    def key(self) -> str:
        return "|".join([self.dataset, f"{self.tool}:{self.synthesizer}", self.eps_label, str(self.seed), self.params_text])

    @property
    def dirname(self) -> str:
        extra = "-" + "-".join(f"{k}{v}" for k, v in self.params) if self.params else ""
        return f"{self.tool}-{self.synthesizer}-eps{self.eps_label}-s{self.seed}{extra}".replace("/", "_").replace(" ", "")

    def with_seed(self, seed: int) -> Cell:
        return Cell(self.dataset, self.tool, self.synthesizer, self.epsilon, seed, self.params)


def build_cells(datasets: Sequence[str], tools: Sequence[str], synthesizers: Sequence[str] | None,
                epsilons: Sequence[float | None], seeds: Sequence[int],
                params: Sequence[tuple[str, str]] = ()) -> list[Cell]:
    """Every cell of the selection, seeds innermost (so seed 0 runs first and can spare the rest).

    ``synthesizers`` filters by name (``ctgan``) or tool:name (``sdv:ctgan``); a synthesizer meets
    only the datasets it models (clinsynth's code models take the EHR table, ``acgan`` the others)."""
    wanted = set(synthesizers or [])
    cells = []
    for name in datasets:
        kind = "codes" if DATASETS[name].codes else "table"
        for s in SYNTHESIZERS:
            if s.tool not in tools or kind not in s.data:
                continue
            if wanted and s.name not in wanted and f"{s.tool}:{s.name}" not in wanted:
                continue
            for eps in (list(epsilons) if s.dp is None else [e for e in epsilons if (e is not None) == s.dp]):
                for seed in sorted(seeds):
                    cells.append(Cell(name, s.tool, s.name, eps, seed, tuple(params)))
    return cells


# -- the record of finished cells ------------------------------------------------------------------
class CellStore:
    """Rows of finished cells, one JSON line each, appended as each cell ends; the last row of a key wins."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(jsonable(row)) + "\n")
        self.rows[row["key"]] = row


def base_row(cell: Cell, status: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"key": cell.key, "dataset": cell.dataset, "tool": cell.tool, "synthesizer": cell.synthesizer,
            "epsilon": cell.epsilon, "seed": cell.seed, "cell_params": cell.params_text, "status": status,
            "reason": reason, "ran": status in FINISHED, "finished_at": dt.datetime.now().isoformat(timespec="seconds"),
            **extra}


Runner = Callable[[Cell], dict[str, Any]]


def run_cells(cells: Sequence[Cell], store: CellStore, runner: Runner, retry_failed: bool = False,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run each cell not yet finished, one at a time; the rows added, in order.

    A cell whose seed 0 failed or timed out is recorded with seed 0's status and reason and not
    run (``ran`` false): a peer that cannot handle a dataset does not burn hours three times."""
    added = []
    for i, cell in enumerate(cells, 1):
        previous = store.get(cell.key)
        if previous and previous["status"] in FINISHED and not (retry_failed and previous["status"] != "ok"):
            log(f"[{i}/{len(cells)}] {cell.key}: done before ({previous['status']}), skipped")
            continue
        first = store.get(cell.with_seed(0).key) if cell.seed != 0 else None
        if first and first["status"] in HOPELESS:
            row = base_row(cell, first["status"], first["reason"], ran=False, propagated_from_seed=0)
        else:
            log(f"[{i}/{len(cells)}] {cell.key}: running")
            row = runner(cell)
        store.put(row)
        added.append(row)
        log(f"[{i}/{len(cells)}] {cell.key}: {row['status']}" + (f" ({row['reason']})" if row.get("reason") else ""))
    return added


# -- one cell in a subprocess --------------------------------------------------------------------
RESULT_FIELDS = ("tool_version", "delta", "n_train", "n_sampled", "fit_seconds", "sample_seconds", "speed_rows",
                 "speed_seconds", "sample_rows_per_second", "throughput_draws", "throughput_seconds",
                 "throughput_rows_per_second", "baseline_rss_mb", "fit_peak_rss_mb", "fit_memory_mb", "python",
                 "torch_version")


@dataclass(frozen=True)
class Timing:
    """How a cell times sampling: ``rows`` per timed draw; draws repeated until ``throughput_seconds``."""

    rows: int = 20_000
    throughput_seconds: float = 1.0


def cell_command(cell: Cell, files: DatasetFiles, cell_dir: Path, paths: Paths, timing: Timing) -> list[str]:
    cmd = [str(paths.python(cell.tool)), str(paths.run_cell), "--tool", cell.tool, "--synthesizer", cell.synthesizer,
           "--train", str(files.train_csv), "--meta", str(files.meta_json), "--seed", str(cell.seed),
           "--n", str(files.n_train), "--speed-rows", str(timing.rows),
           "--throughput-seconds", repr(float(timing.throughput_seconds)),
           "--out", str(cell_dir / "synth.csv"), "--result", str(cell_dir / "result.json")]
    if cell.epsilon is not None:
        cmd += ["--epsilon", repr(float(cell.epsilon))]
    for k, v in cell.params:
        cmd += ["--param", f"{k}={v}"]
    return cmd


def execute(cmd: list[str], log_path: Path, timeout: float, cwd: Path) -> tuple[str, str | None]:
    """Run ``cmd`` in its own process group; ("ok" | "failed" | "timeout", reason)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the cell's own group: its workers go too
            proc.wait()
            return "timeout", f"timed out after {timeout:g} s"
    if code == 0:
        return "ok", None
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return "failed", f"killed by {name}{hint}"
    return "failed", f"exit code {code}: {_last_line(log_path)}"


def _last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def run_one(cell: Cell, files: DatasetFiles, paths: Paths, timeout: float, timing: Timing,
            scored: bool = True) -> dict[str, Any]:
    """Fit and sample in the tool's venv, then score here (unless not ``scored``); a row whatever happens."""
    python = paths.python(cell.tool)
    if not python.exists():
        return base_row(cell, "not installed", f"{python} missing (make it with bench/peers/setup.sh)")
    cell_dir = files.directory / ("cells" if scored else "speed_cells") / cell.dirname  # never a scored cell's table
    cell_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("synth.csv", "result.json"):
        (cell_dir / stale).unlink(missing_ok=True)
    status, reason = execute(cell_command(cell, files, cell_dir, paths, timing), cell_dir / "log.txt",
                             timeout, paths.run_cell.parent.parent)
    return score_cell(cell, files, cell_dir, status, reason, scored)


def score_cell(cell: Cell, files: DatasetFiles, cell_dir: Path, status: str = "ok",
               reason: str | None = None, scored: bool = True) -> dict[str, Any]:
    """The row of a cell whose subprocess has ended: its result.json, and scores when it sampled."""
    result = _read_json(cell_dir / "result.json")
    extra = {k: result.get(k) for k in RESULT_FIELDS}
    extra.update(n_test=files.meta.get("n_test"), n_columns=len(files.meta["columns"]), target=files.meta["target"],
                 params=json.dumps(result.get("params"), sort_keys=True) if result.get("params") is not None else None)
    notes = list(result.get("notes") or [])
    if result.get("error"):
        status, reason = ("failed" if status == "ok" else status), result["error"]
    if status == "ok" and scored:
        try:
            started = time.perf_counter()
            synth = pd.read_csv(cell_dir / "synth.csv", dtype=str, keep_default_na=False, na_values=[""])
            synth, coerced = coerce_synthetic(synth, files.meta)
            extra.update(score(files.train, files.test, synth, files.schema, cell.seed))
            extra["score_seconds"] = round(time.perf_counter() - started, 2)
            notes += coerced
        except Exception as e:  # noqa: BLE001 - an unscorable table is a result, not a crash
            status, reason = "failed", f"scoring: {type(e).__name__}: {e}"
            (cell_dir / "score_error.txt").write_text(traceback.format_exc())
    return base_row(cell, status, reason, notes="; ".join(map(str, notes)) or None, **extra)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def rescore(cells: Sequence[Cell], files: dict[str, DatasetFiles], store: CellStore,
            log: Callable[[str], None] = print) -> int:
    """Score again every selected cell that sampled (its synth.csv is kept), without refitting."""
    n = 0
    for cell in cells:
        previous = store.get(cell.key)
        cell_dir = files[cell.dataset].directory / "cells" / cell.dirname
        if not previous or not previous.get("ran") or not (cell_dir / "synth.csv").is_file():
            continue
        row = score_cell(cell, files[cell.dataset], cell_dir)
        store.put(row)
        n += 1
        log(f"rescored {cell.key}: {row['status']}")
    return n


# -- aggregation and the tables ------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    better: str  # "higher", "lower" or "half" (closest to 0.5)
    digits: int


METRICS = [
    Metric("tstr_trtr_lr", "TSTR/TRTR LR ↑", "higher", 3),
    Metric("tstr_trtr_rf", "TSTR/TRTR RF ↑", "higher", 3),
    Metric("tstr_trtr_gb", "TSTR/TRTR GB ↑", "higher", 3),
    Metric("detection_auroc", "detection AUROC ↓", "lower", 3),
    Metric("dcr_share", "DCR share →0.5", "half", 3),
    Metric("mia_auroc", "MIA AUROC →0.5", "half", 3),
    Metric("exact_copy_rate", "exact copies ↓", "lower", 3),
    Metric("fit_seconds", "fit s ↓", "lower", 1),
    Metric("sample_rows_per_second", "sample rows/s ↑", "higher", 0),
    Metric("fit_peak_rss_mb", "fit peak MB ↓", "lower", 0),
]


@dataclass
class Group:
    """The seeds of one dataset × synthesizer × ε: mean and sd of each metric over the seeds that ran."""

    dataset: str
    tool: str
    synthesizer: str
    epsilon: float | None
    cell_params: str
    n_seeds: int = 0
    n_ok: int = 0
    stats: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # metric -> (mean, sd, n)
    reasons: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.tool}:{self.synthesizer}" + (f" [{self.cell_params}]" if self.cell_params else "")

    @property
    def eps_group(self) -> str:
        return "non-DP" if self.epsilon is None else f"ε = {self.epsilon:g}"


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample sd (ddof 1; NaN for one value) and count of the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)


def aggregate(rows: Iterable[dict[str, Any]], keys: Sequence[str] = tuple(m.key for m in METRICS)) -> list[Group]:
    """Rows of cells to one group per dataset × synthesizer × ε × params, in first-seen order, with the
    mean and sd of each metric in ``keys``."""
    groups: dict[tuple, Group] = {}
    ok: dict[tuple, list[dict]] = {}
    for r in rows:
        k = (r["dataset"], r["tool"], r["synthesizer"], r["epsilon"], r.get("cell_params") or "")
        g = groups.setdefault(k, Group(*k))
        g.n_seeds += 1
        if r["status"] == "ok":
            ok.setdefault(k, []).append(r)
        else:
            reason = f"{r['status']}: {r.get('reason') or ''}".rstrip(": ")
            if reason not in g.reasons:
                g.reasons.append(reason)
    for k, g in groups.items():
        good = ok.get(k, [])
        g.n_ok = len(good)
        g.stats = {k: mean_sd([r.get(k) for r in good]) for k in keys}
    return list(groups.values())


def _rounded(value: float, digits: int) -> float:
    return round(value, digits) if math.isfinite(value) else math.nan


def best_marks(groups: Sequence[Group]) -> set[tuple[int, str]]:
    """(group index, metric) of the best mean in each column, within each dataset × ε group.

    Means are compared as printed, so entries that read the same are all best; a column where
    every entry reads the same has no best."""
    marks: set[tuple[int, str]] = set()
    blocks: dict[tuple[str, str], list[int]] = {}
    for i, g in enumerate(groups):
        blocks.setdefault((g.dataset, g.eps_group), []).append(i)
    for members in blocks.values():
        for m in METRICS:
            values = {i: _rounded(groups[i].stats.get(m.key, (math.nan,))[0], m.digits) for i in members}
            values = {i: v for i, v in values.items() if math.isfinite(v)}
            if len(values) < 2:
                continue
            badness = {i: -v if m.better == "higher" else v if m.better == "lower" else round(abs(v - 0.5), m.digits)
                       for i, v in values.items()}
            best = min(badness.values())
            if all(b == best for b in badness.values()):
                continue  # all alike: nothing to point out
            marks |= {(i, m.key) for i, b in badness.items() if b == best}
    return marks


def fmt(stat: tuple[float, float, int], digits: int) -> str:
    mean, sd, n = stat
    if n == 0:
        return "—"
    text = f"{mean:,.{digits}f}"
    return text + (f" ± {sd:,.{digits}f}" if n > 1 and math.isfinite(sd) else "")


def _group_order(g: Group) -> tuple:
    dataset = list(DATASETS).index(g.dataset) if g.dataset in DATASETS else len(DATASETS)
    return (dataset, g.dataset, -1.0 if g.epsilon is None else g.epsilon, TOOLS.index(g.tool) if g.tool in TOOLS else 99,
            g.synthesizer, g.cell_params)


def dataset_table(groups: Sequence[Group], marks: set[tuple[int, str]], index: dict[int, int]) -> list[str]:
    """One markdown table: a row per synthesizer × ε; best per column (within its ε group) in bold."""
    head = ["synthesizer", "ε", "seeds"] + [m.title for m in METRICS] + ["note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        i = index[id(g)]
        cells = [g.label, g.eps_group, f"{g.n_ok}/{g.n_seeds}"]
        for m in METRICS:
            text = fmt(g.stats[m.key], m.digits)
            cells.append(f"**{text}**" if (i, m.key) in marks else text)
        note = "; ".join(g.reasons)
        cells.append(note.replace("|", "/").replace("\n", " ")[:200])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        ram = "?"
    return {"platform": platform.platform(), "cpu": cpu, "cores": str(os.cpu_count()), "ram": ram}


def _unique(values: Iterable[Any]) -> str:
    seen = [str(v) for v in dict.fromkeys(v for v in values if v not in (None, ""))]
    return ", ".join(seen) or "?"


def render_markdown(rows: Sequence[dict[str, Any]], host: dict[str, str] | None = None) -> str:
    """compare.md: a header (machine, date, versions, δ per tool), then one table per dataset."""
    host = host or machine()
    groups = sorted(aggregate(rows), key=_group_order)
    marks = best_marks(groups)
    index = {id(g): i for i, g in enumerate(groups)}
    out = ["# clinsynth vs SDV, smartnoise-synth and mostlyai-engine", "",
           f"Made by `bench/compare.py` on {dt.date.today().isoformat()}: {host['cpu']}, {host['cores']} cores, "
           f"{host['ram']} RAM, no GPU ({host['platform']}).", ""]
    out += ["| tool | version | python | torch | δ of its DP runs |", "|---|---|---|---|---|"]
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = [r for r in rows if r["tool"] == tool and r.get("ran")]
        out.append(f"| {tool} | {_unique(r.get('tool_version') for r in mine)} | "
                   f"{_unique(r.get('python') for r in mine)} | {_unique(r.get('torch_version') for r in mine)} | "
                   f"{_unique(r.get('delta') for r in mine if r.get('epsilon') is not None) if any(r.get('epsilon') is not None for r in mine) else '—'} |")
    out += ["", "Each synthesizer is fitted with its defaults on the real training split (stratified 80/20, seed 0) and "
            "samples as many rows. Mean ± sd over the seeds that ran (\"seeds\" = ran/planned); best per column in "
            "bold within each ε group. TSTR/TRTR: AUROC on the real holdout of a classifier trained on synthetic over "
            "one trained on real rows. Detection: cross-validated AUROC of a random forest telling real training rows "
            "from synthetic ones. DCR share: share of synthetic rows nearer to a training than to a holdout record, "
            "size-adjusted (0.5 ideal, 1 = copies). MIA: AUROC of the distance-to-synthetic membership attack. Exact "
            "copies: share of synthetic rows equal to a training row. Fit peak MB: peak RSS of the fitting process. "
            "Bounds and categories of every column are given to every tool as public knowledge where its API takes them "
            "(mostlyai-engine's takes none: it learns value ranges itself, under DP from a tenth of its ε); δ = min(1e-5, 1/(10 n)) "
            "is offered to every DP tool.", ""]
    for dataset in dict.fromkeys(g.dataset for g in groups):
        mine = [g for g in groups if g.dataset == dataset]
        first = next((r for r in rows if r["dataset"] == dataset and r.get("n_test") is not None), {})
        out += [f"## {dataset}", "",
                f"n_train {first.get('n_train', '?')}, n_test {first.get('n_test', '?')}, "
                f"{first.get('n_columns', '?')} columns, target `{first.get('target', '?')}`.", ""]
        out += dataset_table(mine, marks, index) + [""]
    return "\n".join(out)


CSV_COLUMNS = ["dataset", "tool", "synthesizer", "epsilon", "seed", "cell_params", "status", "reason", "ran",
               "tstr_trtr_lr", "tstr_trtr_rf", "tstr_trtr_gb", "detection_auroc", "dcr_share", "mia_auroc",
               "exact_copy_rate", "holdout_copy_rate", "trtr_auroc_lr", "trtr_auroc_rf", "trtr_auroc_gb",
               "tstr_auroc_lr", "tstr_auroc_rf", "tstr_auroc_gb", *RESULT_FIELDS, "n_test", "n_columns", "target",
               "score_seconds", "params", "notes", "finished_at"]


def write_outputs(rows: Sequence[dict[str, Any]], results: Path) -> tuple[Path, Path]:
    """compare.csv (every cell, failed ones with their reason) and compare.md."""
    results.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([jsonable(r) for r in rows])
    frame = frame.reindex(columns=CSV_COLUMNS + [c for c in frame.columns if c not in CSV_COLUMNS and c != "key"])
    csv_path, md_path = results / "compare.csv", results / "compare.md"
    write_text_atomic(csv_path, frame.to_csv(index=False))
    write_text_atomic(md_path, render_markdown(rows) + "\n")
    return csv_path, md_path


# -- the speed pass: sampling throughput of every synthesizer in one run --------------------------------
SPEED_COLUMNS = ["dataset", "tool", "synthesizer", "epsilon", "seed", "cell_params", "status", "reason", "ran",
                 "speed_rows", "sample_rows_per_second", "throughput_draws", "throughput_seconds",
                 "throughput_rows_per_second", "fit_seconds", "tool_version", "python", "torch_version", "finished_at"]


SPEED_METRICS = ("sample_rows_per_second", "throughput_rows_per_second", "throughput_draws")


def speed_table(rows: Sequence[dict[str, Any]], dataset: str) -> list[str]:
    """One dataset's throughputs, and each clinsynth model's against the fastest peer's."""
    groups = sorted((g for g in aggregate(rows, SPEED_METRICS) if g.dataset == dataset), key=_group_order)
    peers = [g for g in groups if g.tool != "clinsynth" and g.n_ok]
    fastest = max(peers, key=lambda g: g.stats["throughput_rows_per_second"][0], default=None)
    top = fastest.stats["throughput_rows_per_second"][0] if fastest else math.nan
    lines = ["| synthesizer | ε | seeds | first draw rows/s | throughput rows/s | draws | ÷ fastest peer | note |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        rate = g.stats["throughput_rows_per_second"]
        ratio = rate[0] / top if rate[2] and math.isfinite(top) else math.nan
        lines.append(f"| {g.label} | {g.eps_group} | {g.n_ok}/{g.n_seeds} | {fmt(g.stats['sample_rows_per_second'], 0)} | "
                     f"{fmt(rate, 0)} | {fmt(g.stats['throughput_draws'], 0)} | "
                     f"{'—' if not math.isfinite(ratio) else f'{ratio:,.1f}×'} | "
                     f"{'; '.join(g.reasons).replace('|', '/')[:200]} |")
    if fastest is not None:
        ours = [g for g in groups if g.tool == "clinsynth" and g.n_ok]
        slowest = min(ours, key=lambda g: g.stats["throughput_rows_per_second"][0], default=None)
        lines += ["", f"Fastest peer: {fastest.label} ({fastest.eps_group}), {top:,.0f} rows/s."
                  + (f" Slowest clinsynth model: {slowest.label} ({slowest.eps_group}), "
                     f"{slowest.stats['throughput_rows_per_second'][0] / top:,.1f}× it." if slowest else "")]
    return lines


def render_speed_markdown(rows: Sequence[dict[str, Any]], host: dict[str, str] | None = None) -> str:
    host = host or machine()
    out = ["# Sampling throughput: clinsynth vs SDV, smartnoise-synth and mostlyai-engine, one run", "",
           f"Made by `bench/compare.py --speed-pass` on {dt.date.today().isoformat()}: {host['cpu']}, "
           f"{host['cores']} cores, {host['ram']} RAM, no GPU ({host['platform']}).", "",
           "Every synthesizer is fitted as in `compare.md` (its defaults, the same training split), samples as many "
           "rows as it trained on, then draws 20,000 rows, timed (\"first draw\": the figure in `compare.md`), and "
           "again until one second has passed in all; throughput = rows drawn over the time the draws took, the "
           "first included. A draw of a few milliseconds is at the mercy of page faults and stolen time slices; "
           "one second of draws is not, and a slow sampler's single draw already lasts that long. Measured in one "
           "run on one machine, so the ratios compare like with like. Mean ± sd over the seeds run; no scoring.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in sorted(rows, key=lambda r: list(DATASETS).index(r["dataset"])
                                                                  if r["dataset"] in DATASETS else 99)):
        out += [f"## {dataset}", ""] + speed_table(rows, dataset) + [""]
    return "\n".join(out)


def write_speed_outputs(rows: Sequence[dict[str, Any]], results: Path) -> tuple[Path, Path]:
    """speed.csv (every speed-pass cell) and speed.md."""
    results.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([jsonable(r) for r in rows]).reindex(columns=SPEED_COLUMNS)
    csv_path, md_path = results / "speed.csv", results / "speed.md"
    write_text_atomic(csv_path, frame.to_csv(index=False))
    write_text_atomic(md_path, render_speed_markdown(rows) + "\n")
    return csv_path, md_path


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A line per dataset × ε group: the best synthesizer by mean TSTR/TRTR (LR, RF, GB) and clinsynth's best."""
    lines = []
    groups = sorted(aggregate(rows), key=_group_order)
    for key in dict.fromkeys((g.dataset, g.eps_group) for g in groups):
        mine = [g for g in groups if (g.dataset, g.eps_group) == key and g.n_ok]
        if not mine:
            continue
        def utility(g: Group) -> float:
            return float(np.nanmean([g.stats[f"tstr_trtr_{c}"][0] for c in TSTR_CLASSIFIERS]))
        ranked = sorted(mine, key=lambda g: -utility(g) if math.isfinite(utility(g)) else math.inf)
        best = ranked[0]
        text = (f"{key[0]}, {key[1]}: best utility {best.label} {utility(best):.3f} "
                f"(detection {best.stats['detection_auroc'][0]:.3f})")
        ours = next((g for g in ranked if g.tool == "clinsynth"), None)
        if ours is not None and ours is not best:
            text += (f"; clinsynth best {ours.label} {utility(ours):.3f} (detection {ours.stats['detection_auroc'][0]:.3f}),"
                     f" rank {ranked.index(ours) + 1} of {len(ranked)}")
        lines.append(text)
    return lines


# -- command line ------------------------------------------------------------------------------------
def _epsilon(text: str) -> float | None:
    return None if text.lower() in ("none", "non-dp", "inf", "nondp") else float(text)


def _param(text: str) -> tuple[str, str]:
    k, sep, v = text.partition("=")
    if not sep or not k:
        raise argparse.ArgumentTypeError(f"--param takes key=value, got {text!r}")
    return k, v


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    p.add_argument("--synthesizers", nargs="+", default=None, help="names (ctgan) or tool:name (sdv:ctgan); default all")
    p.add_argument("--epsilons", nargs="+", type=_epsilon, default=[None, 1.0, 4.0],
                   help="'none' for the non-DP synthesizers, numbers for the DP ones (default: none 1 4)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per cell (default 3600)")
    p.add_argument("--speed-rows", type=int, default=20_000, help="rows of each timed draw")
    p.add_argument("--throughput-seconds", type=float, default=1.0,
                   help="repeat the timed draw until this long has passed in all (throughput; default 1)")
    p.add_argument("--speed-pass", action="store_true",
                   help="time sampling only, no scoring, into speed_cells.jsonl / speed.md (e.g. with --seeds 0)")
    p.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="hyperparameter passed to every selected cell (recorded as part of the cell)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and what is already done, run nothing")
    p.add_argument("--rescore", action="store_true", help="score the kept synthetic tables again, no refitting")
    p.add_argument("--retry-failed", action="store_true", help="run failed and timed-out cells again")
    p.add_argument("--work-dir", type=Path, default=Paths.work)
    p.add_argument("--results-dir", type=Path, default=Paths.results)
    p.add_argument("--peers-dir", type=Path, default=Paths.peers)
    p.add_argument("--run-cell", type=Path, default=Paths.run_cell)
    return p.parse_args(argv)


def prepare_all(names: Sequence[str], work: Path) -> tuple[dict[str, DatasetFiles], dict[str, str]]:
    """Prepared datasets, and the reason for each one that cannot be (its extra is missing)."""
    import importlib.util

    files, missing = {}, {}
    for name in names:
        d = DATASETS[name]
        if d.needs and importlib.util.find_spec(d.needs) is None and not (work / name / "meta.json").is_file():
            missing[name] = f"{d.needs} is not installed (pip install -e '.[bench]')"
            continue
        files[name] = prepare_dataset(d, work)
    return files, missing


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = Paths(args.work_dir, args.results_dir, args.peers_dir, args.run_cell)
    cells = build_cells(args.datasets, args.tools, args.synthesizers, args.epsilons, args.seeds, args.param)
    store = CellStore(paths.speed_cells if args.speed_pass else paths.cells)
    if args.dry_run:
        for cell in cells:
            done = store.get(cell.key)
            print(f"{cell.key:60s} {done['status'] if done else 'to run'}")
        print(f"{len(cells)} cells, {sum(1 for c in cells if (store.get(c.key) or {}).get('status') in FINISHED)} done")
        return 0
    files, missing = prepare_all(args.datasets, paths.work)
    timing = Timing(args.speed_rows, args.throughput_seconds)
    if args.rescore and not args.speed_pass:
        rescore([c for c in cells if c.dataset in files], files, store)
    else:
        def runner(cell: Cell) -> dict[str, Any]:
            if cell.dataset in missing:
                return base_row(cell, "not installed", missing[cell.dataset])
            return run_one(cell, files[cell.dataset], paths, args.timeout, timing, scored=not args.speed_pass)

        run_cells(cells, store, runner, retry_failed=args.retry_failed)
    if args.speed_pass:
        csv_path, md_path = write_speed_outputs(list(store.rows.values()), paths.results)
        print(f"wrote {csv_path} and {md_path}")
        return 0
    csv_path, md_path = write_outputs(list(store.rows.values()), paths.results)
    print(f"wrote {csv_path} and {md_path}")
    for line in summary(list(store.rows.values())):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
