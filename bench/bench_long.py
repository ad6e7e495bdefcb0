"""The patients family (issue 21) on the long-format simulated trial: quality and scale.

``quality``: for each seed, ``simulate_long_trial(patients, seed)`` (SIMULATED data), 20 % of the
patients held out whole (:func:`clinsynth.pipeline.split_patients_holdout`, stratified by
``event``, as ``clinsynth run visits.csv --patient-col patient_id --time-col day --target event``
does), each model fitted on the rest with ``seed`` and as many synthetic patients sampled
(``seed + 1``). A name starting with ``dp-`` runs once per ``--epsilons`` value, the others once.
Scored by the patient-level evaluation (:func:`clinsynth.evaluate.patients.evaluate_patients`, the
section ``cs.evaluate`` adds on a long schema, with the same patient features and the report's
three classifiers; no bootstrap): TSTR/TRTR (AUROC ratio, mean of the three classifiers),
visits-per-patient KS, gaps KS (each with the KS of the real holdout for scale), the share of
synthetic patients whose times rise strictly, the share with a row after their last one (an
observation after leaving), the within-patient first/last and lag-1 correlation (real, synthetic,
mean absolute gap over the labs), the labs' mean KS per visit index, the patient-level attacks
(distance-to-closest share, membership AUROC; 2,000 queries), the ledger's total ε against the
budget and its privacy unit, what the model chose (``bins``, ``memory``) and fit / sample seconds.
Bars (issue 21): TSTR/TRTR ≥ 0.9 without DP, ≥ 0.8 at ε = 1; visits KS ≤ 0.1; 100 % increasing
times; no synthetic patient observed after their last visit.

``scale``: each model in a fresh child process (spawn): simulate 50,000 patients (up to 20 visits,
about 575,000 rows), fit, sample 50,000 patients; seconds and peak resident memory
(``resource.getrusage`` maxrss of the child, data included; the same figure right after the data is
made). The child first times ``simulate_long_trial`` itself: fit and sample times are also given as
ratios to that generation time, measured in the same process a moment before, which moves less
with the machine's load than the seconds do. The load average is recorded with each run.

``calibration``: the DP models' noise calibration with and without the closed form of an all-Gaussian
ledger (:func:`clinsynth.privacy.ledger.known_within`), in the same process, alternating: each seed's
dp- model fitted once asking the accountant at every step (and nothing remembered, as before) and
once as shipped; fit seconds, fit + the ledger's total (``spent()``, what a release prints), the
accountant calls, and a check that the two ledgers are the same charge for charge.

Any registered model of the patients family can be named, e.g. once merged::

    python bench/bench_long.py quality [--models visitchain dp-visitchain] [--seeds 0 1 2]
        [--epsilons 1 4] [--patients 5000] [--params '{"dp-visitchain": {"theta": 2}}']
        [--json bench/results/long_quality.json]
    python bench/bench_long.py scale [--models visitchain dp-visitchain] [--patients 50000]
        [--json bench/results/long_scale.json]
    python bench/bench_long.py calibration [--models dp-visitchain] [--seeds 0 1 2] [--epsilons 1]
        [--json bench/results/long_calibration.json]

Run it niced with one thread (``OMP_NUM_THREADS=1``; the script holds native pools at one thread).
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
import warnings
from pathlib import Path

import numpy as np

PATIENT, TIME, TARGET = "patient_id", "day", "event"
ATTACK_QUERIES = 2_000
BARS = {"tstr_trtr_non_dp": 0.9, "tstr_trtr_epsilon_1": 0.8, "visits_ks": 0.1, "strictly_increasing": 1.0}


def _peak_rss_gb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _one_thread() -> None:
    from threadpoolctl import threadpool_limits

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    threadpool_limits(limits=1)


def _configs(models: list[str], epsilons: list[float], params: dict) -> list[tuple[str, dict]]:
    """(registry name, parameters) of each run: a dp- model once per ε."""
    out = []
    for name in models:
        extra = dict(params.get(name, {}))
        if name.startswith("dp-"):
            out += [(name, {**extra, "epsilon": float(eps)}) for eps in epsilons]
        else:
            out.append((name, extra))
    return out


def _fit(name: str, params: dict, train, schema, seed: int):
    from clinsynth.models.registry import create

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model = create(name, progress=False, seed=seed, **params).fit(train, schema)
        return model, time.perf_counter() - start


def _shape(model) -> dict:
    """What the model chose from n and ε (visitchain: value bins, DP memory), where it says."""
    return {k: getattr(model, f"{k}_") for k in ("bins", "memory") if hasattr(model, f"{k}_")}


def _ledger(model, epsilon: float | None) -> dict:
    ledger = getattr(model, "ledger_", None)
    if ledger is None:
        return {"epsilon_spent": None, "within_budget": None, "privacy_unit": None}
    spent = float(ledger.spent())
    return {"epsilon_spent": round(spent, 4), "delta": ledger.delta,
            "within_budget": bool(epsilon is not None and spent <= epsilon + 1e-9),
            "privacy_unit": getattr(model, "privacy_unit_", None)}


def score(train, test, synth, schema, seed: int, attacks: bool = True) -> dict:
    """The patient-level numbers of one synthetic table (see the module docstring)."""
    from clinsynth.evaluate.patients import LongLayout, evaluate_patients

    m = evaluate_patients(train, test, synth, LongLayout.from_schema(schema), seed, utility=True, privacy=attacks,
                          n_bootstrap=0, importance=False, table_schema=schema, max_queries=ATTACK_QUERIES)
    ratios = (m["utility"] or {}).get("tstr_over_trtr_auroc", {})
    corr = m["correlations"]
    order = m["ordering"]["synthetic"]
    privacy = {}
    if attacks:
        a = m["privacy_attacks"]
        privacy = {"dcr_share_closer_to_train": round(a["distance_to_closest"]["share_closer_to_train"], 4),
                   "mia_auroc": round(a["membership_inference"]["auroc"], 4),
                   "exact_copy_rate": a["exact_copies"]["synthetic_rate"]}
    return {
        "tstr_trtr": round(float(np.mean(list(ratios.values()))), 4) if ratios else None,
        "tstr_trtr_by_classifier": {k: round(v, 4) for k, v in ratios.items()},
        "visits_ks": round(m["visits_per_patient"]["ks"], 4),
        "visits_ks_holdout": round(m["visits_per_patient"]["ks_holdout"], 4),
        "visits_mean": {"real": round(m["visits_per_patient"]["real"]["mean"], 2),
                        "synthetic": round(m["visits_per_patient"]["synthetic"]["mean"], 2)},
        "gaps_ks": round(m["gaps"]["ks"], 4),
        "gaps_ks_holdout": round(m["gaps"]["ks_holdout"], 4),
        "strictly_increasing": order["strictly_increasing"],
        "after_last_visit": order["after_last_visit"],
        "empty_last_visit": {"real": round(m["ordering"]["real"]["empty_last_visit"], 4),
                             "synthetic": round(order["empty_last_visit"], 4)},
        "first_last_gap": round(corr["mean_abs_difference_first_last"], 4),
        "lag1_gap": round(corr["mean_abs_difference_lag1"], 4),
        "lab_ks": round(m["visit_index"]["mean_ks"], 4),
        "first_last": {r["lab"]: {"real": round(r["first_last"]["real"], 3),
                                  "synthetic": round(r["first_last"]["synthetic"], 3)} for r in corr["labs"]},
        **privacy,
    }


def quality(args: argparse.Namespace) -> dict:
    from clinsynth.data.long_trial import simulate_long_trial
    from clinsynth.pipeline import split_patients_holdout
    from clinsynth.schema import Schema

    runs = []
    for seed in args.seeds:
        df = simulate_long_trial(args.patients, seed=seed)
        schema = Schema.infer(df, target=TARGET, patient=PATIENT, time=TIME)
        train, test = split_patients_holdout(df, PATIENT, TARGET, 0.2, seed=seed)
        n_train = int(train[PATIENT].nunique())
        for name, params in _configs(args.models, args.epsilons, args.params):
            model, fit_seconds = _fit(name, params, train, schema, seed)
            start = time.perf_counter()
            synth = model.sample(n_train, seed=seed + 1)
            sample_seconds = time.perf_counter() - start
            row = {"model": name, "epsilon": params.get("epsilon"), "seed": seed,
                   "params": {k: v for k, v in params.items() if k != "epsilon"}, **_shape(model),
                   **score(train, test, synth, model.schema_, seed), **_ledger(model, params.get("epsilon")),
                   "fit_seconds": round(fit_seconds, 2), "sample_seconds": round(sample_seconds, 2), "load": _load()}
            runs.append(row)
            print(json.dumps(row), flush=True)
    return {"data": f"simulate_long_trial({args.patients}, seed) for seed in {args.seeds}; 20 % of patients held out "
                    "(stratified by event), as many synthetic patients as training ones",
            "runs": runs, "summary": summarise(runs), "bars": BARS}


SUMMARY_KEYS = ["tstr_trtr", "visits_ks", "gaps_ks", "strictly_increasing", "after_last_visit", "first_last_gap",
                "epsilon_spent", "fit_seconds"]


def summarise(runs: list[dict]) -> list[dict]:
    """Mean (and min, max) over seeds of each (model, ε, params) setting."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(json.dumps([r["model"], r["epsilon"], r["params"]]), []).append(r)
    out = []
    for key, rows in groups.items():
        name, eps, params = json.loads(key)
        entry = {"model": name, "epsilon": eps, "params": params, "seeds": [r["seed"] for r in rows]}
        for k in SUMMARY_KEYS:
            values = [r[k] for r in rows if r.get(k) is not None]
            if values:
                entry[k] = {"mean": round(float(np.mean(values)), 4), "min": round(float(np.min(values)), 4),
                            "max": round(float(np.max(values)), 4)}
        entry["all_within_budget"] = all(r["within_budget"] is not False for r in rows)
        out.append(entry)
    return out


