"""Epoch selection and ensembles, the SPRINT method: keep the generators whose synthetic records
train classifiers that work on real ones.

Every candidate epoch's generator samples a synthetic table; logistic regression and a random
forest trained on it predict the target of real records. Without DP a candidate's score is the
mean AUROC of the two (as in the SPRINT work) and the top k are kept.

With DP, scoring on real records is a release about them, so it is a mechanism charged to the
ledger. AUROC has no fixed sensitivity (one record moves it by about 1/(size of its class)), so
the private score is a sum with one bounded term per real record: the probability-quality
``1 − Brier/2`` ∈ [0, 1] of the two classifiers' predictions, averaged. Adding or removing a
record moves each candidate's sum by at most 1, the vector of K sums by at most √K (L2); Gaussian
noise of std ``noise_multiplier × √K`` is added to each and the top k noisy sums win — the top-k
is post-processing of one Gaussian mechanism, which the ledger composes exactly with DP-SGD. The
mechanism (charge, noise, top k) is ``clinsynth.privacy.top_k``; this module computes the scores.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinsynth.errors import ConfigError, SchemaError
from clinsynth.evaluate.metrics import probabilities
from clinsynth.evaluate.utility import CLASSIFIERS, as_features, auroc_of, feature_pipeline
from clinsynth.privacy.ledger import Charge, PrivacyLedger
from clinsynth.schema import Schema


def parse_select(select: str | None) -> int:
    """``"top5"`` → 5; ``None``/``"last"`` → 0 (no selection: the final epoch)."""
    if select in (None, "", "last"):
        return 0
    match = re.fullmatch(r"top(\d+)", str(select))
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"select must be 'last' or 'topK' with K ≥ 1 (e.g. 'top5'), got {select!r}")
    return int(match.group(1))


def candidate_epochs(n_epochs: int, max_candidates: int) -> list[int]:
    """Evenly spaced epoch indices (0-based), always ending with the last: a public choice."""
    if n_epochs < 1 or max_candidates < 1:
        raise ConfigError("selection needs at least one epoch and one candidate")
    k = min(n_epochs, max_candidates)
    return sorted({n_epochs - 1 - int(i * n_epochs / k) for i in range(k)})


def _predictions(synthetic: pd.DataFrame, real_X: pd.DataFrame, schema: Schema, labels: list[str],
                 seed: int) -> list[np.ndarray]:
    """Class probabilities for the real records (columns in ``labels`` order), one matrix per classifier."""
    y = synthetic[schema.target].astype(str).to_numpy()
    X = as_features(synthetic, schema)
    out = []
    for clf in CLASSIFIERS:
        full = np.full((len(real_X), len(labels)), 1.0 / len(labels))
        if len(np.unique(y)) >= 2:
            pipe = feature_pipeline(schema, clf, seed).fit(X, y)
            proba = probabilities(pipe, real_X)
            full[:] = 0.0
            for j, c in enumerate(pipe.classes_):
                full[:, labels.index(c)] = proba[:, j]
        out.append(full)
    return out


def tstr_auroc(synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema, seed: int = 0) -> float:
    """Mean AUROC on ``real`` of the classifiers trained on ``synthetic`` (the plain SPRINT score)."""
    labels = _labels(schema)
    y_real = real[schema.target].astype(str).to_numpy()
    probs = _predictions(synthetic, as_features(real, schema), schema, labels, seed)
    return float(np.mean([auroc_of(y_real, p, np.array(labels), labels) for p in probs]))


def bounded_score_sum(synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema, seed: int = 0) -> float:
    """Σ over real records of the mean ``1 − Brier/2`` of the classifiers: each term in [0, 1]."""
    labels = _labels(schema)
    onehot = (real[schema.target].astype(str).to_numpy()[:, None] == np.array(labels)[None, :]).astype(float)
    probs = _predictions(synthetic, as_features(real, schema), schema, labels, seed)
    per_record = np.mean([1.0 - ((p - onehot) ** 2).sum(1) / 2.0 for p in probs], axis=0)
    return float(np.clip(per_record, 0.0, 1.0).sum())


def _labels(schema: Schema) -> list[str]:
    if schema.target is None:
        raise SchemaError("epoch selection scores synthetic data by predicting the target: set a target column in the schema")
    return [str(c) for c in schema.column(schema.target).categories or []]


@dataclass
class SelectionResult:
    """Which epochs won, on what scores; ``noisy`` holds what a private selection released."""

    candidates: list[int]
    chosen: list[int]
    scores: list[float] | None = None
    noisy: list[float] | None = None
    noise_std: float = 0.0
    private: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Epochs 1-based, as a user counts them. Plain scores used real data; in DP mode only the noisy ones are kept."""
        out = {"candidates": [e + 1 for e in self.candidates], "chosen": [e + 1 for e in self.chosen],
               "private": self.private}
        if self.private:
            out.update(noisy_scores=self.noisy, noise_std=self.noise_std)
        else:
            out["scores"] = self.scores
        return out


def select_top(scores: np.ndarray, k: int, candidates: list[int]) -> list[int]:
    """The k candidates with the highest scores, best first."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return [candidates[i] for i in order]


def private_top(ledger: PrivacyLedger, charge: Charge, score_sums: Callable[[], np.ndarray], k: int,
                candidates: list[int], rng: np.random.Generator) -> SelectionResult:
    """The top k candidates by their Gaussian-noised score sums, charged to ``ledger`` in the same call.

    ``score_sums`` computes one :func:`bounded_score_sum` per candidate; it runs only after the
    ledger accepted ``charge`` (an overspend is refused before any score is computed). L2
    sensitivity √K, see the module docstring; the mechanism is :func:`clinsynth.privacy.top_k.noisy_top_k`.
    """
    from clinsynth.privacy.top_k import noisy_top_k

    result = noisy_top_k(ledger, charge, math.sqrt(len(candidates)), score_sums, k, rng)
    return SelectionResult(candidates, [candidates[i] for i in result.top], noisy=result.noisy.tolist(),
                           noise_std=float(result.noise_std), private=True)
