"""smartnoise-synth adapter (AIM, MST, DP-CTGAN, PATE-CTGAN; all differentially private).

Facts this relies on (smartnoise-synth 1.0.8, read from its source in the peer venv):
- ``Synthesizer.create(name, epsilon=..., **hyperparameters)`` builds a synthesizer;
  ``fit(df, transformer=..., preprocessor_eps=...)`` trains it; ``sample(n)``
  returns a DataFrame with the original column names.
- A ``TableTransformer`` that is already fit is used as it is: the synthesizer
  then neither looks at the private data for the encoding nor spends budget on
  it. We build it from meta.json's PUBLIC bounds and category lists only (fit on
  a small table made from meta, never on the training data), so
  ``preprocessor_eps=0.0`` and no budget goes to bounds or category sets.
  - AIM and MST ("cube" style, as smartnoise infers for them): categorical and
    binary columns -> LabelTransformer; continuous columns -> BinTransformer(bins,
    lower, upper) with ``bins`` = 10, smartnoise's own default (``--param bins=N``);
    an integer column whose public range has at most ``bins`` values is kept
    exact (a LabelTransformer over every integer in the range), a wider one is
    binned like a continuous column. A binned value comes back as its bin's midpoint.
  - DP-CTGAN and PATE-CTGAN ("gan" style): categorical -> LabelTransformer +
    OneHotEncoder; numeric -> MinMaxTransformer(lower, upper) to [-1, 1].
- Missing values: smartnoise's own ``nullable`` option of its column transformers:
  a nullable categorical column gets a null category; a nullable numeric column
  gets a second output (a null indicator): a 2-valued attribute for AIM/MST, a
  second tanh output for the GANs. smartnoise's MinMaxTransformer decodes that
  indicator as "null only if exactly 1", which a tanh output never is, so as
  shipped the GANs would never produce a missing value; this adapter decodes it
  as null when it is above 0.5 (the midpoint of the 0/1 codes it was trained on),
  and says so in the notes.
- δ: all four take ``delta``; we pass meta["delta"] (AIM/MST default 1e-9, the
  GANs default 1/(n·sqrt(n))). AIM/MST convert (ε, δ) to zCDP ρ with OpenDP;
  DP-CTGAN uses Opacus 0.14's RDP accountant and stops when the spent ε (checked
  at the start of each epoch) exceeds the budget; PATE-CTGAN its moments accountant.
- Randomness: AIM/MST draw their measurement noise from OpenDP (a secure RNG that
  no seed controls); their sampling uses numpy's global RNG (seeded).
  DP-CTGAN/PATE-CTGAN's Discriminator constructor calls ``torch.manual_seed(0)``,
  so torch randomness after it (GAN noise, DP noise) is the same for every seed;
  the generator's init and numpy's batch sampling follow ``--seed``.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd

SYNTHESIZERS = {
    "aim": {"dp": True, "style": "cube"},
    "mst": {"dp": True, "style": "cube"},
    "dpctgan": {"dp": True, "style": "gan"},
    "patectgan": {"dp": True, "style": "gan"},
}

DEFAULT_BINS = 10  # smartnoise's BinTransformer default

# run_cell.py --check: tiny runs for a smoke test (NOT the documented defaults)
CHECK_PARAMS = {
    "aim": {"rounds_per_attribute": 1.5},
    "mst": {},
    "dpctgan": {"epochs": 2},
    "patectgan": {"teacher_iters": 1, "student_iters": 1},
}

# Adapter-level params (not smartnoise constructor arguments):
#   bins                 - bins of a continuous column for AIM/MST (default 10)
#   rounds_per_attribute - AIM only: rounds = this x the number of domain attributes
#                          (smartnoise's default is 16x). AIM measures every one-way
#                          marginal first at the per-round noise, so rounds below
#                          ~0.9 x attributes exhaust the budget at once (it then fails
#                          with "probabilities contain NaN").
_ADAPTER_PARAMS = ("bins", "rounds_per_attribute")


def version() -> str:
    from importlib import metadata

    import snsynth  # noqa: F401  (import the tool before run_cell's memory baseline)

    return metadata.version("smartnoise-synth")


_NULL_AWARE_MINMAX = None


def _null_aware_minmax():
    """MinMaxTransformer whose null indicator is decoded with a 0.5 threshold."""
    global _NULL_AWARE_MINMAX
    if _NULL_AWARE_MINMAX is None:
        from snsynth.transform import MinMaxTransformer

        class NullThresholdMinMaxTransformer(MinMaxTransformer):
            def _inverse_transform(self, val):
                if self.nullable:
                    v, flag = val
                    if flag is None or (isinstance(flag, float) and math.isnan(flag)) or float(flag) > 0.5:
                        return None
                    return super()._inverse_transform((v, 0))
                return super()._inverse_transform(val)

        _NULL_AWARE_MINMAX = NullThresholdMinMaxTransformer
    return _NULL_AWARE_MINMAX


def _build_transformer(meta: dict, style: str, bins: int):
    """A TableTransformer fit on public information only (meta.json)."""
    from snsynth.transform import (BinTransformer, ChainTransformer, LabelTransformer,
                                   OneHotEncoder, TableTransformer)

    transformers, public, described = [], {}, {}
    for c in meta["columns"]:
        name, kind, nullable = c["name"], c["kind"], bool(c.get("nullable", False))
        if kind in ("categorical", "binary"):
            values = [str(v) for v in c["categories"]]
            if style == "cube":
                t, d = LabelTransformer(nullable=nullable), f"label({len(values)})"
            else:
                t = ChainTransformer([LabelTransformer(nullable=nullable), OneHotEncoder()])
                d = f"onehot({len(values)})"
        else:
            lo, hi = float(c["lower"]), float(c["upper"])
            if style == "cube":
                if kind == "integer" and math.isfinite(lo) and math.isfinite(hi) and (math.floor(hi) - math.ceil(lo) + 1) <= bins:
                    values = [float(v) for v in range(int(math.ceil(lo)), int(math.floor(hi)) + 1)]
                    t, d = LabelTransformer(nullable=nullable), f"label(integers {values[0]:g}..{values[-1]:g})"
                else:
                    values = [lo, hi]
                    t, d = BinTransformer(bins=bins, lower=lo, upper=hi, nullable=nullable), f"bin({bins}, [{lo:g}, {hi:g}])"
            else:
                values = [lo, hi]
                t = _null_aware_minmax()(lower=lo, upper=hi, nullable=nullable)
                d = f"minmax([{lo:g}, {hi:g}] -> [-1, 1])"
        if nullable:
            values = values + [np.nan]
            d += " + null"
        transformers.append(t)
        public[name] = values
        described[name] = d
    rows = max(len(v) for v in public.values())
    frame = pd.DataFrame({k: [v[i % len(v)] for i in range(rows)] for k, v in public.items()})
    for c in meta["columns"]:
        if c["kind"] in ("categorical", "binary"):
            frame[c["name"]] = frame[c["name"]].astype(object)
        else:
            frame[c["name"]] = frame[c["name"]].astype("float64")
    tt = TableTransformer(transformers)
    tt.fit(frame, epsilon=0.0)
    if not tt.fit_complete:
        raise RuntimeError("smartnoise: the public table transformer did not finish fitting")
    return tt, described


def _prepare(train: pd.DataFrame, meta: dict, label_integers: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """Training frame in the form the transformers expect; clear errors for data
    that contradicts the public meta (unknown category, null in a non-nullable
    column). Numeric values outside the public bounds are clamped (as
    smartnoise's own transformers do) and counted."""
    df = train.copy()
    notes = []
    for c in meta["columns"]:
        name = c["name"]
        s = df[name]
        miss = s.isna()
        if miss.any() and not c.get("nullable", False):
            raise ValueError(f"column {name!r} has {int(miss.sum())} missing values but meta says nullable=false")
        if c["kind"] in ("categorical", "binary"):
            s = s.astype(object).where(~miss, np.nan)
            bad = set(s[~miss].map(str)) - set(map(str, c["categories"]))
            if bad:
                raise ValueError(f"column {name!r} has values outside its public categories: {sorted(bad)[:10]}")
            df[name] = s.map(lambda x: x if isinstance(x, float) else str(x))
        else:
            v = pd.to_numeric(s, errors="raise").astype("float64")
            lo, hi = float(c["lower"]), float(c["upper"])
            out = ((v < lo) | (v > hi)) & ~miss
            if out.any():
                notes.append(f"smartnoise: {int(out.sum())} training values of {name!r} outside the public bounds clamped")
                v = v.clip(lower=lo, upper=hi)
            if name in label_integers:
                v = v.round()
            df[name] = v
    return df, notes


def _constructor_defaults(cls) -> dict:
    out = {}
    for k, p in inspect.signature(cls.__init__).parameters.items():
        if k == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is inspect.Parameter.empty:
            continue
        out[k] = p.default
    return out


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool, list, dict)) or v is None:
        return v
    return repr(v)


