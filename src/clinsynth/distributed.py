"""One model trained by several processes that ``torchrun`` started: the process group, and nothing else.

``torchrun --nproc_per_node N -m clinsynth fit …`` starts N copies of the command with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address) in their environment. Every copy
reads the table and trains the same model; this module makes them one data-parallel training:

* **the group** — opened on the first collective call, with the backend that fits the device the
  model chose (gloo on CPU, NCCL on CUDA; ``backend_for``), each CUDA process on its own GPU
  (``LOCAL_RANK``); :func:`finish` waits for every process and closes it;
* **the data** — every process draws the *same* global batch (same seed, the same Poisson sample
  or the same shuffled batch as one process would) and keeps its share, ``batch[rank::world]``
  (:func:`shard`). The union of the shares is the global batch, so the sampling the accountant
  assumes (each record in each step independently with rate q = expected global batch / n) is
  exactly the one-process sampling, split. (Opacus' ``DistributedUniformWithReplacementSampler``
  has each process sample its own part of the records at rate q instead: the same distribution,
  but not the one-process batches.) Each process holds the whole table: the work is split, not
  the memory;
* **the gradient** — what Opacus does in ``DifferentiallyPrivateDistributedDataParallel`` (the
  starting weights broadcast from rank 0: :func:`broadcast`) and ``DistributedDPOptimizer``
  (each process clips its own records; Gaussian noise is added on rank 0 only; the sums are
  all-reduced and divided by the expected *global* batch: :func:`reduce_private`). Noise is thus
  added exactly once per step for the global batch, and the ledger, charged before training with
  the global rate, is the one-process ledger. Without DP, :func:`average_gradients` is what
  ``DistributedDataParallel`` does (the mean of the processes' mean gradients). Fake records and
  the generator's steps read no real record: every process computes them alike from the same seed,
  so the generator needs no communication, and :func:`check_in_sync` checks at the end that the
  processes hold the same weights (a checksum per tensor); what a network draws on real records comes from a stream per
  rank (:func:`own_stream`);
* **the output** — only rank 0 writes the bundle and prints (:func:`is_writer`).

torch's ``DistributedDataParallel`` wrapper is not used: DP-SGD here (``privacy/dpsgd.py``) runs
two backward passes per step (per-record norms, then the clipped sum) and a hook-free twin of the
discriminator for fake records, and DDP's reducer would all-reduce the unclipped first pass.

In one process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) every function here does nothing, so the
same training code serves both. Python users under torchrun call :func:`finish` at the end.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clinsynth.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Launch:
    """Where this process stands among the processes of one training (torchrun's environment)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a whole number; "
                          "start several processes with torchrun, which sets it") from None


def launch() -> Launch:
    """This process's rank, the number of processes and its rank on this machine, from torchrun's
    environment (one process when it is absent)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} do not fit (need 0 ≤ RANK < WORLD_SIZE); "
                          "start several processes with torchrun, which sets both")
    return Launch(rank, world, local)


def active() -> bool:
    """True when this process is one of several training one model."""
    return launch().active


def is_writer() -> bool:
    """True for the one process that writes the bundle and prints (rank 0)."""
    return launch().rank == 0


def backend_for(device: torch.device) -> str:
    """The collective backend for a device: NCCL between GPUs, gloo on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def device_for(device: torch.device) -> torch.device:
    """The device of this process: under torchrun, CUDA without an index is the GPU ``LOCAL_RANK``."""
    import torch

    here = launch()
    if here.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", here.local_rank % max(torch.cuda.device_count(), 1))
    return device


def _group(device: torch.device) -> bool:
    """Open the process group for ``device`` if this is one of several processes; True when there is one."""
    import torch.distributed as dist

    if not active():
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device_for(device))
        dist.init_process_group(backend=backend_for(device))
    return True


