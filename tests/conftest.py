"""Shared fixtures: the demo release is built once per test session and read by several files."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_release(tmp_path_factory):
    """`clinsynth demo` at its defaults: the simulated trial through the whole release pipeline."""
    from clinsynth.pipeline import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"), progress=False)
