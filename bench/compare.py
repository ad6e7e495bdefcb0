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
1,000 codes as "0"/"1" columns; 5,000 patients); the simulated long trial (one row per visit,
5,000 patients, target ``event``; split by patient and scored per patient, see ``compare_scoring.py``;
it meets the sequence models only: clinsynth's auto, SDV's PAR, mostlyai-engine's sequential mode). Bounds and category lists come from the whole
dataset and are declared public knowledge for every tool alike (``meta.json``), as far as its API
takes them (mostlyai-engine's takes none: it learns them from the data, under DP with part of its
budget; see ``bench/adapters/mostlyai.py``); δ = the ledger's default for n_train
(``clinsynth.privacy.ledger.default_delta``: min(1e-5, 1/(10 n)) rounded down to one significant
digit, 1e-5 on every dataset here) is offered to every DP tool (what each used is in its result,
and in the report).

Every finished cell is appended to ``bench/results/compare_cells.jsonl`` and skipped when the
script runs again; a failed or timed-out seed 0 is recorded for the other seeds of its
(dataset, synthesizer, ε) without running them. ``compare.csv`` and ``compare.md`` are rebuilt
from that file after each run.

This file is the command line; each job is a module beside it: ``compare_datasets.py`` (loaders,
meta.json, the prepared split), ``compare_grid.py`` (synthesizers and cells), ``compare_runner.py``
(a cell in its tool's venv, then scored), ``compare_scoring.py`` (a synthetic table's numbers),
``compare_store.py`` (the resumable record of finished cells) and ``compare_report.py``
(compare.md/.csv, speed.md/.csv).

    python bench/compare.py --dry-run
    python bench/compare.py --datasets breast_cancer --tools clinsynth --seeds 0
    python bench/compare.py                      # everything: hours on 2 cores
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compare_datasets import DATASETS, prepare_all
from compare_grid import TOOLS, Cell, build_cells
from compare_report import summary, write_outputs, write_speed_outputs
from compare_runner import Paths, Timing, rescore, run_cells, run_one
from compare_store import FINISHED, CellStore, base_row


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
