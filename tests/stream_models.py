"""A model for the streamed-sampling tests that fails on one partition: importable by name, so a
spawned worker process can unpickle it."""
from __future__ import annotations

from typing import Any


class FailsOnSeed:
    """Wraps a fitted model; ``sample`` raises when asked for ``bad_seed`` (one row group's seed)."""

    def __init__(self, model: Any, bad_seed: int):
        self.model, self.bad_seed = model, bad_seed
        self.name, self.schema_ = model.name, model.schema_

    def sample(self, n: int, conditions: Any = None, seed: int | None = None) -> Any:
        if seed == self.bad_seed:
            raise RuntimeError("planted failure in one partition")
        return self.model.sample(n, conditions=conditions, seed=seed)
