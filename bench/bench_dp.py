"""DP-SGD's cost: training throughput of the DP AC-GAN next to the same AC-GAN without DP.

Both models have the same networks, batch size and epochs and train on the simulated trial in the
same process; the figure is real records per second of the training loop (preprocessing and noise
calibration excluded, they run once). The issue's bar: DP ≥ 0.5 × non-DP.

    python bench/bench_dp.py [--epochs 10] [--json bench/results/dp.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import warnings
from pathlib import Path

import torch

import clinsynth
from clinsynth.data.datasets import simulate_trial
from clinsynth.models.base import library_versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the two models this many times; best of each")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    df = simulate_trial()
    schema = clinsynth.Schema.infer(df, target="arm")
    dp_defaults = clinsynth.create("dp-acgan").get_params()
    shared = {k: dp_defaults[k] for k in ("batch_size", "noise_dim", "hidden", "disc_hidden", "conv_channels", "lr_g", "lr_d", "weight_average")}
    shared.update(epochs=args.epochs, progress=False, snapshots="off", select="last")
    rates: dict[str, float] = {"acgan": 0.0, "dp-acgan": 0.0}
    for _ in range(args.rounds):
        for name, extra in (("acgan", {}), ("dp-acgan", {"epsilon": 1.0, "accountant": "rdp"})):
            model = clinsynth.create(name, **shared, **extra).fit(df, schema)
            rates[name] = max(rates[name], args.epochs * len(df) / model.train_seconds_)
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": library_versions(),
        "settings": shared,
        "records_per_second": {k: round(v) for k, v in rates.items()},
        "dp_over_non_dp": round(rates["dp-acgan"] / rates["acgan"], 3),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
