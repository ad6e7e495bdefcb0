"""What per-epoch checkpoints cost: fit time with and without ``checkpoint_dir`` on small inputs.

Runs alternate (plain, checkpointed, plain, checkpointed, …) so that load on a shared machine
hits both alike; the figures are the ratio of the medians, the share of the checkpointed fit's
own time spent writing checkpoints (``Checkpoint.epoch_done``, measured inside the same run, so it
holds under load too) and the checkpoint's size on disk.

With ``--threads 1`` torch uses one thread: on a machine shared by several jobs, torch's default
thread pool spins and the same fit took 16 s to 128 s (medGAN below), while one thread took 2.2 s
each time — only then does the ratio of two fits mean something.

    python bench/bench_checkpoint.py [--rounds 3] [--threads 1] [--json bench/results/checkpoint.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from clinsynth.data.datasets import simulate_trial
from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.models import checkpoint
from clinsynth.models.base import library_versions
from clinsynth.models.registry import create
from clinsynth.schema import Schema


def cases():
    trial = simulate_trial(n=1000, seed=0)
    schema = Schema.infer(trial, target="arm")
    codes = simulate_ehr(2000, 200, seed=0)[0]
    common = dict(seed=0, device="cpu", progress=False)
    yield "acgan (trial 1000 rows, 30 epochs)", lambda **kw: create("acgan", epochs=30, **common).fit(trial, schema, **kw)
    yield "vae (trial 1000 rows, 30 epochs)", lambda **kw: create("vae", epochs=30, **common).fit(trial, schema, **kw)
    yield ("medgan (EHR 2000 x 200 codes, 10 + 20 epochs)",
           lambda **kw: create("medgan", pretrain_epochs=10, epochs=20, batch_size=256, **common).fit(codes, **kw))


def timed_checkpoints() -> tuple[list[float], list[str]]:
    """Make ``Checkpoint.epoch_done`` add its duration to the first list returned, and each file a
    checkpoint writes to the second."""
    spent: list[float] = []
    files: list[str] = []
    original, write_with = checkpoint.Checkpoint.epoch_done, checkpoint.write_with

    def epoch_done(self, *args):
        t = time.perf_counter()
        original(self, *args)
        spent.append(time.perf_counter() - t)

    def counted(path, writer):
        files.append(Path(path).name)
        write_with(path, writer)

    checkpoint.Checkpoint.epoch_done = epoch_done
    checkpoint.write_with = counted
    return spent, files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    spent, files = timed_checkpoints()
    for label, fit in cases():
        fit()  # warm-up: imports and first-call costs
        plain, checkpointed, shares, size = [], [], [], 0
        for _ in range(args.rounds):
            t = time.perf_counter()
            fit()
            plain.append(time.perf_counter() - t)
            with tempfile.TemporaryDirectory() as d:
                spent.clear()
                files.clear()
                t = time.perf_counter()
                fit(checkpoint_dir=d)
                checkpointed.append(time.perf_counter() - t)
                shares.append(sum(spent) / checkpointed[-1])
                size = sum(p.stat().st_size for p in Path(d).iterdir())
        row = {"case": label, "plain_s": statistics.median(plain), "checkpointed_s": statistics.median(checkpointed),
               "ratio": statistics.median(checkpointed) / statistics.median(plain),
               "checkpoint_share": statistics.median(shares), "epochs": len(spent),
               "checkpoints_written": files.count(checkpoint.CHECKPOINT_FILE),
               "snapshot_files": len(files) - files.count(checkpoint.CHECKPOINT_FILE),
               "checkpoint_bytes": size}
        results.append(row)
        print(f"{label}: {row['plain_s']:.2f} s plain, {row['checkpointed_s']:.2f} s with checkpoints "
              f"(x{row['ratio']:.3f}); {row['checkpoints_written']} checkpoints over {row['epochs']} epochs (and "
              f"{row['snapshot_files']} snapshot files) took {100 * row['checkpoint_share']:.1f} % of the checkpointed "
              f"fit; {size / 1e6:.2f} MB on disk")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                                         "versions": library_versions(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
