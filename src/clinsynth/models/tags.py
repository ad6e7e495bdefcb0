"""What kind of data a model takes and gives: its family, declared on the class as a tag.

After scikit-learn's estimator tags (``__sklearn_tags__``): a model class carries one frozen
:class:`ModelTags`, readable from the class (so from a registry entry) without building a model.
The CLI, the pipeline and ``auto`` choose by it (and by
:func:`clinsynth.data.kinds.data_kind` for the data in hand), never by which base class a model happens to extend.

Three families (``../shared/DESIGN.md``, "model families"):

* ``"table"`` — one row per record, a DataFrame in and out (``bayesnet``, ``acgan``);
* ``"codes"`` — a patient × code :class:`~clinsynth.data.ehr.CodeMatrix` in and out (``medgan``,
  ``corgan``, ``vae``, ``codetree``); a code model may also take an ordinary table
  (``also_tables``: the VAE), and then gives a table back;
* ``"patients"`` — a long-format table, one row per visit, in; synthetic patients with their
  visits out (``visitchain``, ``visitrnn``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinsynth.data.kinds import KINDS

@dataclass(frozen=True)
class ModelTags:
    """A model family's declared capabilities.

    input : the family: the kind of data ``fit`` takes and ``sample`` gives ("table", "codes" or
        "patients").
    also_tables : a code model that also fits an ordinary table (and then samples one).
    """

    input: str
    also_tables: bool = False

    def __post_init__(self) -> None:
        if self.input not in KINDS:
            raise ValueError(f"a model's input kind is one of {', '.join(KINDS)}, not {self.input!r}")

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every kind of data ``fit`` takes, the family's own first."""
        return (self.input, "table") if self.also_tables else (self.input,)

    def takes(self, kind: str) -> bool:
        return kind in self.inputs


TABLE_TAGS = ModelTags("table")
CODE_TAGS = ModelTags("codes")
PATIENT_TAGS = ModelTags("patients")


def tags_of(model: Any) -> ModelTags:
    """The tags of a model class or instance (an ``auto`` stand-in: of the model it chose)."""
    tags = getattr(model, "tags", None)
    if not isinstance(tags, ModelTags):
        raise TypeError(f"{getattr(model, '__name__', type(model).__name__)} declares no ModelTags")
    return tags
