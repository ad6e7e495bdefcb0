"""Calibrating a code network's presence logits to the codes' prevalences, after training.

A VAE draws new latents from a mixture fitted to its training patients' latents
(``models/latent_prior.py``). The mixture smooths the patients' latents, and the decoder is
non-linear, so the codes' mean probabilities over the mixture's draws fall a little short of the
real prevalences (simulated EHR, seed 0: 8.2–8.3 codes per patient against the real 8.67). Every
pair rate inherits both codes' shortfall, and this, not the codes' dependence, was most of the
co-occurrence error. One shift per code's logit, found on the sampler's own draws, puts each
code's mean probability back on its training prevalence and leaves the dependence given the
latent as it was. The prevalences are counts of real records: without DP they are read as they are.

**Under DP** (``dp-vae``, ``dp-medgan``, ``dp-corgan``: the networks' ``calibration_share``) the
counts are one charged Gaussian release of the ledger (:func:`charged_class_counts`): the patients
in each class of the schema's target (one class when the target is not a category among the
ordinary columns) and, per class, the patients with each code, each patient's codes capped at
:data:`PRIVATE_CODES` first, so one patient moves one class count and at most that many code
counts by 1 (L2 sensitivity √(cap + 1)). From the noisy counts and the network's own
probabilities (:func:`released_prevalences`, post-processing) come a shift of the target's class
logits, so classes are drawn at their noisy shares, and one shift per class and code
(:class:`CodeShift`), so each code's mean probability among the patients drawn in a class is its
noisy prevalence there. Why: a network trained by DP-SGD at ε = 1 learns neither (simulated EHR,
4,000 patients × 1,000 codes, bench/compare.py's ``ehr``: dp-medgan and dp-vae sampled ~315
codes per patient against the real 8.5, prevalence correlation 0.13–0.16, and their sex was
independent of the codes: TSTR AUROC 0.46–0.53 where the real records give 0.59–0.60).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from clinsynth.privacy.gaussian import gaussian_release
from clinsynth.privacy.ledger import Charge, PrivacyLedger
from clinsynth.privacy.vocabulary import cap_codes_per_patient

#: the largest shift of a code's logit: a code the decoder never produces stays rare rather than
#: being forced onto every patient's logit scale
MAX_SHIFT = 8.0


def prevalence_shift(logits: torch.Tensor, prevalence: np.ndarray, iterations: int = 30,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """The per-code shift ``b`` (one per column of ``logits``, draws × codes) that makes
    ``mean(sigmoid(logits + b))`` over the draws equal ``prevalence`` (clipped inside (0, 1)).

    Each code's mean probability rises monotonically with its shift, so a safeguarded Newton
    iteration (steps of at most 1, shifts within ±:data:`MAX_SHIFT`) solves all codes at once.
    ``weights`` (one per draw, e.g. its probability of a class) make the means weighted ones.

    >>> logits = torch.zeros(4, 2)
    >>> [round(float(v), 3) for v in prevalence_shift(logits, np.array([0.5, 0.731]))]
    [0.0, 1.0]
    """
    z = logits.detach().float()
    n = max(z.shape[0], 1)
    target = torch.as_tensor(np.clip(prevalence, 0.5 / n, 1 - 0.5 / n), dtype=torch.float64, device=z.device)
    b = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    w = None if weights is None else (weights.double() / weights.double().sum().clamp_min(1e-12)).float()
    for _ in range(iterations):
        q = torch.sigmoid(z + b.float())
        if w is None:
            gap = q.mean(0, dtype=torch.float64) - target
            slope = (q * (1 - q)).mean(0, dtype=torch.float64).clamp_min(1e-12)
        else:  # weighted means as products with the weights: no draws × codes temporaries in float64
            gap = (w @ q).double() - target
            slope = (w @ (q * (1 - q))).double().clamp_min(1e-12)
        b = (b - (gap / slope).clamp(-1.0, 1.0)).clamp(-MAX_SHIFT, MAX_SHIFT)
    return b.to(logits.dtype)


def calibration_draws(n_codes: int) -> int:
    """How many latent draws calibrate ``n_codes`` codes: 16,384, fewer for a large vocabulary so a
    draws × codes block stays within 16 M numbers (64 MB)."""
    return int(np.clip(2 ** 24 // max(n_codes, 1), 1024, 16384))


# -- under DP: one charged release of class and code counts ----------------------------------
#: under DP each patient's codes are capped at this many before they are counted (a uniform random
#: subset above it). Simulated EHR (4,000 × 1,000, 8.5 codes per patient, 8 % above 20), the
#: estimator below on the true counts plus the release's noise: a cap of 10 kept 5.6–6.0 codes per
#: patient, 20 kept 8.0–8.2
PRIVATE_CODES = 20
#: a class × code count is taken as measured when it stands this many noise sds above zero. The same
#: simulation at 2 sds let ~2 % of the 2,000 cells' noise through (prevalence correlation 0.89–0.96),
#: at 3 sds 0.1 % (0.89–0.98), TSTR AUROC of the sex target 0.54–0.60 either way
PRIVATE_GATE = 3.0
#: the budget share (μ², see ``share_noise_multiplier``) of the calibration when a DP code network's
#: ``calibration_share`` is left ``None``
PRIVATE_SHARE = 0.5


def calibration_charge(noise_multiplier: float, n_classes: int, n_codes: int) -> Charge:
    """The ledger's charge of :func:`charged_class_counts` at this noise multiplier."""
    where = f"in each of the target's {n_classes} classes" if n_classes > 1 else "in all"
    return Charge("gaussian", f"code calibration: patients, and patients with each of {n_codes} codes (≤ {PRIVATE_CODES} "
                  f"per patient), {where}", noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1, unit="patient")


