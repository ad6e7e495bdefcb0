"""Adapters of the benchmark's tools for ``bench/run_cell.py``.

Each adapter module imports its tool lazily (inside its functions) and offers::

    SYNTHESIZERS: dict[str, dict]    # name -> {"dp": bool, ...}
    def version() -> str
    def fit(train, meta, synthesizer, epsilon, delta, seed, params) -> tuple[model, dict]
    def sample(model, n, seed) -> pandas.DataFrame

Optional: ``CHECK_PARAMS`` (synthesizer -> small settings for ``run_cell.py --check``);
in the effective params returned by ``fit``, ``"delta"`` (the δ the tool used) and
``"_notes"`` (a list of strings that go into result.json's notes).
"""
from __future__ import annotations

import importlib

TOOLS = {
    "sdv": "adapters.sdv",
    "smartnoise": "adapters.smartnoise",
    "clinsynth": "adapters.clinsynth",
    "mostlyai": "adapters.mostlyai",
}


def load_adapter(tool: str):
    """The adapter module of ``tool`` (importing it does not import the tool)."""
    try:
        module = TOOLS[tool]
    except KeyError:
        raise ValueError(f"unknown tool {tool!r}; known: {sorted(TOOLS)}") from None
    return importlib.import_module(module)