def finish() -> None:
    """Wait for every process, then close the group (nothing when none was opened)."""
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(batches: Iterable[np.ndarray], *, private: bool = False) -> Iterator[np.ndarray]:
    """This process's share of each global batch of row indices: every ``world``-th row from its rank.

    Without DP (``private`` False) a batch has a fixed size, and one smaller than the number of
    processes is refused (:class:`ConfigError`): a process with no record would average a 0/0 loss
    into every process's weights. It is refused rather than padded, since giving each process a
    record would make the global batch differ from the one-process batch the module promises. A
    Poisson batch under DP may be that small or empty by chance; each share is kept as it is (an
    empty share still adds its noise and takes part in the all-reduce)."""
    here = launch()
    if not here.active:
        yield from batches
        return
    for rows in batches:
        if not private and len(rows) < here.world_size:
            raise ConfigError(f"a global batch of {len(rows)} record(s) cannot be split over {here.world_size} "
                              f"training processes (one would get none): set the model's batch_size to at least "
                              f"{here.world_size}, or start at most {max(len(rows), 1)} process(es) with torchrun")
        yield rows[here.rank::here.world_size]


def own_stream(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` on this process's share of real records, drawing from a random stream of its own.

    What a network draws on real records (a VAE's reparametrisation noise) is per rank: the same
    stream in two processes would give the k-th record of each the same draws, and shares of
    different sizes would move the processes' global streams apart — while fake records and the
    generator's steps rely on that global stream being the same everywhere. So each call runs under
    a forked RNG seeded by (the model's seed, rank, call). One process: ``forward`` itself.
    """
    here = launch()
    if not here.active:
        return forward
    import torch

    base = torch.initial_seed()  # the model's seed (``training.seeded``)
    calls = itertools.count()

    def run(*inputs: Any) -> Any:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else []):
            torch.manual_seed(((base * 1_000_003 + here.rank) * 1_000_003 + next(calls)) % 2**63)
            return forward(*inputs)
    return run


def _params(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    return [p for m in modules for p in m.parameters()]


def broadcast(module: nn.Module) -> None:
    """Give every process rank 0's weights (what Opacus' DPDDP does when it wraps a module)."""
    params = _params([module])
    if not params or not _group(params[0].device):
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, 0)


def _all_reduce_sum(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The element-wise sums over the processes, in one collective call."""
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Each parameter's ``.grad`` averaged over the processes (DistributedDataParallel's step;
    a process without a gradient for a parameter counts zero)."""
    params = [p for p in params if p.requires_grad]
    if not params or not _group(params[0].device):
        return
    import torch

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    world = launch().world_size
    for p, total in zip(params, _all_reduce_sum(grads)):
        p.grad = total / world


def noise_here() -> bool:
    """True where DP-SGD's Gaussian noise is drawn: rank 0 only, so it is added once per global step."""
    return launch().rank == 0


def reduce_private(params: Sequence[torch.Tensor], public: Sequence[torch.Tensor | None],
                   private: Sequence[torch.Tensor], divisor: float) -> None:
    """Set each ``.grad`` to mean(public) + Σ private / ``divisor`` over the processes.

    ``private`` is each process's clipped sum (rank 0's with the noise), ``divisor`` the expected
    global batch; ``public`` the gradient of the part that reads no real record (fake records),
    the same in every process. In one process: public + private / divisor.
    """
    if not params or not _group(params[0].device):
        for p, before, total in zip(params, public, private):
            total = total / divisor
            p.grad = total if before is None else before + total
        return
    import torch

    world = launch().world_size
    local = [(before / world if before is not None else torch.zeros_like(p)) + total / divisor
             for p, before, total in zip(params, public, private)]
    for p, grad in zip(params, _all_reduce_sum(local)):
        p.grad = grad


def check_in_sync(modules: Iterable[nn.Module], what: str) -> None:
    """Raise when the processes ended with different weights (a replicated step that was not)."""
    params = _params(modules)
    if not params or not _group(params[0].device):
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        mine = torch.stack([p.detach().double().sum() for p in params])
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"{what}: the {launch().world_size} training processes ended with different weights; "
                           "a step that every process should compute alike did not (a bug: please report it)")
