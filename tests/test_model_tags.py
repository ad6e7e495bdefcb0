"""Model families are declared as tags (``models/tags.py``) and chosen by them.

Every registered model says which kind of data it models (a table, a code matrix, patients with
visits), readable from its registry entry without building it; the CLI, the pipeline and ``auto``
choose by that tag, and each family's base class carries only its own contract.
"""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from clinsynth.data.ehr import read_long
from clinsynth.data.kinds import KINDS, data_kind
from clinsynth.errors import ConfigError, DataKindError, InputError
from clinsynth.models.auto import resolve
from clinsynth.models.base import SynthModel, TableModel
from clinsynth.models.long_base import PatientModel
from clinsynth.models.records import CodeModel
from clinsynth.models.registry import REGISTRY, InputFacts, choose_model, models_of
from clinsynth.models.tags import ModelTags
from clinsynth.schema import Schema

FAMILIES = {"acgan": "table", "bayesnet": "table", "medgan": "codes", "corgan": "codes", "vae": "codes",
            "codetree": "codes", "visitchain": "patients", "visitrnn": "patients"}


def test_every_registered_model_declares_its_family():
    for name, entry in REGISTRY.items():
        if name == "auto":
            continue
        tags = entry.tags()
        assert isinstance(tags, ModelTags) and tags.input in KINDS, name
        assert tags.input == FAMILIES[name.removeprefix("dp-")], name
    assert REGISTRY["vae"].tags().inputs == ("codes", "table")  # the VAE also fits ordinary tables
    assert models_of("patients") == ["visitchain", "dp-visitchain", "visitrnn", "dp-visitrnn"]
    assert "vae" in models_of("table") and "medgan" not in models_of("table")


def test_a_tag_names_a_known_kind():
    with pytest.raises(ValueError, match="table, codes, patients"):
        ModelTags("rows")


def test_each_family_base_carries_only_its_own_contract():
    """The code family does not inherit the table contract only to stub it out, and the patients'
    base has no unreachable table hook."""
    for hook in ("_fit", "_sample", "_default_class_probs", "_prepare", "_conform"):
        assert not hasattr(CodeModel, hook), hook
    assert not hasattr(PatientModel, "_fit")
    assert not hasattr(SynthModel, "_fit") and not hasattr(SynthModel, "_prepare")
    assert inspect.isabstract(TableModel) and {"_fit", "_sample", "_default_class_probs"} <= TableModel.__abstractmethods__
    for source in (inspect.getsource(CodeModel), inspect.getsource(PatientModel)):
        assert "raise TypeError" not in source and "raise NotImplementedError" not in source
    assert CodeModel.tags.input == "codes" and PatientModel.tags.input == "patients" and TableModel.tags.input == "table"


def test_data_kind_reads_the_data_and_its_schema():
    visits = pd.DataFrame({"pid": [1, 1, 2, 2], "day": [0, 3, 0, 5], "x": [1.0, 2.0, 3.0, 4.0]})
    codes = read_long(pd.DataFrame({"patient_id": [1, 1, 2], "code": ["a", "b", "a"]}))
    assert data_kind(visits) == "table"
    assert data_kind(visits, Schema.infer(visits, patient="pid", time="day")) == "patients"
    assert data_kind(codes) == "codes" and data_kind(codes, Schema.infer(visits)) == "codes"


def test_auto_chooses_a_model_of_the_inputs_family():
    for kind in KINDS:
        for epsilon in (None, 1.0):
            choice = choose_model(InputFacts(kind, 1_000, 10, epsilon=epsilon))
            assert REGISTRY[choice.name].tags().input == kind, (kind, epsilon)


def test_a_named_model_of_another_family_is_refused_before_any_fit():
    table = pd.DataFrame({"a": np.arange(20.0), "arm": [0, 1] * 10})
    with pytest.raises(ConfigError, match=r"^medgan models EHR code matrices, not an ordinary table .*bayesnet"):
        resolve("medgan", table, Schema.infer(table, target="arm"), None)
    visits = pd.DataFrame({"pid": np.repeat(np.arange(10), 2), "day": np.arange(20) * 1.5, "x": np.arange(20.0)})
    with pytest.raises(ConfigError, match=r"^bayesnet models ordinary tables, not a long-format table .*visitchain"):
        resolve("bayesnet", visits, Schema.infer(visits, patient="pid", time="day"), None)
    assert resolve("vae", table, None, None) == ("vae", None)  # the VAE takes tables too


def test_run_code_release_refuses_a_table_model_in_one_line(tmp_path):
    from clinsynth.data.datasets import simulate_ehr
    from clinsynth.pipeline import RunConfig, run_code_release

    codes, _ = simulate_ehr(60, 20, seed=0)
    with pytest.raises(ConfigError, match=r"^acgan models ordinary tables, not an EHR code matrix: name one of medgan"):
        run_code_release(codes, RunConfig(target=None, model="acgan"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name, data, kind", [
    ("bayesnet", "visits", "a long-format table"),
    ("acgan", "codes", "an EHR code matrix"),
    ("medgan", "table", "an ordinary table"),
    ("visitchain", "codes", "an EHR code matrix"),
    ("visitchain", "table", "an ordinary table"),
])
def test_a_model_refuses_data_its_family_does_not_model_by_its_tags(name, data, kind):
    """The same one-line refusal from every family's fit, read from the model's tags: what it
    models, what it was given, and the models that would take it."""
    from clinsynth.models.registry import create

    table = pd.DataFrame({"a": np.arange(20.0), "arm": [0, 1] * 10})
    visits = pd.DataFrame({"pid": np.repeat(np.arange(10), 2), "day": np.arange(20) * 1.5, "x": np.arange(20.0)})
    inputs = {"table": (table, Schema.infer(table, target="arm")),
              "visits": (visits, Schema.infer(visits, patient="pid", time="day")),
              "codes": (read_long(pd.DataFrame({"patient_id": [1, 1, 2], "code": ["a", "b", "a"]})), None)}
    frame, schema = inputs[data]
    family = REGISTRY[name].tags().input
    takes_it = models_of(data_kind(frame, schema))[0]
    with pytest.raises(DataKindError, match=rf"^{name} models .*, not {kind}.*: name one of .*{takes_it}") as refused:
        create(name).fit(frame, schema)
    assert isinstance(refused.value, ConfigError) and isinstance(refused.value, InputError)  # as each family raised it before
    assert family != data_kind(frame, schema)
