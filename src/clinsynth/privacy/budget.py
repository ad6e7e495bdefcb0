"""``Privacy``: the budget a model is *given* (ε, δ, the accountant, the public facts' share).

A model does not subclass its way into differential privacy: ``cs.create("medgan",
privacy=cs.Privacy(epsilon=1))`` builds medGAN with a budget, and every mechanism it runs charges
the one ledger :meth:`Privacy.ledger` opens for it. Only what every DP model shares lives here;
a model's own parts of the budget (the DP-SGD clipping norm, the selection's or the structure's
share, the vocabulary's) stay its hyperparameters.

Plain, frozen data (after Opacus' accountant state and scikit-learn's parameters): saved in a
bundle's ``config.json`` under ``params.privacy`` and checked when it is made, so a budget that
cannot work is refused before any record is read.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from clinsynth.errors import ConfigError
from clinsynth.privacy.ledger import PrivacyLedger, budget_problems

#: what ``Privacy`` holds; ``create(name, epsilon=…, delta=…)`` builds one from these keywords
PRIVACY_FIELDS = ("epsilon", "delta", "accountant", "stats_share")


@dataclass(frozen=True)
class Privacy:
    """A differential-privacy budget for one fit.

    Parameters
    ----------
    epsilon : the total ε of everything the fit reads from real records.
    delta : the total δ; ``None`` picks ``default_delta(n)`` = min(1e-5, 1/(10 n)) when the
        number of records is known (never above 1/n).
    accountant : ``"prv"`` (tight, the default) or ``"rdp"`` (fast, looser), from Opacus.
    stats_share : the budget share (μ², see ``share_noise_multiplier``) of the public facts the
        schema does not declare (bounds, categories, formats); nothing is charged for those it
        declares. Raised, up to one half, for a table with few records per column
        (``privacy.facts_budget``).

    Example
    -------
    >>> import clinsynth as cs
    >>> cs.Privacy(epsilon=1.0).accountant
    'prv'
    """

    epsilon: float
    delta: float | None = None
    accountant: str = "prv"
    stats_share: float = 0.1

    def __post_init__(self) -> None:
        bad = budget_problems(self.epsilon, self.delta, self.accountant, {"stats_share": self.stats_share})
        if bad:
            raise ConfigError(f"privacy budget: invalid settings: {', '.join(bad)}")

    def ledger(self, n_records: int, unit: str = "record") -> PrivacyLedger:
        """The empty ledger a fit on ``n_records`` records charges (δ decided here when ``None``)."""
        return PrivacyLedger.for_records(self.epsilon, self.delta, n_records, self.accountant, unit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Privacy:
        """The budget a bundle's ``params.privacy`` holds; a key this class lacks is refused in one line."""
        unknown = sorted(set(state) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"privacy budget: unknown setting(s) {', '.join(unknown)} (it takes {', '.join(PRIVACY_FIELDS)})")
        return cls(**state)


def budget(epsilon: float | None, delta: float | None = None) -> Privacy | None:
    """The budget of ``epsilon`` and ``delta`` (``None`` without ε; δ alone is refused)."""
    if epsilon is None:
        if delta is not None:
            raise ConfigError("delta needs epsilon: a privacy budget is given by its ε (and optionally δ)")
        return None
    return Privacy(epsilon=epsilon, delta=delta)


def as_privacy(value: Privacy | dict[str, Any] | None) -> Privacy | None:
    """``value`` as a ``Privacy`` (a dict, as a bundle or a JSON config holds it, is converted)."""
    if value is None or isinstance(value, Privacy):
        return value
    if isinstance(value, dict):
        return Privacy.from_dict(value)
    raise ConfigError(f"privacy must be a clinsynth.Privacy (e.g. Privacy(epsilon=1.0)) or None, got {type(value).__name__}")


def split_budget(params: dict[str, Any], privacy: Privacy | dict[str, Any] | None = None,
                 defaults: dict[str, Any] | None = None) -> tuple[Privacy | None, dict[str, Any]]:
    """(the budget, the other hyperparameters) of ``params`` that may carry ε, δ, the accountant and
    the facts' share as flat keywords — ``create(name, epsilon=1)`` and bundles saved before
    ``Privacy`` existed do. ``defaults`` (a ``dp-`` alias's, e.g. ε = 1) fill what is not given;
    without ε from either, there is no budget, and δ, the accountant or the share given alone are
    refused (they would be silently ignored)."""
    rest = {k: v for k, v in params.items() if k not in PRIVACY_FIELDS}
    flat = {k: params[k] for k in PRIVACY_FIELDS if k in params}
    if privacy is not None:
        given = [k for k, v in flat.items() if v is not None]
        if given:
            raise ConfigError(f"give the privacy budget once: privacy=Privacy(...) or {', '.join(given)}=..., not both")
        return as_privacy(privacy), rest
    settings = {**(defaults or {}), **{k: v for k, v in flat.items() if v is not None}}
    if settings.get("epsilon") is None:
        stray = [k for k in ("delta",) if flat.get(k) is not None]
        stray += [k for k in ("accountant", "stats_share")
                  if k in flat and flat[k] != Privacy.__dataclass_fields__[k].default]
        if stray:
            raise ConfigError(f"{', '.join(stray)} set without epsilon: a privacy budget needs epsilon "
                              "(e.g. Privacy(epsilon=1.0)), or leave them out for a model without DP")
        return None, rest
    return Privacy(**settings), rest
