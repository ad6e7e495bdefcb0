"""clinsynth: synthetic twins of clinical tables, with differential privacy and a release report.

``import clinsynth`` loads pandas-level code only; PyTorch is imported when a model is built.
"""
from __future__ import annotations

from clinsynth.errors import (
    ClinsynthError,
    ConfigError,
    InputError,
    NotFittedError,
    PrivacyBudgetError,
    SchemaError,
)
from clinsynth import distributed, evaluate
from clinsynth.data.ehr import CodeMatrix, attach_static, read_long, to_long, write_long
from clinsynth.models.registry import create, hyperparameters, list_models, load
from clinsynth.privacy.budget import Privacy
from clinsynth.schema import CodeBlock, ColumnSpec, LongitudinalGroup, Schema
from clinsynth.streaming import sample_to_parquet

__version__ = "0.1.0"

__all__ = [
    "ClinsynthError", "ConfigError", "InputError", "NotFittedError", "PrivacyBudgetError", "SchemaError",
    "CodeBlock", "CodeMatrix", "ColumnSpec", "LongitudinalGroup", "Privacy", "Schema", "attach_static", "create",
    "hyperparameters",
    "read_long", "sample_to_parquet", "to_long", "write_long", "distributed", "evaluate", "list_models", "load", "__version__",
]
