"""``auto``: the default model, chosen from the input's kind, size and budget when ``fit`` sees it.

The rule itself is :func:`clinsynth.models.registry.choose_model` (one place, documented there and
in the README); this file only lets the Python API say ``cs.create("auto", privacy=cs.Privacy(epsilon=1))`` before the
data is known. After ``fit`` the object stands for the model it chose: ``sample``, ``save``, the
ledger and the parameters are that model's, and a saved bundle loads back as that model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clinsynth.data.kinds import data_kind
from clinsynth.errors import NotFittedError
from clinsynth.models.registry import (InputFacts, ModelChoice, check_hyperparameters, check_model_takes, choose_model,
                                       create, private_name)
from clinsynth.privacy.budget import Privacy


def input_facts(data: Any, schema: Any = None, privacy: Privacy | None = None) -> InputFacts:
    """The facts ``auto`` chooses by, for a table (DataFrame; long format when ``schema`` names a patient
    column) or a code matrix (``CodeMatrix``)."""
    epsilon = privacy.epsilon if privacy is not None else None
    kind = data_kind(data, schema)
    if kind == "codes":
        static = 0 if data.static is None else data.static.shape[1]
        return InputFacts("codes", data.n_patients, data.n_codes + static, epsilon=epsilon)
    if kind == "patients":
        patients = int(data[schema.patient].nunique())
        return InputFacts("patients", patients, len(schema.columns) - 2, epsilon=epsilon)
    groups = len(schema.longitudinal) if schema is not None else 0
    n_columns = len(schema.columns) if schema is not None else data.shape[1]
    return InputFacts("table", len(data), n_columns, groups, epsilon)


def resolve(model: str, data: Any, schema: Any, privacy: Privacy | None) -> tuple[str, ModelChoice | None]:
    """The registry name to build for ``model`` given ``privacy`` (its ``dp-`` alias under a budget;
    for ``auto``, the one chosen for ``data``), and the choice when ``auto`` made one. A named
    model whose family (its tags) does not take ``data``'s kind is refused here, before any fit."""
    if model != "auto":
        name = private_name(model, privacy)
        check_model_takes(name, data_kind(data, schema))
        return name, None
    choice = choose_model(input_facts(data, schema, privacy))
    return private_name(choice.name, privacy), choice


def build(name: str, params: dict[str, Any], choice: ModelChoice | None = None, privacy: Privacy | None = None,
          **options: Any) -> Any:
    """``create(name, privacy=privacy, **params, **options)``; when ``auto`` chose ``name``, a
    hyperparameter it does not take is refused in one line that names the choice (e.g. epochs for
    the Bayesian network)."""
    if choice is not None:
        check_hyperparameters(name, params, choice)
    return create(name, privacy=privacy, **params, **options)


class AutoModel:
    """Stands for the model :func:`choose_model` picks when :meth:`fit` sees the data."""

    def __init__(self, privacy: Privacy | None = None, **hyperparameters: Any):
        self.privacy = privacy
        self.hyperparameters = hyperparameters
        self.choice_: ModelChoice | None = None
        self.model_: Any = None

    @property
    def name(self) -> str:
        """``auto`` until fitted, then the chosen model's registry name."""
        return "auto" if self.model_ is None else self.model_.name

    def get_params(self) -> dict[str, Any]:
        if self.model_ is not None:
            return self.model_.get_params()
        return {"privacy": self.privacy, **self.hyperparameters}

    def fit(self, data: Any, schema: Any = None, **fit_options: Any) -> Any:
        """Choose the model for ``data``, build it with the given hyperparameters, fit it; returns it."""
        params = {k: v for k, v in self.hyperparameters.items() if k not in ("seed", "progress")}
        options = {k: v for k, v in self.hyperparameters.items() if k in ("seed", "progress")}
        name, self.choice_ = resolve("auto", data, schema, self.privacy)
        self.model_ = build(name, params, self.choice_, self.privacy, **options)
        self.model_.fit(data, schema, **fit_options)
        return self.model_
    def __getattr__(self, attribute: str) -> Any:
        model = self.__dict__.get("model_")
        if model is None:
            raise NotFittedError("the auto model chooses when it is fitted: call fit(data, schema) first") \
                if not attribute.startswith("__") else AttributeError(attribute)
        return getattr(model, attribute)

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        if self.model_ is None:
            raise NotFittedError("the auto model chooses when it is fitted: call fit(data, schema) first")
        return self.model_.save(path, overwrite=overwrite)
