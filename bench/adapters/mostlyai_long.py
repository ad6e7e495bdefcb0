"""mostlyai-engine's sequential mode on a long-format table (one row per visit), as its two-table
setup: a **subject table** (one row per patient: the per-patient columns) and a **linked visit
table** (the patient id, the visit time and the visit columns).

Facts this relies on (mostlyai-engine 2.7.3, ``_tabular/interface.py``, ``analysis.py`` and
``_tabular/training.py`` in the peer venv):

- ``TabularARGN(tgt_context_key=<id>, ctx_data=<subjects>, ctx_primary_key=<id>, …)`` trains a
  *sequential* model of the visit table conditioned on each visit sequence's subject row; one
  training sample is one subject with all of its visits, so its DP-SGD (Opacus, Poisson sampling
  over samples) clips and noises per subject: subject-level DP. Its value protection splits its
  ε between the subject and the visit columns (``analysis.py``).
- That model does not generate subjects: ``sample()`` without ``ctx_data`` conditions on a random
  draw of the *real* training subjects. So, as MOSTLY AI's platform does for a subject table and a
  linked table, the adapter fits two models: a flat ``TabularARGN`` of the subject table, and the
  sequential model of the visits given the subject; it samples ``n`` synthetic subjects (new ids
  ``M000001``…) from the first and their visits from the second (``sample(ctx_data=…)``), then
  joins them into one long table. A synthetic subject the visit model gives no visit has no row.
- **DP**: each patient is in both training sets (one subject row; one sequence), so the release
  costs the sum of the two models' (ε, δ) (basic composition over the same unit, the patient). The
  adapter gives the subject model ``subject_share`` (default 0.5) of ε and half of δ, the visit
  model the rest; each spends its own value-protection share as in ``adapters/mostlyai.py``. What
  that adapter says its DP does not cover (the 20 % validation rows choosing the checkpoint without
  noise, the column facts read without noise) holds for both models here.
- **Where its DP sequence lengths fail**: under DP the engine's value protection finds the range of
  sequence lengths by DP quantiles (``analysis._analyze_reduce_seq_len``) from its value-protection
  ε split over the columns and the lengths; when that share is too small the quantiles come back
  empty and it "protects all": every length becomes 1 and the visit table is modelled as *not
  sequential*, so every synthetic patient has one visit (seen here at ε = 1 and 4). The variant
  ``--param value_protection=false`` reads the lengths (and value ranges) unnoised, outside its ε.
- Encoding types from meta.json's kinds (the time column is a number, ``TABULAR_NUMERIC_AUTO``);
  the engine learns value ranges itself, as in the single-table adapter.
"""
from __future__ import annotations

import pandas as pd

from adapters import mostlyai as flat

SUBJECT_SHARE = 0.5  # of ε (and δ) for the subject model; the visit model gets the rest


def split_meta(meta: dict) -> tuple[dict, dict]:
    """meta.json's columns as two metas: the subject table's (``level: patient``) and the visit
    table's (the time and ``level: visit`` columns); neither lists the patient id."""
    patient = meta["patient"]
    subject = [c for c in meta["columns"] if c.get("level") == "patient"]
    visits = [c for c in meta["columns"] if c["name"] != patient and c.get("level") != "patient"]
    return {**meta, "columns": subject}, {**meta, "columns": visits}