# -- scale -----------------------------------------------------------------------------------------
def _scale_once(name: str, params: dict, patients: int, seed: int, out) -> None:
    """In a child process: time the simulator (the baseline), fit, sample; peak memory."""
    _one_thread()
    from clinsynth.data.long_trial import simulate_long_trial
    from clinsynth.schema import Schema

    start = time.perf_counter()
    df = simulate_long_trial(patients, seed=seed)
    generate = time.perf_counter() - start
    schema = Schema.infer(df, target=TARGET, patient=PATIENT, time=TIME)
    after_data = _peak_rss_gb()
    load_before = _load()
    model, fit_seconds = _fit(name, params, df, schema, seed)
    after_fit = _peak_rss_gb()
    start = time.perf_counter()
    synth = model.sample(patients, seed=seed + 1)
    sample_seconds = time.perf_counter() - start
    out.put({"model": name, "epsilon": params.get("epsilon"), "patients": patients, "rows": len(df),
             "max_visits": int(df.groupby(PATIENT).size().max()),
             "generate_seconds": round(generate, 2), "fit_seconds": round(fit_seconds, 2),
             "sample_seconds": round(sample_seconds, 2), "synthetic_rows": len(synth),
             "fit_over_generate": round(fit_seconds / generate, 2),
             "sample_over_generate": round(sample_seconds / generate, 2),
             "peak_rss_gb": round(_peak_rss_gb(), 3), "peak_rss_gb_after_data": round(after_data, 3),
             "peak_rss_gb_after_fit": round(after_fit, 3), **_shape(model), **_ledger(model, params.get("epsilon")),
             "load": [load_before, _load()]})


