"""The three kinds of data clinsynth models, and which one a given input is.

One place for the question "is this a table, a code matrix or patients with visits?", asked by
the model families' tags (``models/tags.py``), ``auto``, the pipeline and the evaluation.
"""
from __future__ import annotations

import sys
from typing import Any

KINDS = ("table", "codes", "patients")
#: how a message names each kind of data: one, and many
ONE = {"table": "an ordinary table (one row per record)", "codes": "an EHR code matrix",
       "patients": "a long-format table (one row per visit)"}
MANY = {"table": "ordinary tables", "codes": "EHR code matrices", "patients": "long-format tables (patients and visits)"}


def data_kind(data: Any, schema: Any = None) -> str:
    """The kind of ``data``: "codes" for a CodeMatrix, "patients" for a frame whose ``schema`` is
    long format (names patient and time columns), else "table"."""
    ehr = sys.modules.get("clinsynth.data.ehr")  # a CodeMatrix exists only once its module is imported
    if ehr is not None and isinstance(data, ehr.CodeMatrix):
        return "codes"
    if schema is not None and getattr(schema, "is_long", False):
        return "patients"
    return "table"

