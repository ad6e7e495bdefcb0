"""SDV's PARSynthesizer on a long-format table (one row per visit): its metadata and data shaping.

Facts this relies on (SDV 2.0, read from ``sdv/sequential/par.py`` in the peer venv and SDV's
sequential docs):

- PAR models one table of sequences: the metadata names a ``sequence_key`` (the patient id, of
  sdtype ``id``) and a ``sequence_index`` (the visit day, numerical), and the synthesizer is told
  which columns are ``context_columns`` (constant within a sequence: the per-patient columns,
  meta.json's ``level: patient``). The context is modelled by a GaussianCopula, the visits by
  deepecho's PAR (a recurrent network over each sequence, conditioned on the context); the
  sequence index is modelled as the difference from the previous visit (first visit: its value,
  kept as context), so its times are cumulative sums of sampled gaps.
- ``sample_sequences(num_sequences)`` draws whole new sequences: new context rows and their
  visits, with new ids; ``sample`` (rows) is not offered for sequential synthesizers.
- Defaults: ``epochs`` 128, ``cuda`` True (the adapter sets False: CPU only here),
  ``enforce_min_max_values`` True (values stay inside the training data's range).
- No differential privacy.
"""
from __future__ import annotations

import pandas as pd

TABLE = "visits"


def context_columns(meta: dict) -> list[str]:
    """The per-patient columns (``level: patient``): PAR's context, constant within a sequence."""
    return [c["name"] for c in meta["columns"] if c.get("level") == "patient"]


def metadata_dict(meta: dict, base: dict) -> dict:
    """SDV V2 metadata of the visit table: ``base``'s column entries (the single-table adapter's,
    bounds and categories), the patient id as sdtype ``id`` and the sequence key, the time as the
    sequence index."""
    patient, time = meta["patient"], meta["time"]
    given = base["tables"][next(iter(base["tables"]))]["columns"]
    columns = {c["name"]: {"sdtype": "id"} if c["name"] == patient else given[c["name"]] for c in meta["columns"]}
    return {"METADATA_SPEC_VERSION": "V2", "relationships": [],
            "tables": {TABLE: {"columns": columns, "sequence_key": patient, "sequence_index": time}}}


def prepare(train: pd.DataFrame, meta: dict, prepared: pd.DataFrame) -> pd.DataFrame:
    """The visits as PAR reads them: ``prepared`` (the single-table shaping) with the patient id as
    text, rows ordered by patient and time."""
    patient, time = meta["patient"], meta["time"]
    out = prepared.copy()
    out[patient] = train[patient].astype(str).to_numpy()
    return out.sort_values([patient, time], kind="stable").reset_index(drop=True)
