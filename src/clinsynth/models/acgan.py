"""AC-GAN after the SPRINT work (Beaulieu-Jones et al.): a class-conditional GAN for trial tables.

The generator multiplies the noise vector by a learned embedding of the class label, passes it
through dense layers and, when the table has longitudinal groups, through a small 1-D convolution
over the visit axis whose channels are the measures (and their missing indicators); every other
column comes from a dense head. The discriminator sees only records, never labels, and answers
twice: real or fake, and which class. Adam with β1 = 0.5.

Departures from the published code, on purpose: the convolution is lean (channels ≤ 32 over the
visit axis instead of 256 filters over an upsampled grid) because sampling speed scales with it
(see ../shared/PERFORMANCE.md); the discriminator is dense with a single output layer holding both
heads, which keeps it compatible with per-sample gradient clipping for DP.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clinsynth.data.io import write_with
from clinsynth.data.transforms import GridLayout, Span, TableEncoder
from clinsynth.errors import ConfigError
from clinsynth.models.base import SynthModel, allocate
from clinsynth.models.training import SpanActivation, Snapshots, TrainingProgress, resolve_device, seeded
from clinsynth.schema import Schema


class Generator(nn.Module):
    """Noise × label embedding → dense body → (visit-grid convolution + dense head) → features."""

    def __init__(self, noise_dim: int, n_classes: int, hidden: int, n_features: int,
                 grid: np.ndarray | None, n_visits: int, conv_channels: int):
        super().__init__()
        self.embed = nn.Embedding(n_classes, noise_dim)
        self.body = nn.Sequential(
            nn.Linear(noise_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        )
        self.n_visits = n_visits
        self.conv_channels = conv_channels
        if grid is not None:
            n_grid_channels = grid.shape[0]
            flat = grid.reshape(-1)
            valid = np.flatnonzero(flat >= 0)
            rest = np.setdiff1d(np.arange(n_features), flat[valid])
            self.to_grid = nn.Linear(hidden, conv_channels * n_visits)
            self.conv = nn.Sequential(
                nn.ReLU(), nn.Conv1d(conv_channels, conv_channels, 3, padding=1),
                nn.ReLU(), nn.Conv1d(conv_channels, n_grid_channels, 3, padding=1),
            )
            source_of = np.empty(n_features, dtype=np.int64)
            source_of[flat[valid]] = np.arange(valid.size)
            source_of[rest] = valid.size + np.arange(rest.size)
            self.register_buffer("grid_valid", torch.as_tensor(valid), persistent=False)
            self.register_buffer("gather", torch.as_tensor(source_of), persistent=False)
            self.head = nn.Linear(hidden, rest.size) if rest.size else None
        else:
            self.to_grid = None
            self.head = nn.Linear(hidden, n_features)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(z * self.embed(y))
        if self.to_grid is None:
            return self.head(h)
        grid = self.conv(self.to_grid(h).view(-1, self.conv_channels, self.n_visits)).flatten(1)
        parts = [grid[:, self.grid_valid]]
        if self.head is not None:
            parts.append(self.head(h))
        return torch.cat(parts, dim=1)[:, self.gather]


    @torch.no_grad()
    def folded(self) -> FoldedGenerator:
        """The same function for sampling: batch norm folded into the dense layers and the
        convolutions written as dense matrices, so a batch costs a few matrix products."""
        return FoldedGenerator(self)


def _fold_batchnorm(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return linear.weight * scale[:, None], (linear.bias - bn.running_mean) * scale + bn.bias


def _conv_as_matrix(conv: nn.Conv1d, n_visits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(in_channels·visits → out_channels·visits) matrix and bias equal to a 1-D convolution."""
    n_in = conv.in_channels * n_visits
    basis = torch.eye(n_in, device=conv.weight.device).view(n_in, conv.in_channels, n_visits)
    bias = conv.bias.repeat_interleave(n_visits)
    return (conv(basis).flatten(1) - bias), bias


