"""clinsynth behind the benchmark's adapter interface (``bench/run_cell.py`` calls it).

The benchmark hands every tool the same thing: a training frame (categorical and binary columns
as text, empty = missing) and ``meta.json`` (kinds, whole-dataset bounds and category lists,
declared public knowledge for every tool). Here that becomes a clinsynth schema whose bounds and
categories are ``public: true``, so a DP model spends nothing on them — as a peer that is given
the same bounds does not.

A wide EHR table (``meta["codes"]`` names its 0/1 code columns) goes to clinsynth's code models
as what they are built for: a sparse :class:`~clinsynth.data.ehr.CodeMatrix` with a declared
public vocabulary plus the ordinary columns (``attach_static``); samples come back as the same
wide table. Models run with their registry defaults: the benchmark compares defaults.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: benchmark name -> registry model and what it takes ("table": ordinary tables; "codes": a wide
#: table whose code columns become a CodeMatrix; both: either)
SYNTHESIZERS: dict[str, dict[str, Any]] = {
    "acgan": {"model": "acgan", "dp": False, "data": ("table",)},
    "vae": {"model": "vae", "dp": False, "data": ("table", "codes")},
    "medgan": {"model": "medgan", "dp": False, "data": ("codes",)},
    "dp-acgan": {"model": "dp-acgan", "dp": True, "data": ("table",)},
    "dp-vae": {"model": "dp-vae", "dp": True, "data": ("table", "codes")},
    "dp-medgan": {"model": "dp-medgan", "dp": True, "data": ("codes",)},
    "corgan": {"model": "corgan", "dp": False, "data": ("codes",)},
    "dp-corgan": {"model": "dp-corgan", "dp": True, "data": ("codes",)},
    "auto": {"model": "auto", "dp": None, "data": ("table", "codes", "long")},  # `clinsynth run` with no --model
    "codetree": {"model": "codetree", "dp": False, "data": ("codes",)},
    "dp-codetree": {"model": "dp-codetree", "dp": True, "data": ("codes",)},
    "bayesnet": {"model": "bayesnet", "dp": False, "data": ("table",)},
    "dp-bayesnet": {"model": "dp-bayesnet", "dp": True, "data": ("table",)},
}


def version() -> str:
    import clinsynth

    return clinsynth.__version__


def preload(dp: bool) -> None:
    """Import what a DP fit imports lazily (the privacy accountant: Opacus, hence PyTorch, ~3-4 s in a
    fresh process) before run_cell starts the fit's timer, as a peer's ``version()`` imports its
    PyTorch: fit times then compare fitting, not importing."""
    if dp:
        import opacus.accountants  # noqa: F401


@dataclass
class Fitted:
    """A fitted clinsynth model and how to turn its samples back into the benchmark's table."""

    model: Any
    columns: list[str]
    codes: list[str]  # empty: an ordinary table


# -- schema from meta -------------------------------------------------------------------------
def _public_spec(spec: Any, col: dict[str, Any]) -> Any:
    """The inferred column with the benchmark's kind, bounds and categories, declared public.

    The missing policy stays as inferred from the training split (a column missing only after
    a participant's dropout needs no indicator)."""
    kind = col["kind"]
    update: dict[str, Any] = {"kind": kind, "public": True}
    if kind in ("binary", "categorical"):
        update.update(categories=[str(c) for c in col["categories"]], bounds=None, decimals=None)
    else:
        update.update(categories=None, bounds=(float(col["lower"]), float(col["upper"])))
        if kind == "integer":
            update["decimals"] = 0
    return type(spec).model_validate({**spec.model_dump(), **update})  # validated, unlike model_copy


def table_schema(train: pd.DataFrame, meta: dict[str, Any], target: str | None) -> Any:
    """Inferred structure (missing policies, decimals, dtypes, visit groups), meta's public domain.

    A long table (meta.json names ``patient`` and ``time``) gets a long schema: its patient and time
    columns, each other column's level as clinsynth infers it (meta.json records the same), as
    ``clinsynth run --patient-col --time-col`` does."""
    from clinsynth.schema import Schema

    patient, time = meta.get("patient"), meta.get("time")
    inferred = Schema.infer(train, target=target, patient=patient, time=time)
    by_name = {c["name"]: c for c in meta["columns"]}
    columns = [spec if spec.name == patient else _public_spec(spec, by_name[spec.name]) for spec in inferred.columns]
    return Schema(columns=columns, target=target, longitudinal=inferred.longitudinal, patient=patient, time=time)


# -- wide table <-> code matrix ----------------------------------------------------------------
def to_code_matrix(train: pd.DataFrame, codes: list[str]) -> Any:
    """The "0"/"1" code columns as a sparse matrix with the ordinary columns attached."""
    import scipy.sparse as sp

    from clinsynth.data.ehr import CodeMatrix

    dense = (train[codes].astype(str).to_numpy() == "1").astype(np.float32)
    static = train.drop(columns=codes).reset_index(drop=True)
    return CodeMatrix(sp.csr_array(dense), tuple(codes), np.arange(len(train)), True,
                      static if static.shape[1] else None)


