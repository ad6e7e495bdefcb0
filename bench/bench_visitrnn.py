"""visitrnn / dp-visitrnn on the long-format trial of tests/long_visits.py: fit time and simple
patient-level quality (issue 21). Run: ``python bench/bench_visitrnn.py [patients] [seed]``.

Quality, synthetic against the real training table (the patient-level evaluation proper is
``clinsynth.evaluate``'s job):
* visits-per-patient KS distance;
* within-patient correlation of eGFR between the first and the last visit (patients with both observed);
* share of synthetic patients whose times strictly increase;
* death rate, and mean visits for those who die and those who do not.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import ks_2samp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from long_visits import long_trial  # noqa: E402

from clinsynth.models.registry import create  # noqa: E402
from clinsynth.schema import Schema  # noqa: E402


def summary(df: pd.DataFrame) -> dict[str, float]:
    per = df.groupby("pid", sort=False)
    counts = per.size()
    first, last = per["egfr"].first(), per["egfr"].last()  # first / last *observed*
    firstrow, lastrow = per["egfr"].nth(0), per["egfr"].nth(-1)
    both = (counts > 1).to_numpy() & firstrow.notna().to_numpy() & lastrow.notna().to_numpy()
    r = float(np.corrcoef(firstrow.to_numpy()[both], lastrow.to_numpy()[both])[0, 1]) if both.sum() > 2 else float("nan")
    death = per["death"].first()
    return {"patients": int(len(counts)), "rows": int(len(df)), "mean_visits": float(counts.mean()),
            "egfr_first_last_r": r, "death_rate": float(death.mean()),
            "visits_if_death": float(counts[death == 1].mean()), "visits_if_alive": float(counts[death == 0].mean()),
            "increasing": float(per["day"].apply(lambda d: bool((np.diff(d.to_numpy()) > 0).all())).mean()),
            "_counts": counts.to_numpy(), "_first_egfr_mean": float(first.mean()), "_last_egfr_mean": float(last.mean())}


def main(patients: int = 5000, seed: int = 0, which: str = "both") -> None:
    torch.set_num_threads(1)
    real = long_trial(patients, 20, seed=seed)
    schema = Schema.infer(real, target="death", patient="pid", time="day")
    ref = summary(real)
    out = {"real": {k: v for k, v in ref.items() if not k.startswith("_counts")}}
    runs = (("visitrnn", {}), ("dp-visitrnn", {"epsilon": 1.0}))
    for name, params in (r for r in runs if which in ("both", r[0])):
        model = create(name, seed=seed, progress=True, **params)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(real, schema)
        fit = time.perf_counter() - started
        started = time.perf_counter()
        syn = model.sample(patients, seed=seed + 1)
        draw = time.perf_counter() - started
        s = summary(syn)
        row = {"fit_seconds": round(fit, 1), "sample_seconds": round(draw, 2),
               "visits_ks": float(ks_2samp(ref["_counts"], s["_counts"]).statistic),
               **{k: v for k, v in s.items() if not k.startswith("_counts")}}
        if model.name.startswith("dp-"):
            row |= {"epsilon_spent": model.ledger_.spent(), "noise_multiplier": model.noise_multiplier_,
                    "sample_rate": model.sample_rate_}
        out[name] = row
        print(name, json.dumps(row, default=float), flush=True)
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(int(a) for a in args[:2]), *args[2:3])
