"""What a fitted model promises, as the report, the guarantee page and the manifest state it."""
from __future__ import annotations

from typing import Any


def guarantee_of(model: Any) -> dict[str, Any]:
    """What a fitted model promises, as the report states it: its ledger, or no guarantee."""
    from clinsynth.evaluate.suite import no_guarantee
    from clinsynth.privacy.schema_facts import schema_facts

    ledger = getattr(model, "ledger_", None)
    if ledger is None:
        return no_guarantee(model.name)
    return {"differentially_private": True, "model": model.name, "epsilon": ledger.epsilon, "delta": ledger.delta,
            "spent": ledger.spent(), "accountant": ledger.accountant, "charges": ledger.table(),
            "privacy_unit": privacy_unit_of(model),
            "schema_facts": schema_facts(model.schema_, getattr(model, "facts_", None)),
            "facts_release": getattr(model, "facts_", None) or {}}


def privacy_unit_of(model: Any) -> str:
    """Whose data a fitted DP model's guarantee protects, as the guarantee page and manifest say it.

    The ledger's unit decides (``PrivacyLedger.unit``): a patient ledger gives the unit the model
    states (with its contribution bound) or the code matrices' patient; a record ledger gives the
    row. A model of patients whose ledger reads per record was saved before the ledger named its
    unit: its guarantee is read per row, the narrower claim."""
    from clinsynth.privacy.unit import LONG_PATIENT_UNIT, PATIENT_UNIT, ROW_UNIT

    unit = getattr(getattr(model, "ledger_", None), "unit", None)
    stated = getattr(model, "privacy_unit_", None) or (
        PATIENT_UNIT if getattr(model.schema_, "codes", None) is not None else None)
    if unit in (None, "patient") and stated:
        return stated
    if unit == "patient":
        return LONG_PATIENT_UNIT if model.schema_.is_long else PATIENT_UNIT
    if stated:
        return ROW_UNIT + ": its ledger was saved before charges named their unit, so the guarantee is read per row"
    if model.schema_.privacy_unit == "row":
        return ROW_UNIT + ", as declared"
    return ROW_UNIT + ": no identifier column repeated when it was fitted"