def from_code_matrix(synth: Any, columns: list[str], codes: list[str]) -> pd.DataFrame:
    """A sampled CodeMatrix back to the wide table, in the train's column order.

    Codes are "0"/"1" categoricals (text values; a code the model lacks is all "0"), each built
    from one contiguous row of a code-major 0/1 array filled from the sparse entries, with one
    shared dtype: building a thousand text columns value by value, or densifying the whole matrix
    as floats, costs more than sampling (20,000 rows × 1,000 codes: 1.2-2.2 s as text, 0.21 s
    through ``toarray``, ~10 ms this way)."""
    matrix = synth.matrix.tocsr()
    position = {c: j for j, c in enumerate(synth.vocabulary)}
    present = np.zeros((len(synth.vocabulary) + 1, synth.n_patients), dtype=np.int8)  # last row: absent
    rows = np.repeat(np.arange(synth.n_patients), np.diff(matrix.indptr))
    stored = matrix.data != 0  # an explicitly stored zero is no code
    present[matrix.indices[stored], rows[stored]] = 1
    dtype = pd.CategoricalDtype(["0", "1"])
    wide = pd.DataFrame({code: pd.Categorical.from_codes(present[position.get(code, -1)], dtype=dtype, validate=False)
                         for code in codes}, copy=False)
    static = synth.static if synth.static is not None else pd.DataFrame(index=range(synth.n_patients))
    return pd.concat([static.reset_index(drop=True), wide], axis=1)[columns]


# -- the interface ----------------------------------------------------------------------------------
def _value(text: Any) -> Any:
    """A ``--param`` value: JSON when it reads as JSON (5, 0.1, [64, 32], true), else the text."""
    if not isinstance(text, str):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def fit(train: pd.DataFrame, meta: dict[str, Any], synthesizer: str, epsilon: float | None, delta: float | None,
        seed: int, params: dict[str, Any]) -> tuple[Fitted, dict[str, Any]]:
    """Fit the registry model ``synthesizer`` with its defaults (``params`` override them)."""
    from clinsynth.data.io import jsonable
    from clinsynth.models.registry import create

    if synthesizer not in SYNTHESIZERS:
        raise ValueError(f"unknown clinsynth synthesizer {synthesizer!r}; choose from {', '.join(SYNTHESIZERS)}")
    entry = SYNTHESIZERS[synthesizer]
    if entry["dp"] is not None and entry["dp"] != (epsilon is not None):
        raise ValueError(f"{synthesizer} {'needs' if entry['dp'] else 'takes no'} --epsilon")
    codes = [c for c in meta.get("codes", []) if c in train.columns]
    data_kind = "codes" if codes else "long" if meta.get("patient") else "table"
    if data_kind not in entry["data"]:
        raise ValueError(f"{synthesizer} does not model {data_kind} tables")
    hyper = {k: _value(v) for k, v in params.items()}
    hyper.update(seed=seed, progress=False)
    if epsilon is not None:
        hyper.update(epsilon=float(epsilon), delta=delta)
    model = create(entry["model"], **hyper)
    if codes:
        from clinsynth.schema import CodeBlock, Schema

        data = to_code_matrix(train, codes)
        target = meta["target"] if meta["target"] not in codes else None
        static = table_schema(data.static, meta, target)
        schema = Schema(columns=static.columns, target=target, longitudinal=static.longitudinal,
                        codes=CodeBlock(vocabulary=codes, binary=True, public=True))
        fitted = model.fit(data, schema)
    else:
        fitted = model.fit(train.reset_index(drop=True), table_schema(train, meta, meta["target"]))
    model = fitted  # auto returns the model it chose
    effective = {k: jsonable(v) for k, v in model.resolved_params().items() if k != "progress"}
    effective.update(effective.pop("privacy", None) or {})  # ε, δ (as the ledger chose it), accountant, share: flat, as the store reads them
    if synthesizer == "auto":
        effective["model"] = model.name
    ledger = getattr(model, "ledger_", None)
    if ledger is not None:
        effective["epsilon_spent"] = round(float(ledger.spent()), 4)
        effective["delta"] = ledger.delta
    return Fitted(model, list(train.columns), codes), effective


def sample(fitted: Fitted, n: int, seed: int) -> pd.DataFrame:
    """``n`` synthetic rows (patients with their visits, for a long table) with the training table's
    columns (categories as text)."""
    out = fitted.model.sample(int(n), seed=seed)
    if fitted.codes:
        return from_code_matrix(out, fitted.columns, fitted.codes)
    return out if list(out.columns) == fitted.columns else out[fitted.columns]
