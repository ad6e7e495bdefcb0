"""Where a VAE draws new patients' latents from: the standard normal prior, or a Gaussian mixture
fitted to the training patients' latents after training.

A VAE trained on sparse codes leaves holes in its prior: the training patients' latents
(the aggregate posterior) do not fill N(0, I), so prior draws decode to patients between the
real ones, whose codes go together less than real codes do. Drawing from a mixture fitted to the
training latents closes that gap (measured in ``models/vae.py``). The mixture is fitted to the
latents of real records, so it is an uncharged statistic of them: never under DP, where the
prior stays N(0, I).

Only the *active* latent dimensions (Burda et al. 2016: those whose posterior mean varies across
patients, variance > :data:`ACTIVE_VARIANCE`) carry the patients; the others are the prior's
N(0, I) in every patient, and the decoder ignores them. So the mixture is fitted in the active
dimensions alone, to several posterior draws per patient (the aggregate posterior, not one noisy
point per patient), and the other dimensions stay N(0, I): with a handful of active dimensions
out of 64, the same rows afford many more components.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: a latent dimension is active when its posterior mean's variance over the patients exceeds this
ACTIVE_VARIANCE = 0.05
#: rows per mixture component and active dimension, at least (counted in patients, not draws)
ROWS_PER_COMPONENT_DIM = 10


class LatentPrior(nn.Module):
    """N(0, I) until :meth:`fit`; then a ``components``-Gaussian mixture (full covariances).

    At most one component per ``10 × active dimensions`` patients: a full covariance has d² / 2
    numbers, and with one per 2 × latent rows (64 dimensions) the mixture overfitted on 1,600
    patients × 60 codes (co-occurrence 0.32 beyond noise, N(0, I) draws 0.22; one per 10 × latent
    rows: 0.20). Kept as buffers, so it is saved and restored with the model's weights; a bundle
    saved with another number of components loads with its own.
    """

    def __init__(self, latent: int, components: int):
        super().__init__()
        self.latent, self.components = latent, components
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("log_weights", torch.zeros(components))
        self.register_buffer("means", torch.zeros(components, latent))
        self.register_buffer("scale_tril", torch.eye(latent).repeat(components, 1, 1))

    def fit(self, z: np.ndarray, seed: int, mean: np.ndarray | None = None,
            patients_per_component: int | None = None) -> LatentPrior:
        """Fit the mixture to latent draws ``z`` (draws × latent, several per patient allowed) of the
        training patients; ``mean`` (patients × latent), their posterior means, picks the active
        dimensions (all of them when not given) and counts the patients. ``patients_per_component``
        replaces the VAE's rule (:data:`ROWS_PER_COMPONENT_DIM` × active dimensions) for an
        encoder whose latents fill a bounded box (medGAN's tanh code layer: see ``models/medgan.py``)."""
        from sklearn.mixture import GaussianMixture

        patients = len(mean) if mean is not None else len(z)
        active = (np.flatnonzero(mean.var(0) > ACTIVE_VARIANCE) if mean is not None and patients > 1
                  else np.arange(self.latent))
        if patients < 2 or active.size == 0:  # nothing to fit a spread to: keep N(0, I)
            return self
        per = patients_per_component or ROWS_PER_COMPONENT_DIM * active.size
        k = max(1, min(self.components, patients // per))
        mix = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=200,
                              random_state=seed).fit(z[:, active])
        weights = np.zeros(self.components)
        weights[:k] = mix.weights_
        means = np.zeros((self.components, self.latent))
        means[np.ix_(np.arange(k), active)] = mix.means_
        cov = np.tile(np.eye(self.latent), (self.components, 1, 1))
        for j in range(k):  # the active block from the mixture, N(0, I) elsewhere
            cov[j][np.ix_(active, active)] = mix.covariances_[j]
        with torch.no_grad():
            self.log_weights.copy_(torch.as_tensor(np.log(np.maximum(weights, 1e-300))))
            self.means.copy_(torch.as_tensor(means))
            self.scale_tril.copy_(torch.as_tensor(np.linalg.cholesky(cov)))
            self.fitted.fill_(True)
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` latents; unfitted, exactly the draws ``torch.randn`` would give."""
        eps = torch.randn(n, self.latent, generator=generator, device=self.means.device)
        if not bool(self.fitted):
            return eps
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        out = torch.empty_like(eps)
        for j in torch.unique(k).tolist():  # one product per component: gathering a d × d factor per row
            rows = (k == j).nonzero(as_tuple=True)[0]  # held n × d² numbers (0.27 GB for 4,096 × 128²)
            out[rows] = self.means[j] + eps[rows] @ self.scale_tril[j].T
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A bundle saved with another number of components restores with its own number."""
        saved = state_dict.get(prefix + "log_weights")
        if isinstance(saved, torch.Tensor) and saved.dim() == 1 and saved.numel() != self.components:
            self.components = saved.numel()
            self.log_weights = torch.zeros(self.components)
            self.means = torch.zeros(self.components, self.latent)
            self.scale_tril = torch.eye(self.latent).repeat(self.components, 1, 1)
        super()._load_from_state_dict(state_dict, prefix, *args)
