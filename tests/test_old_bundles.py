"""Bundles saved by an earlier clinsynth still load, under their registry names, and sample as they did.

``tests/data/old_bundles/`` holds tiny bundles written on main at 5d1ae2d, before privacy became a
``Privacy`` object given to a model (issue 23, item 2): their ``config.json`` carries ε, δ, the
accountant and the facts' share as flat parameters of a ``dp-…`` class. Each must load through
``clinsynth.load``, keep its name and ledger, and draw the same records for the same seed (the
hashes were taken right after saving, on that code). ``visitrnn`` and ``dp-visitrnn`` were written at
416b4fc (``long_trial(240, 6, seed=3)``, one epoch, hidden 16), before visitrnn became a model of
the patients family given a ``Privacy`` (issue 21): the DP one with a flat ε as well;
``visitchain`` (bins 4, first_bins 2, parent_bins 2) and ``dp-visitchain`` at 9786cec
(``simulate_visits(400, seed=3, max_visits=8)``), before the chain was given its ``Privacy``.
"""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clinsynth
from clinsynth.data.ehr import CodeMatrix

OLD = Path(__file__).parent / "data" / "old_bundles"

#: name → (sample hash of 50 records at seed 4, ε of its budget or None)
RECORDED = {
    "dp-bayesnet": ("dec56b16e0e1e113", 2.0),
    "dp-acgan": ("1988b0105e837868", 2.0),
    "dp-vae": ("ce93eae91fe2cb3a", 2.0),
    "vae": ("56436a7bd7342ad5", None),
    "dp-visitrnn": ("dbf337e65b74aff0", 2.0),
    "visitrnn": ("a0fbd7ec727adc5c", None),
    "dp-visitchain": ("57a0a0792f9c7127", 2.0),
    "visitchain": ("5f354ad8cf7c66b2", None),
}


def digest(sample) -> str:
    h = hashlib.sha256()
    if isinstance(sample, CodeMatrix):
        for part in (sample.matrix.data, sample.matrix.indices, sample.matrix.indptr):
            h.update(np.ascontiguousarray(part).tobytes())
        sample = sample.static
    if sample is not None:
        h.update(pd.util.hash_pandas_object(sample, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", list(RECORDED))
def test_an_old_bundle_loads_keeps_its_name_and_samples_as_before(name, tmp_path):
    path = shutil.copytree(OLD / name, tmp_path / name)  # loading must not need to write, but never touch the originals
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model = clinsynth.load(path)
    want_hash, epsilon = RECORDED[name]
    assert model.name == name
    assert digest(model.sample(50, seed=4)) == want_hash
    if epsilon is None:
        assert getattr(model, "ledger_", None) is None
        assert model.get_params().get("privacy") is None
    else:
        assert model.ledger_.epsilon == epsilon and 0 < model.ledger_.spent() <= epsilon
        assert model.get_params()["privacy"].epsilon == epsilon


@pytest.mark.parametrize("name", list(RECORDED))
def test_an_old_bundle_saved_again_loads_again_the_same(name, tmp_path):
    model = clinsynth.load(OLD / name)
    again = clinsynth.load(model.save(tmp_path / "again"))
    assert again.name == name
    assert again.get_params() == model.get_params()
    assert digest(again.sample(50, seed=4)) == RECORDED[name][0]
