"""Content hashes of what clinsynth reads: a table, a code matrix, a file.

One definition serves the release manifest (which input made a release) and a checkpoint's
fingerprint (which data a fit was resumed on), so the two can never disagree about "the same data".
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def table_hash(df: pd.DataFrame) -> str:
    """SHA-256 of a table's content as read (column names, then row hashes), independent of file format."""
    digest = hashlib.sha256("\x1f".join(map(str, df.columns)).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def codes_hash(codes: Any) -> str:
    """SHA-256 of a code matrix's content (vocabulary, ids, entries, ordinary columns),
    independent of the long format's row order."""
    digest = hashlib.sha256("\x1f".join(codes.vocabulary).encode())
    digest.update("\x1f".join(map(str, codes.patient_ids)).encode())
    for part in (codes.matrix.indptr, codes.matrix.indices, codes.matrix.data):
        digest.update(np.ascontiguousarray(part).tobytes())
    if codes.static is not None:
        digest.update(table_hash(codes.static).encode())
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
