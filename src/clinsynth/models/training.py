"""What every neural model shares: device choice, span activations, seeding, progress, snapshots.

The device is chosen once (``resolve_device``) and passed down, never hard-coded, so the same code
trains on a laptop CPU and on CUDA. Randomness comes from explicit ``torch.Generator`` objects and
a forked global RNG, so a seed reproduces a model on CPU.
"""
from __future__ import annotations

import copy
import datetime
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from clinsynth import distributed, threads
from clinsynth.data.io import write_with
from clinsynth.data.transforms import Span
from clinsynth.errors import ConfigError


def mlp(sizes: list[int]) -> torch.nn.Sequential:
    """Dense layers of ``sizes`` (input, hidden…, output) with ReLU between them, none after the last."""
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    return torch.nn.Sequential(*layers)


def resolve_device(device: str | torch.device = "auto", fallback_to_cpu: bool = False) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is checked, not trusted.

    ``fallback_to_cpu`` is for loading: a model trained on a GPU still samples on a CPU-only machine.
    Every model asks here before its first tensor, so this is also where PyTorch gets its thread
    count (``clinsynth.threads``).
    """
    threads.ensure_torch()
    if isinstance(device, torch.device):
        return distributed.device_for(device)
    if device == "auto":
        return distributed.device_for(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        if fallback_to_cpu:
            return torch.device("cpu")
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available on this machine; use 'auto' or 'cpu'")
    return distributed.device_for(dev)  # under torchrun, each process its own GPU


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block under a fixed global torch RNG and restore the caller's RNG afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while a block runs, then restore the setting.

    Weights that weight decay shrinks toward zero (a discriminator's inputs for codes nobody has)
    become subnormal, and x86 arithmetic on subnormals is ~100× slower: a GAN epoch measured
    0.6 s went to 27 s after 40 epochs. Flushing them changes values below 1e-38 only. torch
    cannot read the mode back, so it is restored to its default (off).
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class SpanActivation:
    """Apply each span's activation to raw network outputs, vectorised by span width.

    Softmax spans use Gumbel-softmax while training (so fake one-hots look like real ones to the
    discriminator, as in CTGAN) and are left as logits for sampling, where ``decode`` takes argmax.
    """

    def __init__(self, spans: Sequence[Span], device: torch.device):
        by_dim: dict[int, list[int]] = {}
        for s in spans:
            if s.activation == "softmax":
                by_dim.setdefault(s.dim, []).append(s.start)
        self.groups = [
            torch.tensor([[start + k for k in range(dim)] for start in starts], dtype=torch.long, device=device)
            for dim, starts in sorted(by_dim.items())
        ]

    def __call__(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        if not self.groups:
            return x
        out = x.clone()
        for idx in self.groups:
            logits = x[:, idx]  # (batch, n_spans, dim)
            out[:, idx] = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
        return out


class Snapshots:
    """Per-epoch copies of a network's weights, in memory or on disk, for epoch selection."""

    def __init__(self, mode: str = "memory", directory: str | Path | None = None):
        if mode not in ("memory", "disk", "off"):
            raise ConfigError(f"snapshots must be 'memory', 'disk' or 'off', not {mode!r}")
        if mode == "disk" and directory is None:
            raise ConfigError("snapshots='disk' needs snapshot_dir")
        self.mode = mode
        self.directory = Path(directory) if directory is not None else None
        self._items: list[dict[str, torch.Tensor] | Path] = []

    def add(self, module: torch.nn.Module) -> None:
        if self.mode == "off":
            return
        state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        if self.mode == "memory":
            self._items.append(state)
            return
        assert self.directory is not None
        path = self.directory / f"epoch_{len(self._items) + 1:04d}.pt"
        write_with(path, lambda tmp: torch.save(state, tmp))
        self._items.append(path)

    def __len__(self) -> int:
        return len(self._items)

    def paths(self) -> list[Path]:
        """The snapshot files so far (``"disk"`` mode; empty otherwise)."""
        return [item for item in self._items if isinstance(item, Path)]

    def restore(self, items: Sequence[dict[str, torch.Tensor] | Path]) -> None:
        """Take the snapshots of the epochs before a resumed fit (weights, or files in ``"disk"`` mode)."""
        self._items = list(items)

    def __getitem__(self, epoch_index: int) -> dict[str, torch.Tensor]:
        item = self._items[epoch_index]
        if isinstance(item, Path):
            return torch.load(item, map_location="cpu", weights_only=True)
        return copy.copy(item)


class TrainingProgress:
    """Progress over epochs with the latest losses: a rich bar on a terminal, plain lines otherwise.

    A batch job's log is not a terminal, and a live bar writes nothing to it until the end; there
    each epoch may print one plain line to stderr (``name: epoch 12/40  elapsed 0:01:23  g 0.701``),
    at most one per ``interval`` seconds and always the last epoch. ``start`` is the number of
    epochs already done (a resumed fit). Silent when disabled.
    """

    def __init__(self, total: int, description: str, enabled: bool = True, start: int = 0,
                 interval: float = 10.0):
        self.enabled = enabled
        self.total = total
        self.description = description
        self.done = start
        self.interval = interval
        self._progress: Progress | None = None
        self._plain = False

    def __enter__(self) -> TrainingProgress:
        if not self.enabled:
            return self
        console = Console(stderr=True)
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.done, losses="")
        else:
            self._plain = True
            self._started = self._printed = time.monotonic()
        return self

    def advance(self, **losses: float) -> None:
        self.done += 1
        text = "  ".join(f"{k} {v:.3f}" for k, v in losses.items())
        if self._progress is not None:
            self._progress.update(self._task, advance=1, losses=text)
        elif self._plain:
            now = time.monotonic()
            if now - self._printed >= self.interval or self.done >= self.total:
                self._printed = now
                elapsed = datetime.timedelta(seconds=round(now - self._started))
                print(f"{self.description}: epoch {self.done}/{self.total}  elapsed {elapsed}  {text}".rstrip(),
                      file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


class CategoricalNoise:
    """Turn softmax-span logits into draws: add Gumbel noise so that ``argmax`` samples a category.

    A generator trained through Gumbel-softmax emits logits whose *draws* have the right
    frequencies; a plain argmax of those logits would erase every rare category (3 % missing
    visits, a 10 % dropout) — the sampler must draw, as CTGAN does. Two-way spans get the
    equivalent logistic noise on one side (one logarithm instead of four).
    """

    def __init__(self, spans: Sequence[Span], device: torch.device):
        softmax = [s for s in spans if s.activation == "softmax"]
        self.pairs = torch.tensor([s.start + 1 for s in softmax if s.dim == 2], dtype=torch.long, device=device)
        wide = [s.start + k for s in softmax if s.dim > 2 for k in range(s.dim)]
        self.wide = torch.tensor(wide, dtype=torch.long, device=device)

    def __call__(self, logits_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Perturb feature-major logits (features × rows) in place; returns them."""
        n = logits_t.shape[1]
        eps = torch.finfo(logits_t.dtype).tiny
        if self.pairs.numel():
            u = torch.rand(self.pairs.numel(), n, generator=generator, device=logits_t.device).clamp_(eps, 1 - 1e-7)
            logits_t[self.pairs] += torch.log(u) - torch.log1p(-u)
        if self.wide.numel():
            u = torch.rand(self.wide.numel(), n, generator=generator, device=logits_t.device).clamp_(eps, 1 - 1e-7)
            logits_t[self.wide] -= torch.log(-torch.log(u))
        return logits_t
