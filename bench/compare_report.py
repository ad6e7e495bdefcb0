"""The report: stored cell rows aggregated over seeds into compare.md (a table per dataset, best
per column in bold within each ε group) and compare.csv, the speed pass into speed.md and speed.csv,
and the one-line-per-group summary printed after a run."""
from __future__ import annotations

import datetime as dt
import math
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinsynth.data.io import jsonable, write_text_atomic
from compare_datasets import DATASETS
from compare_grid import TOOLS
from compare_scoring import TSTR_CLASSIFIERS
from compare_store import RESULT_FIELDS

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
#: a long table's patient-level shape (compare_scoring.LONG_FIELDS), shown in its table only
LONG_METRICS = [
    Metric("visits_ks", "visits/patient KS ↓", "lower", 3),
    Metric("gaps_ks", "gaps KS ↓", "lower", 3),
    Metric("strictly_increasing", "increasing times ↑", "higher", 3),
]
ALL_METRICS = METRICS + LONG_METRICS


def metrics_for(dataset: str) -> list[Metric]:
    """The columns of a dataset's table: the long-table ones after the scores for a table of visits."""
    long = dataset in DATASETS and DATASETS[dataset].kind == "long"
    return METRICS[:7] + LONG_METRICS + METRICS[7:] if long else METRICS


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


def aggregate(rows: Iterable[dict[str, Any]], keys: Sequence[str] = tuple(m.key for m in ALL_METRICS)) -> list[Group]:
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
        for m in ALL_METRICS:
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
    metrics = metrics_for(groups[0].dataset) if groups else METRICS
    head = ["synthesizer", "ε", "seeds"] + [m.title for m in metrics] + ["note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        i = index[id(g)]
        cells = [g.label, g.eps_group, f"{g.n_ok}/{g.n_seeds}"]
        for m in metrics:
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
        if metrics_for(dataset) is not METRICS:
            out += [LONG_NOTE, ""]
        out += dataset_table(mine, marks, index) + [""]
    return "\n".join(out)


CSV_COLUMNS = ["dataset", "tool", "synthesizer", "epsilon", "seed", "cell_params", "status", "reason", "ran",
               "tstr_trtr_lr", "tstr_trtr_rf", "tstr_trtr_gb", "detection_auroc", "dcr_share", "mia_auroc",
               "exact_copy_rate", "holdout_copy_rate", "visits_ks", "gaps_ks", "strictly_increasing",
               "after_last_visit", "patient_columns_vary", "n_synthetic_patients", "trtr_auroc_lr", "trtr_auroc_rf", "trtr_auroc_gb",
               "tstr_auroc_lr", "tstr_auroc_rf", "tstr_auroc_gb", *RESULT_FIELDS, "n_test", "n_columns", "target",
               "score_seconds", "params", "notes", "finished_at"]


LONG_NOTE = ("A long table of visits (one row per visit; n_train and n_test count patients): each tool fits the "
             "training patients' visits and samples as many patients. Every score is per patient, as clinsynth's "
             "`cs.evaluate` computes it on a long schema: one record per patient (per-patient columns, first and last "
             "value of each lab, visits, follow-up, missing share) for TSTR/TRTR (target: the per-patient `event`), "
             "detection and the attacks (membership = a patient). Visits/patient and gaps KS: two-sample KS of the "
             "visits per patient and of the days between visits, synthetic vs real training; increasing times: share "
             "of synthetic patients whose visit times rise strictly row by row.")


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
