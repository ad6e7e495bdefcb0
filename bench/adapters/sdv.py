"""SDV adapter (GaussianCopula, CTGAN, TVAE on tables; PARSynthesizer on a long table of visits,
shaped in ``adapters/sdv_par.py``; none of them differentially private).

Facts this relies on (SDV 2.0, read from its source in the peer venv):
- ``Metadata.load_from_dict`` takes a V2 dict; a numerical column may carry
  ``range_min``/``range_max``/``decimal_places``, a categorical one
  ``range_values``, any column ``range_is_nullable``. SDV uses these to validate
  the training data; the synthetic data still stays inside the *training* data's
  range (``enforce_min_max_values=True``, the default) and only holds the
  categories seen in training. We pass the public bounds and category lists, so
  a training table outside them fails loudly.
- Missing values are SDV's own business: numerical columns go through RDT's
  FloatFormatter(missing_value_replacement='mean', missing_value_generation='random'):
  nulls are imputed by the mean for modelling and put back at the observed rate,
  at random; categorical nulls are a category of their own.
- ``fit`` takes ``{table_name: DataFrame}`` and ``sample`` returns
  ``{table_name: DataFrame}`` in SDV 2.x (a DataFrame in 1.x; both handled).
- Sampling randomness: the synthesizer seeds its model's generators with a fixed
  seed on the first sample after fit; we reseed it with ``--seed`` through its
  ``_set_random_state`` (an SDV internal that ``reset_sampling`` also uses).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from adapters import sdv_par

TABLE = "train"

SYNTHESIZERS = {
    "gaussiancopula": {"dp": False, "class": "GaussianCopulaSynthesizer"},
    "ctgan": {"dp": False, "class": "CTGANSynthesizer"},
    "tvae": {"dp": False, "class": "TVAESynthesizer"},
    "par": {"dp": False, "class": "PARSynthesizer", "long": True},  # long tables only (meta["patient"])
}

# run_cell.py --check: tiny runs for a smoke test (NOT the documented defaults)
CHECK_PARAMS = {
    "gaussiancopula": {},
    "ctgan": {"epochs": 2},
    "tvae": {"epochs": 2},
    "par": {"epochs": 1},
}


def version() -> str:
    import sdv

    return str(sdv.__version__)


def _metadata_dict(meta: dict) -> dict:
    cols = {}
    for c in meta["columns"]:
        kind = c["kind"]
        if kind == "id":
            continue  # a long table's patient id: sdv_par.metadata_dict declares it
        if kind in ("categorical", "binary"):
            d = {"sdtype": "categorical", "range_values": [str(v) for v in c["categories"]]}
        else:
            d = {"sdtype": "numerical", "range_min": float(c["lower"]), "range_max": float(c["upper"])}
            if kind == "integer":
                d["decimal_places"] = 0
        d["range_is_nullable"] = bool(c.get("nullable", False))
        cols[c["name"]] = d
    return {"METADATA_SPEC_VERSION": "V2", "tables": {TABLE: {"columns": cols}}, "relationships": []}


def _prepare(train: pd.DataFrame, meta: dict) -> pd.DataFrame:
    df = train.copy()
    for c in meta["columns"]:
        name = c["name"]
        if c["kind"] == "id":
            df[name] = df[name].astype(str)
        elif c["kind"] in ("categorical", "binary"):
            df[name] = df[name].astype(object).where(df[name].notna(), np.nan)
        else:
            df[name] = pd.to_numeric(df[name], errors="raise").astype("float64")
    return df


def _jsonable_params(p: dict) -> dict:
    out = {}
    for k, v in p.items():
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, (str, int, float, bool, list, dict)) or v is None:
            out[k] = v
        else:
            out[k] = repr(v)
    return out


def fit(train, meta, synthesizer, epsilon, delta, seed, params):
    if synthesizer not in SYNTHESIZERS:
        raise ValueError(f"sdv: unknown synthesizer {synthesizer!r}; known {sorted(SYNTHESIZERS)}")
    if epsilon is not None:
        raise ValueError(
            f"sdv's {synthesizer} is not differentially private: run it without --epsilon "
            f"(got epsilon={epsilon})"
        )
    long = bool(meta.get("patient"))
    if long != bool(SYNTHESIZERS[synthesizer].get("long")):
        raise ValueError(f"sdv's {synthesizer} models " + ("long tables of visits (meta.json names a patient column)"
                         if not long else "one row per record, not a long table of visits: use par"))
    import torch  # noqa: F401  (seeded by run_cell; CTGAN/TVAE/PAR need it)
    from sdv.metadata import Metadata

    kwargs = dict(params or {})
    for k in ("generator_dim", "discriminator_dim", "compress_dims", "decompress_dims"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = tuple(kwargs[k])
    if long:
        from sdv.sequential import PARSynthesizer

        metadata = Metadata.load_from_dict(sdv_par.metadata_dict(meta, _metadata_dict(meta)))
        kwargs.setdefault("cuda", False)
        model = PARSynthesizer(metadata, context_columns=sdv_par.context_columns(meta), **kwargs)
        data = sdv_par.prepare(train, meta, _prepare(train, meta))
    else:
        from sdv import single_table

        cls = getattr(single_table, SYNTHESIZERS[synthesizer]["class"])
        model = cls(Metadata.load_from_dict(_metadata_dict(meta)), **kwargs)
        data = _prepare(train, meta)
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit({sdv_par.TABLE if long else TABLE: data})
    seen = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    if any("does not cover the full range" in m for m in seen):
        notes.append("sdv: synthetic values stay inside the training data's range/categories "
                     "(enforce_min_max_values; extrapolating to the public bounds is not in open SDV)")
    notes.extend(f"sdv warning: {m}" for m in seen if "does not cover the full range" not in m)
    notes.append("sdv: missing values modelled by SDV itself (numerical: mean-imputed, missingness "
                 "regenerated at random at the observed rate; categorical: null is a category)")

    effective = _jsonable_params(model.get_parameters())
    effective.pop("metadata", None)
    effective["_notes"] = notes
    return model, effective


def sample(model, n, seed):
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if hasattr(model, "_set_random_state"):
        model._set_random_state(int(seed))
    if hasattr(model, "sample_sequences"):  # PAR: n whole sequences (patients with their visits)
        out = model.sample_sequences(num_sequences=int(n))
        return _clip_to_meta(next(iter(out.values())) if isinstance(out, dict) else out, model)
    out = model.sample(num_rows=int(n))
    if isinstance(out, dict):
        out = out[TABLE] if TABLE in out else next(iter(out.values()))
    return _clip_to_meta(out, model)


def _clip_to_meta(df: pd.DataFrame, model) -> pd.DataFrame:
    """Safety net: numeric values into the public bounds kept in the metadata
    (SDV already keeps them inside the training range)."""
    tables = model.get_metadata().to_dict()["tables"]
    meta = next(iter(tables.values()))["columns"]  # one table: "train", or PAR's "visits"
    df = df.copy()
    for name, d in meta.items():
        if d.get("sdtype") == "numerical" and name in df:
            lo, hi = d.get("range_min"), d.get("range_max")
            v = pd.to_numeric(df[name], errors="coerce").astype("float64")
            if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
                v = v.clip(lower=lo, upper=hi)
            df[name] = v
    return df