class FoldedGenerator(nn.Module):
    """Inference-only twin of ``Generator`` (eval mode): same outputs, fewer and larger kernels."""

    def __init__(self, g: Generator):
        super().__init__()
        lin1, bn1, _, lin2, bn2, _ = g.body
        w1, b1 = _fold_batchnorm(lin1, bn1)
        w2, b2 = _fold_batchnorm(lin2, bn2)
        self.embed = g.embed.weight.detach().clone()
        self.w1, self.b1, self.w2, self.b2 = w1.t().contiguous(), b1, w2.t().contiguous(), b2
        self.grid = g.to_grid is not None
        if not self.grid:
            self.w3, self.b3 = g.head.weight.t().contiguous(), g.head.bias.detach().clone()
            return
        heads = [g.to_grid] + ([g.head] if g.head is not None else [])
        self.w3 = torch.cat([h.weight for h in heads]).t().contiguous()
        self.b3 = torch.cat([h.bias for h in heads])
        self.n_grid_in = g.to_grid.out_features
        m1, c1 = _conv_as_matrix(g.conv[1], g.n_visits)
        m2, c2 = _conv_as_matrix(g.conv[3], g.n_visits)
        self.m1, self.c1 = m1, c1
        self.m2, self.c2 = m2[:, g.grid_valid].contiguous(), c2[g.grid_valid]
        self.gather = g.gather

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.addmm(self.b1, z * self.embed[y], self.w1))
        h = torch.relu(torch.addmm(self.b2, h, self.w2))
        out = torch.addmm(self.b3, h, self.w3)
        if not self.grid:
            return out
        g = torch.relu(torch.addmm(self.c1, torch.relu(out[:, :self.n_grid_in]), self.m1))
        grid = torch.addmm(self.c2, g, self.m2)
        return torch.cat([grid, out[:, self.n_grid_in:]], dim=1)[:, self.gather]