def scale(args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    rows = []
    for name, params in _configs(args.models, args.epsilons[:1], args.params):
        queue = ctx.Queue()
        child = ctx.Process(target=_scale_once, args=(name, params, args.patients, 0, queue))
        child.start()
        row = queue.get()
        child.join()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"data": f"simulate_long_trial({args.patients}, seed=0), fitted whole; {args.patients} patients sampled",
            "runs": rows}


# -- calibration ---------------------------------------------------------------------------------
def calibration(args: argparse.Namespace) -> dict:
    import clinsynth.privacy.ledger as ledger_module
    from clinsynth.data.long_trial import simulate_long_trial
    from clinsynth.pipeline import split_patients_holdout
    from clinsynth.schema import Schema

    remembered, known = ledger_module._accountant_epsilon, ledger_module.known_within
    calls = {"n": 0}
    original = ledger_module.epsilon_of

    def counted(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    ledger_module.epsilon_of = counted
    # warm-up: Opacus' accountants import once per process; neither way should pay for it
    original([ledger_module.Charge("gaussian", "warm-up", 5.0, 1.0, 1)], 1e-5, "prv", 1e-2)
    original([ledger_module.Charge("gaussian", "warm-up", 5.0, 1.0, 1)], 1e-5, "rdp")
    runs = []
    try:
        for seed in args.seeds:
            df = simulate_long_trial(args.patients, seed=seed)
            schema = Schema.infer(df, target=TARGET, patient=PATIENT, time=TIME)
            train, _ = split_patients_holdout(df, PATIENT, TARGET, 0.2, seed=seed)
            for name, params in _configs([m for m in args.models if m.startswith("dp-")], args.epsilons, args.params):
                ledgers = {}
                for way in ("accountant every step", "closed form"):
                    before = way == "accountant every step"
                    ledger_module._accountant_epsilon = remembered.__wrapped__ if before else remembered
                    ledger_module.known_within = (lambda *a, **k: None) if before else known
                    remembered.cache_clear()
                    calls["n"] = 0
                    model, fit_seconds = _fit(name, params, train, schema, seed)
                    fit_calls = calls["n"]
                    start = time.perf_counter()
                    spent = model.ledger_.spent()
                    total = fit_seconds + time.perf_counter() - start
                    ledgers[way] = model.ledger_.state_dict()
                    row = {"model": name, "epsilon": params.get("epsilon"), "seed": seed, "calibration": way,
                           "fit_seconds": round(fit_seconds, 2), "fit_and_total_seconds": round(total, 2),
                           "accountant_calls_in_fit": fit_calls, "epsilon_spent": spent, "load": _load()}
                    runs.append(row)
                    print(json.dumps(row), flush=True)
                same = ledgers["accountant every step"] == ledgers["closed form"]
                runs[-1]["same_ledger_as_before"] = runs[-2]["same_ledger_as_before"] = same
    finally:
        ledger_module.epsilon_of, ledger_module._accountant_epsilon = original, remembered
        ledger_module.known_within = known
    summary = {}
    for way in ("accountant every step", "closed form"):
        rows = [r for r in runs if r["calibration"] == way]
        summary[way] = {k: round(float(np.mean([r[k] for r in rows])), 2)
                        for k in ("fit_seconds", "fit_and_total_seconds", "accountant_calls_in_fit")}
    return {"data": f"simulate_long_trial({args.patients}, seed) for seed in {args.seeds}; 20 % of patients held out",
            "runs": runs, "summary": summary,
            "all_ledgers_same": all(r.get("same_ledger_as_before") for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["quality", "scale", "calibration"])
    parser.add_argument("--models", nargs="+", default=["visitchain", "dp-visitchain"],
                        help="registry names of patients-family models; dp-* run at each --epsilons value")
    parser.add_argument("--patients", type=int, default=None, help="default: 5,000 (quality), 50,000 (scale)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 4.0],
                        help="budgets of the dp- models (scale: the first only)")
    parser.add_argument("--params", type=json.loads, default={},
                        help='JSON {model name: {parameter: value}} passed to the models')
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.patients is None:
        args.patients = 50_000 if args.mode == "scale" else 5_000
    _one_thread()
    from clinsynth.models.base import library_versions

    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "versions": library_versions(),
               "mode": args.mode, "models": args.models,
               **{"quality": quality, "scale": scale, "calibration": calibration}[args.mode](args)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