def fit(train, meta, synthesizer, epsilon, delta, seed, params):
    if synthesizer not in SYNTHESIZERS:
        raise ValueError(f"smartnoise: unknown synthesizer {synthesizer!r}; known {sorted(SYNTHESIZERS)}")
    if epsilon is None or not float(epsilon) > 0:
        raise ValueError(f"smartnoise's {synthesizer} is differentially private: --epsilon > 0 is required")
    import torch
    from snsynth import Synthesizer
    from snsynth.base import synth_map

    style = SYNTHESIZERS[synthesizer]["style"]
    params = dict(params or {})
    bins = int(params.pop("bins", DEFAULT_BINS))
    if bins < 2:
        raise ValueError("bins must be >= 2")
    rounds_per_attribute = params.pop("rounds_per_attribute", None)
    if rounds_per_attribute is not None and synthesizer != "aim":
        raise ValueError("rounds_per_attribute is an AIM parameter")
    if rounds_per_attribute is not None and "rounds" in params:
        raise ValueError("give AIM either rounds or rounds_per_attribute, not both")

    kwargs = {"verbose": False}
    if delta is not None:
        kwargs["delta"] = float(delta)
    kwargs.update(params)
    for k in ("generator_dim", "discriminator_dim"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = tuple(kwargs[k])
    if synthesizer in ("dpctgan", "patectgan") and "cuda" not in kwargs and not torch.cuda.is_available():
        kwargs["cuda"] = False

    pre_notes = []
    if synthesizer == "dpctgan" and "batch_size" not in params:
        # Opacus 0.14 refuses a sampling rate batch_size / n > 1, so the default
        # batch of 500 fails on a table of fewer than 500 rows: take the largest
        # even batch that fits (DPCTGAN asserts an even batch).
        default_batch = 500
        if len(train) < default_batch:
            kwargs["batch_size"] = max(2, len(train) - len(train) % 2)
            pre_notes.append(f"dpctgan: default batch_size {default_batch} > {len(train)} training rows "
                             f"(Opacus rejects a sampling rate > 1): batch_size set to {kwargs['batch_size']}")

    mod_name, cls_name = synth_map[synthesizer]["class"].rsplit(".", 1)
    cls = getattr(__import__(mod_name, fromlist=[cls_name]), cls_name)
    unknown = [k for k in kwargs if k not in _constructor_defaults(cls)]
    if unknown:
        raise ValueError(f"smartnoise {synthesizer}: unknown hyperparameters {unknown}; "
                         f"it takes {sorted(_constructor_defaults(cls))} (+ adapter: {list(_ADAPTER_PARAMS)})")
    tt, described = _build_transformer(meta, style, bins)
    if synthesizer == "aim":
        n_attributes = len(tt.cardinality)  # AIM's domain: one attribute per transformer output
        if rounds_per_attribute is not None:
            kwargs["rounds"] = max(1, int(round(float(rounds_per_attribute) * n_attributes)))
        elif kwargs.get("rounds") is None:
            kwargs["rounds"] = 16 * n_attributes  # what AIM itself does when rounds=None
    model = Synthesizer.create(synthesizer, epsilon=float(epsilon), **kwargs)
    label_integers = {name for name, d in described.items() if d.startswith("label(integers")}
    data, notes = _prepare(train, meta, label_integers)
    notes = pre_notes + notes

    model.fit(data, transformer=tt, preprocessor_eps=0.0)

    effective = {k: _plain(v) for k, v in _constructor_defaults(cls).items()}
    effective.update({k: _plain(v) for k, v in kwargs.items()})
    effective["epsilon"] = float(epsilon)
    effective["delta"] = float(getattr(model, "delta", kwargs.get("delta")))
    effective["preprocessor_eps"] = 0.0
    effective["transformer"] = described
    if style == "cube":
        effective["bins"] = bins
    if rounds_per_attribute is not None:
        effective["rounds_per_attribute"] = rounds_per_attribute
    nullable_cols = [c["name"] for c in meta["columns"] if c.get("nullable")]
    if nullable_cols:
        notes.append(f"smartnoise: nullable=True transformers (null category / null indicator) for {nullable_cols}")
        if style == "gan":
            notes.append("smartnoise: GAN null indicator decoded as null when > 0.5 (smartnoise's own MinMaxTransformer "
                         "only when exactly 1, which tanh output never is)")
    notes.append("smartnoise: encoding fit on meta.json's public bounds/categories only; preprocessor_eps=0")
    if style == "cube":
        notes.append("smartnoise: measurement noise from OpenDP's secure RNG: not reproducible by --seed")
    else:
        notes.append("smartnoise: its Discriminator() calls torch.manual_seed(0): torch randomness after it is the same for every --seed")
    notes.extend(_privacy_notes(model, synthesizer, len(data), effective))
    effective["_notes"] = notes
    return model, effective


def _privacy_notes(model, synthesizer, n_rows, effective) -> list[str]:
    out = []
    if synthesizer == "patectgan":
        out.append("patectgan: its epochs argument is unused; it trains until its moments accountant reaches epsilon "
                   "(budget checked before each iteration)")
    if synthesizer == "dpctgan":
        eps_list = list(getattr(model, "epsilon_list", []) or [])
        if eps_list:
            target = float(model.epsilon)
            ran = len(eps_list) - 1 if eps_list[-1] > target else len(eps_list)
            effective["epochs_trained"] = ran
            effective["epsilon_accountant_at_last_check"] = float(eps_list[-1])
            out.append(f"dpctgan: trained {ran} of {model._epochs} epochs; Opacus accountant at its last check: "
                       f"eps={eps_list[-1]:.4g} (delta={model.delta:g}; checked before each epoch)")
            spent = _dpctgan_spent(model, n_rows, ran)
            check = _dpctgan_spent(model, n_rows, len(eps_list) - 1)
            if check is not None and not math.isclose(check, float(eps_list[-1]), rel_tol=1e-3, abs_tol=1e-6):
                out.append(f"dpctgan: our re-computation of the accountant ({check:.4g}) does not match "
                           f"smartnoise's ({eps_list[-1]:.4g}); epsilon_spent_after_training is unreliable")
            if spent is not None:
                effective["epsilon_spent_after_training"] = spent
                if spent > target * (1 + 1e-6):
                    out.append(f"dpctgan: after the epochs it trained, the accountant gives eps={spent:.4g} > budget {target:g} "
                               "(smartnoise checks the budget before an epoch, not after)")
    return out


def _dpctgan_spent(model, n_rows, epochs) -> float | None:
    """ε after ``epochs`` epochs by Opacus 0.14's RDP analysis, with the same
    orders, sampling rate and noise that smartnoise's PrivacyEngine used."""
    try:
        from opacus import privacy_analysis

        q = model._batch_size / n_rows
        # with the cross-entropy loss smartnoise calls optimizerD.step() twice a
        # batch (fake, then real), and each is an accounted DP-SGD step
        per_batch = 2 if getattr(model, "loss", "cross_entropy") == "cross_entropy" else 1
        steps = per_batch * epochs * max(n_rows // model._batch_size, 1)
        if steps == 0:
            return 0.0
        orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
        rdp = privacy_analysis.compute_rdp(q, model.sigma, steps, orders)
        eps, _ = privacy_analysis.get_privacy_spent(orders, rdp, model.delta)
        return float(eps)
    except Exception:
        return None


def sample(model, n, seed):
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    out = model.sample(int(n))
    if not isinstance(out, pd.DataFrame):
        out = pd.DataFrame(out, columns=list(getattr(model, "_transformer")._columns))
    return out
