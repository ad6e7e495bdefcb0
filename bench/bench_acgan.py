"""AC-GAN throughput on the simulated trial: training (real records/s) and sampling (rows/s).

Each figure is printed next to a plain-PyTorch reference run in the same process, so the ratio
means something on a shared, noisy machine:
  - training: the same generator/discriminator sizes as bare MLPs, a bare AC-GAN step, no clinsynth;
  - sampling: ../shared/PERFORMANCE.md's reference — noise → MLP (width 128) → vectorised decode
    of a 40-column table (30 numbers, 10 five-level categories) into a DataFrame.
The issue's bar: ≥ 500,000 rows/s to a DataFrame on this 2-core machine.

    python bench/bench_acgan.py [--epochs 20] [--rows 500000] [--json bench/results/acgan.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import clinsynth
from clinsynth.data.datasets import simulate_trial
from clinsynth.data.io import write_table
from clinsynth.models.base import library_versions


def best_rate(fn, n: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def reference_sampling(n: int) -> float:
    """PERFORMANCE.md's 40-column reference: MLP width 128 + vectorised decode, plain PyTorch."""
    n_num, n_cat, k, zdim = 30, 10, 5, 64
    levels = np.array(list("abcde"), dtype=object)
    net = torch.nn.Sequential(torch.nn.Linear(zdim, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, n_num + n_cat * k)).eval()

    def to_frame(x: np.ndarray) -> pd.DataFrame:
        num = x[:, :n_num] * 15 + 120
        cat = x[:, n_num:].reshape(len(x), n_cat, k).argmax(-1)
        d = {f"x{i}": num[:, i] for i in range(n_num)}
        d.update({f"c{j}": pd.Categorical.from_codes(cat[:, j], categories=levels) for j in range(n_cat)})
        return pd.DataFrame(d)

    def run() -> None:
        with torch.inference_mode():
            parts = [to_frame(net(torch.randn(min(100_000, n - s), zdim)).numpy()) for s in range(0, n, 100_000)]
            pd.concat(parts, ignore_index=True)

    return best_rate(run, n)


def reference_training(model, features: int, n: int, epochs: int) -> float:
    """A bare AC-GAN step with MLPs of the model's sizes: what PyTorch alone costs per record."""
    torch.manual_seed(0)
    zdim, h, dh, k = model.noise_dim, model.hidden, model.disc_hidden_, model.n_classes_
    G = torch.nn.Sequential(torch.nn.Linear(zdim, h), torch.nn.BatchNorm1d(h), torch.nn.ReLU(), torch.nn.Linear(h, h),
                            torch.nn.BatchNorm1d(h), torch.nn.ReLU(), torch.nn.Linear(h, features))
    D = torch.nn.Sequential(torch.nn.Linear(features, dh), torch.nn.LeakyReLU(0.2), torch.nn.Linear(dh, dh),
                            torch.nn.LeakyReLU(0.2), torch.nn.Linear(dh, 1 + k))
    og, od = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)), torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    X = torch.randn(n, features)
    y = torch.randint(0, k, (n,))
    bce, ce, b = torch.nn.functional.binary_cross_entropy_with_logits, torch.nn.functional.cross_entropy, model.batch_size_

    def loss(out, real, labels):
        return bce(out[:, 0], torch.full_like(out[:, 0], float(real))) + ce(out[:, 1:], labels)

    def run() -> None:
        for _ in range(epochs):
            for s in range(0, n - b + 1, b):
                fake_y = torch.randint(0, k, (b,))
                fake = G(torch.randn(b, zdim))
                od.zero_grad()
                (loss(D(X[s:s + b]), True, y[s:s + b]) + loss(D(fake.detach()), False, fake_y)).backward()
                od.step()
                og.zero_grad()
                loss(D(fake), True, fake_y).backward()
                og.step()

    return best_rate(run, n * epochs, rounds=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    df = simulate_trial()
    schema = clinsynth.Schema.infer(df, target="arm")
    model = clinsynth.create("acgan", epochs=args.epochs, progress=False)
    t = time.perf_counter()
    model.fit(df, schema)
    train_rate = args.epochs * len(df) / (time.perf_counter() - t)
    ref_train = reference_training(model, model.critic_idx_.size, len(df), args.epochs)

    n = args.rows
    model.sample(10_000, seed=0)  # warm-up
    sample_rate = best_rate(lambda: model.sample(n, seed=0), n)
    ref_sample = reference_sampling(n)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "synthetic.parquet"
        parquet_rate = best_rate(lambda: write_table(model.sample(n, seed=0), target), n)

    results = {
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "versions": library_versions(),
        "table": {"rows": len(df), "columns": df.shape[1], "encoded_width": model.encoder_.dim},
        "training_records_per_s": round(train_rate),
        "training_reference_records_per_s": round(ref_train),
        "training_ratio": round(train_rate / ref_train, 3),
        "sampling_rows_per_s_dataframe": round(sample_rate),
        "sampling_rows_per_s_parquet": round(parquet_rate),
        "sampling_reference_rows_per_s": round(ref_sample),
        "sampling_ratio": round(sample_rate / ref_sample, 3),
        "sampling_bar_rows_per_s": 500_000,
    }
    print(f"machine: {results['machine']}")
    print(f"versions: {results['versions']}")
    print(f"table: simulated trial, {len(df):,} rows × {df.shape[1]} columns (encoded width {model.encoder_.dim})")
    print(f"training   {train_rate:>12,.0f} real records/s   reference {ref_train:>12,.0f}   ratio {train_rate / ref_train:.2f}")
    print(f"sampling   {sample_rate:>12,.0f} rows/s → DataFrame   reference {ref_sample:>10,.0f}   ratio {sample_rate / ref_sample:.2f}"
          f"   bar 500,000: {'met' if sample_rate >= 500_000 else 'NOT met'}")
    print(f"sampling   {parquet_rate:>12,.0f} rows/s → Parquet")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
