"""One hierarchy of errors whose messages speak to the user.

Every message names the column or parameter, the problem and, where there is one, the fix.
The CLI prints the message as one red line and exits non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

from typing import NamedTuple


class ClinsynthError(Exception):
    """Base class: anything clinsynth raises on purpose."""


class InputError(ClinsynthError, ValueError):
    """A file or table that cannot be read as a clinical table."""


class SchemaError(ClinsynthError, ValueError):
    """A schema that is malformed, or a table that does not match its schema.

    ``problems`` lists every offending column with its reason, so one run shows them all.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class ConfigError(ClinsynthError, ValueError):
    """A hyperparameter or option outside what a model accepts."""


class HyperparameterError(ConfigError):
    """A hyperparameter the model does not take (the CLI names the flag that gave it)."""


class DataKindError(ConfigError, InputError):
    """Data of a kind (a table, a code matrix, patients with visits) the named model's family does
    not model: a wrong input for that model, or a wrong model for that input."""


class NotFittedError(ClinsynthError, RuntimeError):
    """A model used before ``fit``."""


class PrivacyBudgetError(ClinsynthError, RuntimeError):
    """A charge that would take the privacy ledger past its target."""


class BundleError(ClinsynthError, ValueError):
    """A model bundle on disk that is missing parts or does not fit this version."""


class OutputWords(NamedTuple):
    """How a front end names the output settings: the folder or file, replacing it, resuming."""

    out: str
    overwrite: str
    resume: str


#: the Python API's names: the output path parameter, ``overwrite=True``, ``resume=True``
API_WORDS = OutputWords(out="output", overwrite="overwrite=True", resume="resume=True")
#: where an ``OutputError`` message names a setting (worded by :meth:`OutputError.worded`)
OUT, OVERWRITE, RESUME = (f"\x1d{name}\x1d" for name in OutputWords._fields)


class OutputError(ClinsynthError):
    """An output location clinsynth may not or cannot write: not its own, locked, full, read-only.

    A message names the settings by the markers ``OUT``, ``OVERWRITE`` and ``RESUME``; ``str()``
    words them as the Python API takes them (:data:`API_WORDS`), a front end as its own options
    with :meth:`worded` (the CLI: ``--out``, ``--overwrite``, ``--resume``).
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(self.worded(API_WORDS))

    def worded(self, words: OutputWords) -> str:
        """The message with the settings named as ``words`` name them."""
        text = self.message
        for marker, word in zip((OUT, OVERWRITE, RESUME), words):
            text = text.replace(marker, word)
        return text


class CheckpointError(ConfigError):
    """A checkpoint directory that belongs to another fit, is damaged, or cannot be written."""


class ClinsynthWarning(UserWarning):
    """Something the steward should know about a fit that went ahead; the CLI prints it as one line."""


class UtilityWarning(ClinsynthWarning):
    """A DP fit whose noise leaves little of the data's signal: what to change for more."""


class ReleaseWarning(ClinsynthWarning):
    """A DP release that went ahead with less than the data hold: a column's rare categories merged,
    or a fact taken from a public default. The release's record says the same."""
