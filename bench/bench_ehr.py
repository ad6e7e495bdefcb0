"""The EHR code models at scale and at their job, in one run.

``memory``: one training epoch of every phase of each model — medgan, corgan, vae, each without
and with DP (ε = 1) — over 100,000 SIMULATED patients × 5,000 codes, each in a fresh child
process, printing the fit time and the child's peak memory (issue 5's bar: medGAN under 4 GB);
``--models codetree``: the code tree's whole fit (it has no epochs).

``quality``: each model fitted with its defaults on ``simulate_ehr(20000, 1000, seed=0)``, then
20,000 patients sampled; the dimension-wise probability correlation (prevalence of every code,
synthetic vs training — the medGAN headline; bar ≥ 0.95 for medGAN and corGAN, ≥ 0.9 for the
VAE), codes per patient, fit seconds; the DP versions at ε = 1 and 4, with the vocabulary chosen
by the DP mechanism (codes it dropped count as prevalence 0) and, separately, declared public.

``small``: issue 22's collapse check — every code model with its defaults on 300 SIMULATED
patients × 170 codes (``simulate_ehr(375, 170, seed)``, 20 % held out), DP ones at ε = 1 with the
vocabulary declared public (a DP vocabulary keeps no code at this size): the dimension-wise
probability correlation (bar ≥ 0.9) and codes per patient, per seed.

``structure``: how codes go together, on the EHR demo's data — ``simulate_ehr(10000, 1000, seed)``
with age and sex, 20 % held out, vocabulary public — each model with its defaults (DP: ε = 1):
dimension-wise probability, dimension-wise prediction (F1 of the 50 commonest codes, synthetic over
real; bar ≥ 0.8) and co-occurrence (``excess_relative_rms`` of the 200 commonest codes' pair rates;
bar ≤ 0.25), per seed and their mean.

    python bench/bench_ehr.py memory  [--patients 100000 --codes 5000] [--json bench/results/ehr_memory.json]
    python bench/bench_ehr.py quality [--json bench/results/ehr_quality.json]
    python bench/bench_ehr.py small     [--seeds 0 1 2] [--json bench/results/ehr_small.json]
    python bench/bench_ehr.py structure [--seeds 0 1 2] [--json bench/results/ehr_structure.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ONE_EPOCH = {"medgan": dict(pretrain_epochs=1, epochs=1), "corgan": dict(pretrain_epochs=1, epochs=1),
             "vae": dict(epochs=1)}


def _peak_rss_gb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _fit_once(name: str, params: dict, patients: int, codes: int, out) -> None:
    """In a child process: simulate, fit, report seconds and peak memory (data included)."""
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.models.registry import create

    data, _ = simulate_ehr(patients, codes, seed=0)
    after_data = _peak_rss_gb()
    start = time.perf_counter()
    model = create(name, progress=False, **params).fit(data)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.sample(10_000, seed=0)
    sample_seconds = time.perf_counter() - start
    out.put({"model": name, "fit_seconds": round(seconds, 1), "sample_10k_seconds": round(sample_seconds, 2),
             "peak_rss_gb": round(_peak_rss_gb(), 2), "peak_rss_gb_after_data": round(after_data, 2),
             "epsilon": round(model.ledger_.spent(), 3) if hasattr(model, "ledger_") else None})


def memory(args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    rows = []
    for base in args.models:
        params = ONE_EPOCH.get(base, {})  # the code tree has no epochs: a whole fit
        for private in (False, True):
            name = f"dp-{base}" if private else base
            queue = ctx.Queue()
            child = ctx.Process(target=_fit_once, args=(name, {**params, **({"epsilon": 1.0} if private else {})},
                                                        args.patients, args.codes, queue))
            child.start()
            row = queue.get()
            child.join()
            rows.append(row)
            print(f"{name:10s} fit {row['fit_seconds']:7.1f} s  sample 10k {row['sample_10k_seconds']:5.2f} s  "
                  f"peak {row['peak_rss_gb']:.2f} GB (data alone {row['peak_rss_gb_after_data']:.2f})", flush=True)
    return {"patients": args.patients, "codes": args.codes, "epochs": "1 per phase", "runs": rows,
            "bar": {"medgan_peak_rss_gb": 4}}


def _dwp(real, synth) -> float:
    """Correlation of prevalences over the real vocabulary (codes the model lacks count as 0)."""
    index = {c: j for j, c in enumerate(synth.vocabulary)}
    p_syn = synth.prevalence()
    full = np.array([p_syn[index[c]] if c in index else 0.0 for c in real.vocabulary])
    return float(np.corrcoef(real.prevalence(), full)[0, 1])


def quality(args: argparse.Namespace) -> dict:
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.models.registry import create
    from clinsynth.schema import CodeBlock, Schema

    data, _ = simulate_ehr(20_000, 1_000, seed=0)
    public = Schema(columns=[], codes=CodeBlock(vocabulary=list(data.vocabulary), public=True))
    runs = []
    for base in args.models:
        configs = [(base, {}, None)]
        for eps in (1.0, 4.0):
            configs += [(f"dp-{base}", {"epsilon": eps}, None), (f"dp-{base}", {"epsilon": eps}, public)]
        for name, params, schema in configs:
            start = time.perf_counter()
            model = create(name, progress=False, **params).fit(data, schema)
            seconds = time.perf_counter() - start
            synth = model.sample(20_000, seed=1)
            row = {"model": name, "epsilon": params.get("epsilon"),
                   "vocabulary": "public" if schema is not None else ("dp" if params else "data"),
                   "codes_kept": synth.n_codes, "dwp_correlation": round(_dwp(data, synth), 4),
                   "codes_per_patient": round(float(synth.codes_per_patient().mean()), 2),
                   "fit_seconds": round(seconds, 1)}
            if hasattr(model, "ledger_"):
                row["epsilon_spent"] = round(model.ledger_.spent(), 3)
            runs.append(row)
            print(json.dumps(row), flush=True)
    return {"data": "simulate_ehr(20000, 1000, seed=0)", "real_codes_per_patient":
            round(float(data.codes_per_patient().mean()), 2), "runs": runs,
            "bar": {"medgan": 0.95, "corgan": 0.95, "vae": 0.9}}


CODE_MODELS = ["medgan", "corgan", "vae", "codetree"]


def _fit_sample(name: str, train, seed: int, public: bool = False):
    """Fit ``name`` with its defaults (DP: ε = 1) and sample as many patients as it trained on."""
    import warnings

    from clinsynth.models.registry import create
    from clinsynth.models.records import infer_record_schema

    schema = None
    if public:
        schema = infer_record_schema(train, train.static)
        schema = schema.model_copy(update={"codes": schema.codes.model_copy(update={"public": True})})
    params = {"epsilon": 1.0} if name.startswith("dp-") else {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create(name, progress=False, seed=seed, **params).fit(train, schema)
    seconds = time.perf_counter() - start
    synth = model.sample(train.n_patients, seed=seed + 1)
    row = {"model": name, "seed": seed, "fit_seconds": round(seconds, 1),
           "warned": any(" are few for a" in str(w.message) for w in caught)}
    if hasattr(model, "ledger_"):
        row["epsilon_spent"] = round(model.ledger_.spent(), 3)
    return synth, row


def _names(args: argparse.Namespace) -> list[str]:
    return [m for base in args.models for m in (base, f"dp-{base}")]


def _summary(runs: list[dict], keys: list[str]) -> dict:
    out = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        rows = [r for r in runs if r["model"] == name]
        out[name] = {k: {"mean": round(float(np.mean([r[k] for r in rows])), 4),
                         "min": round(float(np.min([r[k] for r in rows])), 4),
                         "max": round(float(np.max([r[k] for r in rows])), 4)} for k in keys}
    return out


def small(args: argparse.Namespace) -> dict:
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.pipeline import split_patients

    runs = []
    for seed in args.seeds:
        codes, _ = simulate_ehr(375, 170, seed=seed)
        train, test = split_patients(codes, 0.2, seed=seed)
        for name in _names(args):
            synth, row = _fit_sample(name, train, seed, public=name.startswith("dp-"))
            row.update(dwp_correlation=round(float(np.corrcoef(train.prevalence(), synth.prevalence())[0, 1]), 4),
                       holdout_correlation=round(float(np.corrcoef(train.prevalence(), test.prevalence())[0, 1]), 4),
                       codes_per_patient=round(float(synth.codes_per_patient().mean()), 2),
                       real_codes_per_patient=round(float(train.codes_per_patient().mean()), 2))
            runs.append(row)
            print(json.dumps(row), flush=True)
    return {"data": "simulate_ehr(375, 170, seed): 300 training patients", "runs": runs,
            "summary": _summary(runs, ["dwp_correlation"]), "bar": {"dwp_correlation": 0.9}}


def structure(args: argparse.Namespace) -> dict:
    from clinsynth.data.ehr import CodeMatrix, attach_static
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.evaluate.codes import co_occurrence, dimension_wise_prediction, dimension_wise_probability
    from clinsynth.pipeline import split_patients

    def codes_only(m):
        return CodeMatrix(m.matrix, m.vocabulary, m.patient_ids, m.binary)

    runs = []
    for seed in args.seeds:
        codes, people = simulate_ehr(10_000, 1_000, seed=seed)
        train, test = split_patients(attach_static(codes, people), 0.2, seed=seed)
        real, held = codes_only(train), codes_only(test)
        for name in _names(args):
            synth, row = _fit_sample(name, train, seed, public=True)
            fake = codes_only(synth)
            pred = dimension_wise_prediction(real, held, fake, top_k=50, seed=0)
            co = co_occurrence(real, fake, top_codes=200, holdout=held)
            row.update(dwp_correlation=round(dimension_wise_probability(real, fake)["correlation"], 4),
                       f1_ratio=round(pred["f1_ratio"], 4), f1_real=round(pred["mean_f1_real"], 4),
                       f1_synthetic=round(pred["mean_f1_synthetic"], 4),
                       co_occurrence_excess=round(co["excess_relative_rms"], 4),
                       holdout_co_occurrence_excess=round(co["holdout_excess_relative_rms"], 4),
                       codes_per_patient=round(float(synth.codes_per_patient().mean()), 2))
            runs.append(row)
            print(json.dumps(row), flush=True)
    return {"data": "simulate_ehr(10000, 1000, seed) + age, sex; 8,000 training patients, vocabulary public",
            "runs": runs, "summary": _summary(runs, ["dwp_correlation", "f1_ratio", "co_occurrence_excess", "fit_seconds"]),
            "bar": {"f1_ratio": 0.8, "co_occurrence_excess": 0.25}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["memory", "quality", "small", "structure"])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--codes", type=int, default=5_000)
    parser.add_argument("--models", nargs="+", default=None, help="base names (default: medgan corgan vae, "
                        "and codetree for small/structure)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.models is None:
        args.models = CODE_MODELS if args.mode in ("small", "structure") else ["medgan", "corgan", "vae"]
    from clinsynth.models.base import library_versions

    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "versions": library_versions(),
               **{"memory": memory, "quality": quality, "small": small, "structure": structure}[args.mode](args)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
