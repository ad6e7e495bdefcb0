"""DP-SGD for the networks that see real records, on Opacus' per-sample gradients.

Three things make the printed ε true, and each is here rather than left to the caller:

* **Per-sample clipping of the real records only.** ``PrivateGradient`` computes the gradient of
  each real record's loss (Opacus ``GradSampleModule`` hooks, vectorised over the batch), clips
  each to norm ``max_grad_norm``, sums, adds Gaussian noise of std ``noise_multiplier ×
  max_grad_norm`` and divides by the *expected* batch size. A GAN discriminator's loss on fake
  records is a function of the generator and the (already private) discriminator, so its gradient
  is added afterwards, unclipped and noise-free: adding or removing one real record still moves
  the update by at most ``max_grad_norm`` before noise, which is the sensitivity the accountant assumes.
* **Poisson sampling.** ``poisson_batches`` includes every record in every step independently with
  probability ``sample_rate`` — the sampling the accountant's amplification assumes (shuffled
  fixed-size batches are not). An empty batch still releases noise.
* **Noise calibrated and charged before training.** ``ledger.charge_calibrated`` finds the
  smallest noise multiplier whose charge, composed with everything already in the ledger and what
  is reserved for later (e.g. epoch selection), stays within the budget, and charges it in the
  same call; the model builds its ``PrivateGradient`` with that multiplier.
* **Several processes (torchrun).** Each clips its share of the global Poisson batch; rank 0 alone
  adds the noise, the sums are all-reduced and divided by the expected *global* batch
  (``clinsynth.distributed``, as Opacus' ``DistributedDPOptimizer``): one noise draw per global
  step, so the one-process charge holds.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from clinsynth import distributed
from clinsynth.errors import ConfigError, InputError


class PrivateGradient:
    """Clipped and noised gradient of a module's per-record loss on real records.

    Use ``forward_private`` for the pass on real records and ``public`` — the same parameters in a
    module without Opacus' hooks, so without their cost — for everything else (fake records, the
    generator's step), then ``add_private_gradient(per_record_loss)``.

    Example
    -------
    >>> engine = PrivateGradient(D, noise_multiplier=1.1, max_grad_norm=1.0, expected_batch_size=256)  # doctest: +SKIP
    >>> opt.zero_grad(); loss(engine.public(x_fake)).backward()  # public part, plain autograd  # doctest: +SKIP
    >>> engine.add_private_gradient(per_record_loss(engine.forward_private(x_real)))           # doctest: +SKIP
    >>> opt.step()                                                                              # doctest: +SKIP
    """

    def __init__(self, module: nn.Module, noise_multiplier: float, max_grad_norm: float,
                 expected_batch_size: float, generator: torch.Generator | None = None):
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        if not noise_multiplier >= 0:
            raise ConfigError(f"noise_multiplier must be ≥ 0, got {noise_multiplier}")
        if not max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        if not expected_batch_size > 0:
            raise ConfigError(f"expected_batch_size must be > 0, got {expected_batch_size}")
        self.module = module
        self.public = _tied_twin(module)  # before Opacus adds its hooks to `module`
        # ghost clipping: per-record gradient norms from each layer's inputs and output gradients,
        # without materialising a gradient per record (batch × parameters floats)
        self.sampled = GradSampleModuleFastGradientClipping(module, batch_first=True, loss_reduction="sum",
                                                            max_grad_norm=max_grad_norm, use_ghost_clipping=True)
        self.sampled.disable_hooks()
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.expected_batch_size = float(expected_batch_size)
        self.generator = generator

    def forward_private(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The module on real records (every input batch-first: one row per record), with per-record
        norm capture on."""
        self.sampled.enable_hooks()
        try:
            return self.sampled(*inputs)
        finally:
            self.sampled.disable_hooks()

    def per_sample_norms(self) -> torch.Tensor:
        """L2 norm of each record's whole gradient (all parameters together), from the last private pass."""
        return self.sampled.get_norm_sample()

    def add_private_gradient(self, per_record_loss: torch.Tensor | None) -> None:
        """Add (Σ clip(∇ℓᵢ) + N(0, σ²C²)) / B to each parameter's ``.grad``.

        ``per_record_loss`` comes from ``forward_private`` (one value per real record), or is
        ``None`` for an empty Poisson batch, which releases noise only. Two backward passes: the
        first yields each record's gradient norm, the second the sum of the records' gradients
        scaled by min(1, C / norm). The unclipped gradients of the first never reach ``.grad``:
        whatever ``.grad`` held before (the public part) is restored.
        """
        public = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None  # else autograd adds the unclipped real gradients into the public ones, in place
        if per_record_loss is not None and per_record_loss.numel():
            if per_record_loss.dim() != 1:
                raise ValueError("per_record_loss must hold one loss per record")
            with warnings.catch_warnings():  # records never require grad; torch warns about that
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                self.sampled.enable_hooks()
                try:
                    per_record_loss.sum().backward(retain_graph=True)
                finally:
                    self.sampled.disable_hooks()
                factors = (self.max_grad_norm / (self.per_sample_norms() + 1e-6)).clamp(max=1.0)
                for p in self.params:
                    p.grad = None  # drop the unclipped sum
                (per_record_loss * factors.detach()).sum().backward()
        noise = self.noise_multiplier > 0 and distributed.noise_here()  # several processes: once, on rank 0
        private = []
        for p in self.params:
            total = p.grad if p.grad is not None else torch.zeros_like(p)  # None: empty batch, noise alone
            if noise:
                total = total + torch.normal(0.0, self.noise_multiplier * self.max_grad_norm, size=total.shape,
                                             generator=self.generator, device=total.device)
            private.append(total)
        # ÷ the expected (global) batch; across processes the sums are all-reduced first
        distributed.reduce_private(self.params, public, private, self.expected_batch_size)

    def detach(self) -> nn.Module:
        """Remove Opacus' hooks and return the plain module (for saving and sampling)."""
        self.sampled.cleanup()
        return self.module


def _tied_twin(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters *are* the original's (same tensors, same ``.grad``)."""
    twin = copy.deepcopy(module)
    for (name, _), original in zip(list(twin.named_parameters()), module.parameters()):
        owner, _, leaf = name.rpartition(".")
        twin.get_submodule(owner)._parameters[leaf] = original
    return twin


def poisson_batches(n: int, sample_rate: float, steps: int, seed: int) -> Iterator[np.ndarray]:
    """Indices of ``steps`` Poisson samples of ``range(n)``: each record in each step with
    probability ``sample_rate``, independently (the batch size is Binomial(n, q), sometimes 0).

    Drawing the size first and then a uniform subset of that size is the same distribution, and
    costs O(batch) instead of O(n) per step.
    """
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        k = rng.binomial(n, sample_rate)
        yield np.sort(rng.choice(n, size=k, replace=False)) if k else np.empty(0, dtype=np.int64)


#: A private batch is at most this share of the records: with fewer records the expected batch shrinks.
MAX_BATCH_SHARE = 0.25


def expected_batch(batch_size: int, n: int, what: str) -> int:
    """The expected Poisson batch of a DP-SGD phase: ``batch_size``, or a quarter of the records
    when there are fewer than four batches' worth — so a 455-row table trains with the model's
    defaults instead of being refused. The sample rate ``batch / n`` is what the ledger charges."""
    batch = min(int(batch_size), int(n * MAX_BATCH_SHARE))
    if batch < 1:
        raise InputError(f"{what}: {n} records are too few for DP-SGD (need at least {int(1 / MAX_BATCH_SHARE)})")
    return batch