@dataclass(frozen=True)
class ClassCounts:
    """The noisy release: patients per class, patients with each code per class (classes × codes),
    and the noise sd of every entry."""

    classes: np.ndarray
    codes: np.ndarray
    noise_std: float


def class_code_counts(codes: sp.csr_array, classes: np.ndarray, n_classes: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """[patients per class, patients with each code per class (classes × codes)], each patient's
    codes capped at :data:`PRIVATE_CODES` (a uniform random subset above it; presence only): the
    exact statistics :func:`charged_class_counts` releases."""
    present = sp.csr_array(codes, copy=True)
    present.data = (present.data != 0).astype(np.float64)
    present.eliminate_zeros()
    capped = cap_codes_per_patient(present, PRIVATE_CODES, rng)
    onehot = sp.csr_array((np.ones(len(classes)), (classes, np.arange(len(classes)))), shape=(n_classes, len(classes)))
    return [np.bincount(classes, minlength=n_classes).astype(np.float64), (onehot @ capped).toarray()]


def charged_class_counts(ledger: PrivacyLedger, charge: Charge, codes: sp.csr_array, classes: np.ndarray,
                         n_classes: int, rng: np.random.Generator) -> ClassCounts:
    """Charge ``charge`` to ``ledger``, then release :func:`class_code_counts` with Gaussian noise.

    Adding or removing one patient moves its class's count by 1 and — its codes capped at
    :data:`PRIVATE_CODES` — at most that many of its class's code counts by 1: L2 sensitivity
    √(:data:`PRIVATE_CODES` + 1). Nothing is read before the ledger accepts the charge.
    """
    release = gaussian_release(ledger, charge, math.sqrt(PRIVATE_CODES + 1),
                               lambda: class_code_counts(codes, classes, n_classes, rng), rng)
    return ClassCounts(release.values[0], release.values[1], release.noise_std)


def released_prevalences(counts: ClassCounts, model: np.ndarray,
                         gate: float = PRIVATE_GATE) -> tuple[np.ndarray, np.ndarray]:
    """(each class's share, each code's prevalence in each class) from the noisy counts: post-processing.

    A class × code count more than ``gate`` noise sds above zero is taken as measured. The other
    codes of the class share what is left of the class's noisy total (never below 0) in proportion
    to ``model`` (classes × codes: the network's own mean probabilities), so the many rare codes
    whose counts are mostly noise keep the network's proportions and their measured total, rather
    than each its own noise clipped at zero (+0.4 noise sds per code).

    >>> counts = ClassCounts(np.array([100.0]), np.array([[40.0, 1.0, -1.0, 4.0]]), 1.0)
    >>> share, prevalence = released_prevalences(counts, np.array([[0.5, 0.1, 0.1, 0.2]]))
    >>> [round(float(v), 3) for v in prevalence[0]]
    [0.4, 0.0, 0.0, 0.04]
    """
    n_class = np.maximum(counts.classes, 1.0)
    out = np.zeros_like(counts.codes, dtype=np.float64)
    for c in range(out.shape[0]):
        row = counts.codes[c]
        measured = row > gate * counts.noise_std
        out[c, measured] = row[measured]
        rest = ~measured
        weight = np.clip(model[c, rest], 0.0, None)
        total = weight.sum()
        weight = weight / total if total > 0 else np.full(int(rest.sum()), 1.0 / max(int(rest.sum()), 1))
        out[c, rest] = max(float(row[rest].sum()), 0.0) * weight
    return n_class / n_class.sum(), np.clip(out / n_class[:, None], 0.0, 1.0)


def class_logit_shift(logits: torch.Tensor, share: np.ndarray, iterations: int = 50) -> torch.Tensor:
    """The shift of a category's logits (draws × classes) that makes its mean softmax ``share``.

    >>> [round(float(v), 3) for v in class_logit_shift(torch.zeros(3, 2), np.array([0.25, 0.75]))]
    [-0.549, 0.549]
    """
    target = torch.as_tensor(np.clip(share, 1e-6, None), dtype=torch.float64, device=logits.device)
    b = torch.zeros(logits.shape[1], dtype=torch.float64, device=logits.device)
    for _ in range(iterations):
        mean = torch.softmax(logits.double() + b, dim=1).mean(0)
        b = (b + torch.log(target / mean.clamp_min(1e-12))).clamp(-MAX_SHIFT, MAX_SHIFT)
        b = b - b.mean()
    return b.to(logits.dtype)


@dataclass
class CodeShift:
    """What a DP code network adds to its logits when it samples: ``classes`` to the target's span
    (``span``: start and stop among the decoder's outputs; None without one) before the class is
    drawn, ``codes[c]`` to the code-presence logits of a patient drawn in class ``c``."""

    span: tuple[int, int] | None
    classes: torch.Tensor
    codes: torch.Tensor

    def state_dict(self) -> dict[str, Any]:
        return {"span": list(self.span) if self.span is not None else None,
                "classes": self.classes.cpu().tolist(), "codes": self.codes.cpu().tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None, device: torch.device) -> CodeShift | None:
        if state is None:
            return None
        span = (int(state["span"][0]), int(state["span"][1])) if state["span"] is not None else None
        return cls(span, torch.tensor(state["classes"], dtype=torch.float32, device=device),
                   torch.tensor(state["codes"], dtype=torch.float32, device=device))


def fit_code_shift(logits: torch.Tensor, span: tuple[int, int] | None, codes: slice, counts: ClassCounts) -> CodeShift:
    """The :class:`CodeShift` that takes a network's draws (``logits``: draws × outputs, ``codes``
    the columns of code presence) to the released class shares and per-class prevalences."""
    z = logits[:, codes].float()
    if span is not None:
        share = np.maximum(counts.classes, 1.0) / np.maximum(counts.classes, 1.0).sum()
        head = logits[:, span[0]:span[1]].float()
        class_shift = class_logit_shift(head, share)
        weights = torch.softmax(head + class_shift, dim=1)  # each draw's chance of each class
    else:
        class_shift = torch.zeros(1, device=z.device)
        weights = torch.ones(z.shape[0], 1, device=z.device)
    p = torch.sigmoid(z)
    model = ((weights.T @ p) / weights.sum(0)[:, None].clamp_min(1e-12)).cpu().numpy()
    _, prevalence = released_prevalences(counts, model)
    shifts = torch.stack([prevalence_shift(z, prevalence[c], weights=weights[:, c]) for c in range(weights.shape[1])])
    return CodeShift(span, class_shift.float(), shifts.float())