def subject_table(train: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """One row per patient (its first row's per-patient columns), the id first, as the engine reads them."""
    patient = meta["patient"]
    subject_meta, _ = split_meta(meta)
    first = train.groupby(patient, sort=False).head(1).reset_index(drop=True)
    out = flat.prepare(first, subject_meta)
    out.insert(0, patient, first[patient].astype(str).to_numpy())
    return out


def visit_table(train: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The visits (patient id, time, visit columns), ordered by patient and time."""
    patient, time = meta["patient"], meta["time"]
    _, visit_meta = split_meta(meta)
    rows = train.sort_values([patient, time], kind="stable").reset_index(drop=True)
    out = flat.prepare(rows, visit_meta)
    out.insert(0, patient, rows[patient].astype(str).to_numpy())
    return out


def synthetic_ids(n: int) -> list[str]:
    return [f"M{i:06d}" for i in range(1, n + 1)]


def join(subjects: pd.DataFrame, visits: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The long table: each visit with its subject's per-patient columns, in meta.json's column order."""
    patient = meta["patient"]
    visits = visits.copy()
    visits[patient] = visits[patient].astype(str)
    subjects = subjects.copy()
    subjects[patient] = subjects[patient].astype(str)
    out = visits.merge(subjects, on=patient, how="inner", validate="many_to_one")
    return out[[c["name"] for c in meta["columns"]]].reset_index(drop=True)


def budgets(epsilon: float, delta: float, share: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(ε, δ) of the subject model and of the visit model; they add up to (``epsilon``, ``delta``)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"subject_share must be in (0, 1), got {share}")
    return (share * epsilon, delta / 2), ((1 - share) * epsilon, delta / 2)


class FittedLong:
    """The two fitted models and how to sample from them."""

    def __init__(self, subjects: flat.Fitted, visits: flat.Fitted, meta: dict):
        self.subjects, self.visits, self.meta = subjects, visits, meta


def _estimator(meta_part: dict, privacy, seed: int, kwargs: dict, **context):
    from mostlyai.engine import TabularARGN

    workspace = flat._workspace()
    est = TabularARGN(tgt_encoding_types=flat.encoding_types(meta_part), differential_privacy=privacy, device="cpu",
                      workspace_dir=str(workspace), random_state=int(seed), verbose=0, **context, **kwargs)
    return est, workspace


def _vp_spent(workspace) -> float | None:
    """Value-protection ε the engine spent (subject and visit columns of a sequential model)."""
    import json

    total, found = 0.0, False
    for part in ("tgt-stats", "ctx-stats"):
        try:
            spent = json.loads((workspace / "ModelStore" / part / "stats.json").read_text()).get(
                "value_protection_epsilon_spent")
        except (OSError, ValueError):
            continue
        if spent is not None:
            total, found = total + float(spent), True
    return total if found else None


def fit(train, meta, synthesizer, epsilon, delta, seed, params, *, dp: bool, share_vp: float,
        replacement: str, temperature: float, dp_extra: dict, kwargs: dict, subject_share: float):
    """Fit the subject model, then the visit model given the subjects (the parameters are the
    single-table adapter's, already checked there)."""
    from mostlyai.engine.domain import DifferentialPrivacyConfig

    patient, time = meta["patient"], meta["time"]
    subject_meta, visit_meta = split_meta(meta)
    subjects, visits = subject_table(train, meta), visit_table(train, meta)
    privacy = [None, None]
    if dp:
        if delta is None:
            raise ValueError("mostlyai: meta.json has no delta for a DP run")
        for i, (e, d) in enumerate(budgets(float(epsilon), float(delta), subject_share)):
            privacy[i] = DifferentialPrivacyConfig(**flat.dp_config(e, d, share_vp, dp_extra))
    subj_est, subj_ws = _estimator(subject_meta, privacy[0], seed, kwargs)
    subj_est.fit(subjects.drop(columns=[patient]))
    flat._one_thread()
    visit_est, visit_ws = _estimator(visit_meta, privacy[1], seed, kwargs, tgt_context_key=patient,
                                     ctx_data=subjects, ctx_primary_key=patient,
                                     ctx_encoding_types=flat.encoding_types(subject_meta))
    visit_est.fit(visits)
    flat._one_thread()

    effective = {k: v for k, v in visit_est.get_params().items()
                 if k not in ("ctx_data", "workspace_dir", "differential_privacy", "device", "verbose",
                              "tgt_encoding_types", "ctx_encoding_types")}
    effective.update(mode="two tables: subject model + sequential visit model", sequence_key=patient,
                     time_column=time, subject_columns=[c["name"] for c in subject_meta["columns"]],
                     rare_category_replacement_method=replacement, sampling_temperature=temperature,
                     device="cpu", torch_threads=1, model=flat._model_id(visit_ws) or effective.get("model"))
    notes = ["mostlyai: two models, as for a subject table and a linked table: a flat TabularARGN of the "
             "per-patient columns, and a sequential TabularARGN of the visits given the patient's row "
             "(one training sample = one patient with all visits)",
             "mostlyai: no public bounds or category lists (its API takes none): " + (
                 "value protection off: value ranges, categories and sequence lengths read from the data as they are"
                 + (", NOT covered by eps" if dp else "") if kwargs.get("value_protection") is False else
                 "value ranges, categories and sequence lengths learnt from the data by its value protection"
                 + (" under DP" if dp else "")),
             "mostlyai: each model trains on 80% of the training patients, the other 20% is its validation set"]
    reported = []
    for name, ws, config in (("subject", subj_ws, privacy[0]), ("visits", visit_ws, privacy[1])):
        progress = flat._progress(ws)
        if progress is not None and "epoch" in progress:
            effective[f"{name}_epochs_trained"] = float(pd.to_numeric(progress["epoch"], errors="coerce").max())
        if config is not None:
            report = flat.privacy_report(progress, float(config.max_epsilon))
            effective[f"{name}_differential_privacy"] = config.model_dump()
            effective[f"{name}_value_protection_epsilon_spent"] = _vp_spent(ws)
            effective.update({f"{name}_{k}": v for k, v in report.items()})
            reported.append(report.get("epsilon_reported"))
    if dp:
        effective.update(epsilon=float(epsilon), delta=float(delta), subject_share=subject_share,
                         value_protection_share=share_vp)
        if all(r is not None for r in reported):
            total = float(sum(reported))
            effective["epsilon_reported"] = total
            notes.append(f"mostlyai: eps reported for the kept checkpoints: subject {reported[0]:.4g} + visits "
                         f"{reported[1]:.4g} = {total:.4g} of the budget {float(epsilon):g} (patient-level, by "
                         "composition over the two models)")
            if total > float(epsilon) * (1 + 1e-6):
                notes.append(f"mostlyai: the kept models' eps {total:.4g} is ABOVE the budget {float(epsilon):g}")
        else:
            notes.append("mostlyai: no eps in the progress messages of one of the two models")
    effective["_notes"] = notes
    subj = flat.Fitted(subj_est, subj_ws, replacement, temperature)
    vis = flat.Fitted(visit_est, visit_ws, replacement, temperature)
    return FittedLong(subj, vis, meta), effective


def sample(model: FittedLong, n: int, seed: int) -> pd.DataFrame:
    """``n`` synthetic subjects, then their visits, joined into one long table."""
    import numpy as np
    import torch

    patient = model.meta["patient"]
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    subjects = model.subjects.estimator.sample(n_samples=int(n), rare_category_replacement_method=model.subjects.replacement,
                                               sampling_temperature=model.subjects.temperature, device="cpu")
    subjects = subjects.reset_index(drop=True)
    subjects.insert(0, patient, synthetic_ids(len(subjects)))
    visits = model.visits.estimator.sample(ctx_data=subjects, rare_category_replacement_method=model.visits.replacement,
                                           sampling_temperature=model.visits.temperature, device="cpu")
    if patient not in visits.columns:
        raise ValueError(f"mostlyai: the sampled visits lack the context key {patient!r}")
    return join(subjects, visits, model.meta)
