"""Where a VAE draws new patients' latents from: the standard normal prior, or a Gaussian mixture
fitted to the training patients' latents after training.

A VAE trained on sparse codes leaves holes in its prior: the training patients' latents
(the aggregate posterior) do not fill N(0, I), so prior draws decode to patients between the
real ones, whose codes go together less than real codes do. Drawing from a mixture fitted to the
training latents closes that gap (measured in ``models/vae.py``). The mixture is fitted to the
latents of real records, so it is an uncharged statistic of them: never under DP, where the
prior stays N(0, I).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LatentPrior(nn.Module):
    """N(0, I) until :meth:`fit`; then a ``components``-Gaussian mixture (full covariances).

    At most one component per ``10 × latent`` rows: a full covariance has latent² / 2 numbers,
    and with one per 128 rows (64 dimensions) the mixture overfitted on 1,600 patients × 60 codes
    (co-occurrence 0.32 beyond noise, N(0, I) draws 0.22; one per 640 rows: 0.20). Kept as
    buffers, so it is saved and restored with the model's weights.
    """

    def __init__(self, latent: int, components: int):
        super().__init__()
        self.latent, self.components = latent, components
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("log_weights", torch.zeros(components))
        self.register_buffer("means", torch.zeros(components, latent))
        self.register_buffer("scale_tril", torch.eye(latent).repeat(components, 1, 1))

    def fit(self, z: np.ndarray, seed: int) -> LatentPrior:
        """Fit the mixture to latent draws ``z`` (rows × latent) of the training patients."""
        from sklearn.mixture import GaussianMixture

        if len(z) < 2:  # nothing to fit a spread to: keep N(0, I)
            return self
        k = max(1, min(self.components, len(z) // (10 * self.latent)))  # enough rows per component
        mix = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=200, random_state=seed).fit(z)
        weights = np.zeros(self.components)
        weights[:k] = mix.weights_
        with torch.no_grad():
            self.log_weights.copy_(torch.as_tensor(np.log(np.maximum(weights, 1e-300))))
            self.means.zero_()
            self.means[:k] = torch.as_tensor(mix.means_)
            self.scale_tril.copy_(torch.eye(self.latent).repeat(self.components, 1, 1))
            self.scale_tril[:k] = torch.as_tensor(np.linalg.cholesky(mix.covariances_))
            self.fitted.fill_(True)
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` latents; unfitted, exactly the draws ``torch.randn`` would give."""
        eps = torch.randn(n, self.latent, generator=generator, device=self.means.device)
        if not bool(self.fitted):
            return eps
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        return self.means[k] + (self.scale_tril[k] @ eps.unsqueeze(-1)).squeeze(-1)
