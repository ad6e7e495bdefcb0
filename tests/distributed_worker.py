"""What a process spawned by tests/test_distributed.py runs: one DP-SGD gradient (few imports, so it starts fast)."""
from __future__ import annotations

import os

import numpy as np
import torch

from clinsynth import distributed


def dp_gradient() -> list[torch.Tensor]:
    """One DP-SGD gradient of a small network on 10 records (this process's share of them), with a
    public part on 6 fake records, as ``PrivateGradient`` leaves it in ``.grad``."""
    from torch import nn

    from clinsynth.privacy.dpsgd import PrivateGradient

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    real, fake = torch.randn(10, 4), torch.randn(6, 4)
    engine = PrivateGradient(net, noise_multiplier=1.0, max_grad_norm=0.5, expected_batch_size=10,
                             generator=torch.Generator().manual_seed(3))
    rows = next(distributed.shard([np.arange(10)]))
    engine.public(fake).mean().backward()
    engine.add_private_gradient((engine.forward_private(real[rows]) - 1.0).pow(2).sum(1))
    return [p.grad.clone() for p in net.parameters()]


def dp_gradient_process(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    grads = dp_gradient()
    apart = torch.nn.Linear(2, 1)
    with torch.no_grad():
        apart.weight.fill_(float(rank))  # the processes disagree
    try:
        distributed.check_in_sync([apart], "test")
        caught = False
    except RuntimeError:
        caught = True
    distributed.broadcast(apart)  # rank 0's weights everywhere
    distributed.check_in_sync([apart], "test")
    if rank == 0:
        torch.save({"grads": grads, "caught": caught, "broadcast": apart.weight.detach().clone()}, out)
    distributed.finish()
