"""The end-to-end jobs the CLI exposes, as plain functions: the CLI only parses and prints.

``run_release`` is the main job (``clinsynth run``): from one table to the five files of a
release. ``run_demo`` is the same on the bundled simulated trial, the first thing a newcomer runs.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from clinsynth.data.io import jsonable, write_table, write_text_atomic
from clinsynth.errors import ConfigError
from clinsynth.schema import Schema


def split_holdout(df: pd.DataFrame, target: str | None, test_size: float = 0.2,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/holdout split; the holdout never reaches the model."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {test_size}")
    stratify = df[target].astype(str) if target is not None else None
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def guarantee_of(model: Any) -> dict[str, Any]:
    """What a fitted model promises, as the report states it: its ledger, or no guarantee."""
    from clinsynth.evaluate.suite import no_guarantee

    ledger = getattr(model, "ledger_", None)
    if ledger is None:
        return no_guarantee(model.name)
    return {"differentially_private": True, "model": model.name, "epsilon": ledger.epsilon, "delta": ledger.delta,
            "spent": ledger.spent(), "accountant": ledger.accountant, "charges": ledger.table()}


def table_hash(df: pd.DataFrame) -> str:
    """SHA-256 of a table's content as read (column names, then row hashes): the manifest's
    proof of which input made a release, independent of file format."""
    digest = hashlib.sha256("\x1f".join(map(str, df.columns)).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RunConfig:
    """Everything that decides a release, recorded in its manifest."""

    target: str | None
    model: str = "acgan"
    epsilon: float | None = None
    delta: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.2
    n_synthetic: int | None = None  # default: as many as the training split
    seed: int = 0
    output_format: str = "csv"
    max_queries: int = 20_000


@dataclass
class RunResult:
    out_dir: Path
    files: dict[str, Path]
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    seconds: float = 0.0


def run_release(df: pd.DataFrame, config: RunConfig, out_dir: str | Path, schema: Schema | None = None,
                source: dict[str, Any] | None = None, progress: bool = True,
                on_step: Any = None) -> RunResult:
    """The main job: holdout split, fit, sample, evaluate, report, manifest.

    The five files of a release are written atomically, the manifest last, so a directory with a
    manifest is complete; an interrupted run leaves the earlier files whole. ``on_step(name)``
    is told each step as it starts (the CLI prints it).
    """
    from clinsynth import __version__
    from clinsynth.evaluate.suite import evaluate
    from clinsynth.models.base import library_versions
    from clinsynth.models.registry import create, private_model
    from clinsynth.report.html import write_report

    if config.output_format not in ("csv", "parquet"):
        raise ConfigError(f"output format must be csv or parquet, got {config.output_format!r}")
    say = on_step or (lambda name: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def timed(name: str, fn: Any) -> Any:
        say(name)
        t = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        return result

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; a release is a directory of five files")
    out.mkdir(parents=True, exist_ok=True)
    schema = schema or Schema.infer(df, target=config.target)
    schema.validate(df)
    train, test = split_holdout(df, schema.target, config.test_size, seed=config.seed)
    params = dict(config.params)
    name = private_model(config.model, config.epsilon, config.delta, params)
    model = create(name, seed=config.seed, progress=progress, **params)
    timed("fit", lambda: model.fit(train, schema))
    n = config.n_synthetic or len(train)
    synthetic = timed("sample", lambda: model.sample(n, seed=config.seed))
    files = {"synthetic": write_table(synthetic, out / f"synthetic.{config.output_format}"),
             "model": model.save(out / "model")}
    guarantee = timed("privacy ledger", lambda: guarantee_of(model))
    evaluation = timed("evaluate", lambda: evaluate(train, test, synthetic, model.schema_, guarantee=guarantee,
                                                    model={"name": model.name, "params": jsonable(model.get_params())},
                                                    dataset=(source or {}).get("name", "table"), seed=config.seed,
                                                    max_queries=config.max_queries, progress=on_step))
    metrics = evaluation.to_dict()
    files["metrics"] = out / "metrics.json"
    write_text_atomic(files["metrics"], json.dumps(metrics, indent=1) + "\n")
    files["report"] = timed("report", lambda: write_report(metrics, out / "report.html"))
    timings["total"] = round(time.perf_counter() - start, 2)
    manifest = {
        "clinsynth_version": __version__,
        "created": metrics["created"],
        "config": jsonable(asdict(config)),
        "model": {"name": model.name, "params": jsonable(model.get_params())},
        "input": {**(source or {}), "rows": len(df), "columns": int(df.shape[1]), "table_sha256": table_hash(df)},
        "split": {"n_train": len(train), "n_test": len(test), "stratified_by": schema.target},
        "seeds": {"split": config.seed, "model": config.seed, "sample": config.seed, "evaluation": config.seed},
        "versions": library_versions(),
        "device": str(getattr(model, "device_", "cpu")),
        "timings_seconds": timings,
        "files": {k: {"path": v.name, **({"sha256": file_hash(v)} if v.is_file() else {})} for k, v in files.items()},
    }
    files["manifest"] = out / "manifest.json"
    write_text_atomic(files["manifest"], json.dumps(jsonable(manifest), indent=1) + "\n")
    return RunResult(out, files, metrics, manifest, seconds=time.perf_counter() - start)


def run_demo(out_dir: str | Path = "clinsynth-demo", n: int = 6502, epochs: int = 150, seed: int = 0,
             epsilon: float | None = None, progress: bool = True, on_step: Any = None) -> RunResult:
    """``run`` on the bundled simulated trial (target: arm), with the SPRINT AC-GAN."""
    from clinsynth.data.datasets import simulate_trial

    df = simulate_trial(n=n, seed=seed)
    params = {"epochs": epochs} if epsilon is None else {}
    config = RunConfig(target="arm", epsilon=epsilon, params=params, seed=seed)
    source = {"name": "simulated SPRINT-structured trial (clinsynth.data.datasets.simulate_trial)", "n": n, "seed": seed}
    return run_release(df, config, out_dir, source=source, progress=progress, on_step=on_step)