class Discriminator(nn.Module):
    """Dense critic with one output layer: column 0 is real/fake, the rest are class logits."""

    def __init__(self, n_features: int, hidden: int, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1 + n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def acgan_loss(out: torch.Tensor, real: bool, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Real/fake cross-entropy plus the auxiliary class cross-entropy, per record or averaged."""
    target = torch.full_like(out[:, 0], 1.0 if real else 0.0)
    adv = F.binary_cross_entropy_with_logits(out[:, 0], target, reduction="none")
    aux = F.cross_entropy(out[:, 1:], labels, reduction="none") if out.shape[1] > 2 else torch.zeros_like(adv)
    per_record = adv + aux
    return per_record if reduction == "none" else per_record.mean()


class ACGAN(SynthModel):
    """Class-conditional GAN for trial and other tables (``acgan`` in the registry).

    Parameters
    ----------
    epochs, batch_size : passes over the data and records per step.
    noise_dim, hidden, disc_hidden, conv_channels : network sizes; the generator stays lean
        so that sampling runs at hundreds of thousands of rows per second on a CPU.
    lr_g, lr_d, beta1 : Adam settings (β1 = 0.5 as in the AC-GAN and SPRINT work).
    gumbel_tau : temperature of the Gumbel-softmax for categorical outputs while training.
    numeric_transform : ``"quantile"`` or ``"standard"`` scaling of numbers (see ``TableEncoder``).
    snapshots, snapshot_dir : keep the generator of every epoch (``"memory"``, ``"disk"``, ``"off"``)
        for epoch selection and ensembles.
    device : ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
    seed : makes training reproducible on CPU.
    progress : show a progress bar with the losses.

    Example
    -------
    >>> model = ACGAN(epochs=100).fit(df, Schema.infer(df, target="arm"))   # doctest: +SKIP
    >>> synth = model.sample(1000, conditions={"arm": {"0": 0.5, "1": 0.5}})  # doctest: +SKIP
    """

    name = "acgan"

    def __init__(self, epochs: int = 300, batch_size: int = 256, noise_dim: int = 32, hidden: int = 128,
                 disc_hidden: int = 256, conv_channels: int = 8, lr_g: float = 2e-4, lr_d: float = 2e-4,
                 beta1: float = 0.5, gumbel_tau: float = 0.2, numeric_transform: str = "quantile",
                 snapshots: str = "memory", snapshot_dir: str | None = None, device: str = "auto",
                 seed: int = 0, progress: bool = True):
        self.epochs = epochs
        self.batch_size = batch_size
        self.noise_dim = noise_dim
        self.hidden = hidden
        self.disc_hidden = disc_hidden
        self.conv_channels = conv_channels
        self.lr_g = lr_g
        self.lr_d = lr_d
        self.beta1 = beta1
        self.gumbel_tau = gumbel_tau
        self.numeric_transform = numeric_transform
        self.snapshots = snapshots
        self.snapshot_dir = snapshot_dir
        self.device = device
        self.seed = seed
        self.progress = progress

    # -- checks ------------------------------------------------------------------------
    def _validate_params(self, schema: Schema) -> None:
        positive = {k: getattr(self, k) for k in ("epochs", "batch_size", "noise_dim", "hidden", "disc_hidden", "conv_channels")}
        bad = [f"{k}={v!r}" for k, v in positive.items() if not isinstance(v, (int, np.integer)) or v < 1]
        bad += [f"{k}={getattr(self, k)!r}" for k in ("lr_g", "lr_d", "gumbel_tau") if not getattr(self, k) > 0]
        if not 0 <= self.beta1 < 1:
            bad.append(f"beta1={self.beta1!r}")
        if bad:
            raise ConfigError(f"{self.name}: invalid hyperparameters {', '.join(bad)} (sizes and rates must be positive, 0 ≤ beta1 < 1)")
        Snapshots(self.snapshots, self.snapshot_dir)
        resolve_device(self.device)

    # -- layout --------------------------------------------------------------------------
    def _layout(self, encoder: TableEncoder) -> None:
        """Which encoded columns the networks produce, and where the visit grid sits among them."""
        target = self.schema_.target
        if target is not None:
            t = encoder.span(target)
            self.target_slice_ = (t.start, t.stop)
            self.n_classes_ = t.dim
        else:
            self.target_slice_ = (0, 0)
            self.n_classes_ = 1
        a, b = self.target_slice_
        self.feature_idx_ = np.r_[0:a, b:encoder.dim].astype(np.int64)
        position = np.full(encoder.dim, -1, dtype=np.int64)
        position[self.feature_idx_] = np.arange(self.feature_idx_.size)
        layout: GridLayout | None = encoder.grid_layout()
        if layout is not None:
            self.grid_ = np.where(layout.channels >= 0, position[np.maximum(layout.channels, 0)], -1)
            self.n_visits_ = layout.visits
        else:
            self.grid_ = None
            self.n_visits_ = 0
        feature_spans = [s for s in encoder.spans if s.name != target]
        self.feature_spans_ = [Span(s.name, s.dim, s.activation, int(position[s.start])) for s in feature_spans]

    def _build(self, device: torch.device) -> None:
        n_features = self.feature_idx_.size
        self.generator_ = Generator(self.noise_dim, self.n_classes_, self.hidden, n_features, self.grid_,
                                    self.n_visits_, self.conv_channels).to(device)
        self.discriminator_ = Discriminator(n_features, self.disc_hidden, self.n_classes_).to(device)
        self.device_ = device

    # -- training ------------------------------------------------------------------------
    def _fit(self, df: pd.DataFrame, encoder: TableEncoder) -> None:
        device = resolve_device(self.device)
        self._layout(encoder)
        X = encoder.encode(df)
        if self.schema_.target is not None:
            a, b = self.target_slice_
            labels = X[:, a:b].argmax(1)
        else:
            labels = np.zeros(len(df), dtype=np.int64)
        counts = np.bincount(labels, minlength=self.n_classes_)
        self.class_probs_ = counts / counts.sum()
        features = torch.as_tensor(X[:, self.feature_idx_], device=device)
        y_real_all = torch.as_tensor(labels, dtype=torch.long, device=device)
        with seeded(self.seed, device):
            self._build(device)
            self._train(features, y_real_all, device)

    def _train(self, features: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        G, D = self.generator_, self.discriminator_
        opt_g = torch.optim.Adam(G.parameters(), lr=self.lr_g, betas=(self.beta1, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=self.lr_d, betas=(self.beta1, 0.999))
        activate = SpanActivation(self.feature_spans_, device)
        rng = torch.Generator(device=device).manual_seed(self.seed)
        probs = torch.as_tensor(self.class_probs_, dtype=torch.float, device=device)
        snapshots = Snapshots(self.snapshots, self.snapshot_dir)
        n = features.shape[0]
        batch = min(self.batch_size, n)
        self.history_: list[dict[str, float]] = []
        with TrainingProgress(self.epochs, f"{self.name} training", self.progress) as bar:
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=rng, device=device)
                d_sum = g_sum = 0.0
                steps = 0
                for start in range(0, n - batch + 1, batch):
                    idx = order[start:start + batch]
                    x_real, y_real = features[idx], labels[idx]
                    z = torch.randn(batch, self.noise_dim, generator=rng, device=device)
                    y_fake = torch.multinomial(probs, batch, replacement=True, generator=rng)
                    x_fake = activate(G(z, y_fake), self.gumbel_tau)

                    opt_d.zero_grad(set_to_none=True)
                    loss_d = acgan_loss(D(x_real), True, y_real) + acgan_loss(D(x_fake.detach()), False, y_fake)
                    loss_d.backward()
                    opt_d.step()

                    opt_g.zero_grad(set_to_none=True)
                    loss_g = acgan_loss(D(x_fake), True, y_fake)
                    loss_g.backward()
                    opt_g.step()
                    d_sum += loss_d.item()
                    g_sum += loss_g.item()
                    steps += 1
                self.history_.append({"d_loss": d_sum / steps, "g_loss": g_sum / steps})
                snapshots.add(G)
                bar.advance(d=d_sum / steps, g=g_sum / steps)
        self.snapshots_ = snapshots
        self._folded = None
        G.eval()

    # -- sampling ------------------------------------------------------------------------
    def _default_class_probs(self) -> np.ndarray:
        return self.class_probs_

    def _sample(self, n: int, class_probs: np.ndarray, seed: int,
                block: int = 524_288, chunk: int = 8_192) -> pd.DataFrame:
        """Generate in small chunks (cache-sized matrix products), decode in large blocks."""
        if self.schema_.target is None and not np.allclose(class_probs, self.class_probs_):
            raise ConfigError("this model was trained without a target, so it cannot be conditioned")
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(self.n_classes_), allocate(n, class_probs))
        rng.shuffle(labels)
        gen = torch.Generator(device=self.device_).manual_seed(seed)
        G = self._sampler()
        a, b = self.target_slice_
        enc = self.encoder_
        frames = []
        with torch.inference_mode():
            for first in range(0, n, block):
                y_block = labels[first:first + block]
                m = len(y_block)
                # column-major blocks: decode_parts then reads each column contiguously
                values = np.empty((len(enc._linear_idx), m), dtype=np.float32).T
                codes = np.empty((enc._n_codes, m), dtype=np.int16).T
                X = np.zeros((min(chunk, m), enc.dim), dtype=np.float32)
                for s in range(0, m, chunk):
                    e = min(s + chunk, m)
                    y = torch.as_tensor(y_block[s:e], device=self.device_)
                    z = torch.randn(e - s, self.noise_dim, generator=gen, device=self.device_)
                    out = G(z, y).cpu().numpy()
                    Xc = X[:e - s]
                    Xc[:, :a] = out[:, :a]
                    Xc[:, b:] = out[:, a:]
                    if b > a:
                        Xc[:, a:b] = 0.0
                        Xc[np.arange(e - s), a + y_block[s:e]] = 1.0
                    values[s:e], codes[s:e] = enc.split(Xc)
                frames.append(enc.decode_parts(values, codes, id_start=first))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def _sampler(self) -> FoldedGenerator:
        if getattr(self, "_folded", None) is None:
            self._folded = self.generator_.eval().folded()
        return self._folded

    # -- persistence ---------------------------------------------------------------------
    def _fitted_config(self) -> dict[str, Any]:
        return {"n_train": self.n_train_, "class_probs": self.class_probs_, "history": self.history_}

    def _save_weights(self, directory: Path) -> None:
        state = {"generator": self.generator_.state_dict(), "discriminator": self.discriminator_.state_dict()}
        state = {net: {k: v.detach().cpu() for k, v in sd.items()} for net, sd in state.items()}
        write_with(directory / "weights.pt", lambda tmp: torch.save(state, tmp))

    def _restore(self, fitted: dict[str, Any], encoder: TableEncoder, directory: Path) -> None:
        device = resolve_device(self.device if self.device != "cuda" or torch.cuda.is_available() else "cpu")
        self._layout(encoder)
        self.class_probs_ = np.asarray(fitted["class_probs"], dtype=float)
        self.history_ = fitted.get("history", [])
        self._build(device)
        state = torch.load(directory / "weights.pt", map_location=device, weights_only=True)
        self.generator_.load_state_dict(state["generator"])
        self.discriminator_.load_state_dict(state["discriminator"])
        self.generator_.eval()
        self._folded = None
        self.snapshots_ = Snapshots("off")
