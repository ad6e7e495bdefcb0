"""Calibrating a code network's presence logits to the codes' prevalences, after training.

A VAE draws new latents from a mixture fitted to its training patients' latents
(``models/latent_prior.py``). The mixture smooths the patients' latents, and the decoder is
non-linear, so the codes' mean probabilities over the mixture's draws fall a little short of the
real prevalences (simulated EHR, seed 0: 8.2–8.3 codes per patient against the real 8.67). Every
pair rate inherits both codes' shortfall, and this, not the codes' dependence, was most of the
co-occurrence error. One shift per code's logit, found on the sampler's own draws, puts each
code's mean probability back on its training prevalence and leaves the dependence given the
latent as it was. The prevalences are counts of real records: without DP only.
"""
from __future__ import annotations

import numpy as np
import torch

#: the largest shift of a code's logit: a code the decoder never produces stays rare rather than
#: being forced onto every patient's logit scale
MAX_SHIFT = 8.0


def prevalence_shift(logits: torch.Tensor, prevalence: np.ndarray, iterations: int = 30) -> torch.Tensor:
    """The per-code shift ``b`` (one per column of ``logits``, draws × codes) that makes
    ``mean(sigmoid(logits + b))`` over the draws equal ``prevalence`` (clipped inside (0, 1)).

    Each code's mean probability rises monotonically with its shift, so a safeguarded Newton
    iteration (steps of at most 1, shifts within ±:data:`MAX_SHIFT`) solves all codes at once.

    >>> logits = torch.zeros(4, 2)
    >>> [round(float(v), 3) for v in prevalence_shift(logits, np.array([0.5, 0.731]))]
    [0.0, 1.0]
    """
    z = logits.detach().float()
    n = max(z.shape[0], 1)
    target = torch.as_tensor(np.clip(prevalence, 0.5 / n, 1 - 0.5 / n), dtype=torch.float64, device=z.device)
    b = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    for _ in range(iterations):
        q = torch.sigmoid(z + b.float())
        gap = q.mean(0, dtype=torch.float64) - target
        slope = (q * (1 - q)).mean(0, dtype=torch.float64).clamp_min(1e-12)
        b = (b - (gap / slope).clamp(-1.0, 1.0)).clamp(-MAX_SHIFT, MAX_SHIFT)
    return b.to(logits.dtype)


def calibration_draws(n_codes: int) -> int:
    """How many latent draws calibrate ``n_codes`` codes: 16,384, fewer for a large vocabulary so a
    draws × codes block stays within 16 M numbers (64 MB)."""
    return int(np.clip(2 ** 24 // max(n_codes, 1), 1024, 16384))
