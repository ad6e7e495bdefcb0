"""Verdicts: one line per report section that a board member can read without the tables.

Rules of thumb, stated so a reader can disagree with them (levels: pass, caution, fail; a
missing guarantee is a warning). They read the metrics dictionary, so a report rebuilt from
``metrics.json`` states the same verdicts.

- Fidelity: detection AUROC ≤ 0.6 passes, ≤ 0.8 is caution, above fails.
- Utility: the worst TSTR/TRTR AUROC ratio over classifiers ≥ 0.9 passes, ≥ 0.75 caution.
- Privacy attacks: fail when synthetic rows copy training rows more often than the holdout
  does, or when the distance-to-closest share or the membership-inference AUROC exceeds 0.6;
  caution above 0.55.
"""
from __future__ import annotations

from typing import Any

DETECTION_PASS, DETECTION_CAUTION = 0.6, 0.8
UTILITY_PASS, UTILITY_CAUTION = 0.9, 0.75
ATTACK_CAUTION, ATTACK_FAIL = 0.55, 0.6


def _verdict(section: str, level: str, headline: str) -> dict[str, str]:
    return {"section": section, "level": level, "headline": headline}


def guarantee_verdict(guarantee: dict[str, Any]) -> dict[str, str]:
    if guarantee.get("differentially_private"):
        return _verdict("privacy guarantee", "pass",
                        f"(ε = {guarantee['spent']:.3g}, δ = {guarantee['delta']:.2g})-differential privacy over the whole "
                        f"fitting pipeline (budget ε = {guarantee['epsilon']:g})")
    return _verdict("privacy guarantee", "warning", "no formal guarantee: the model was trained without differential privacy")


def fidelity_verdict(fidelity: dict[str, Any]) -> dict[str, str]:
    auc = fidelity["detection_auroc"]
    worst = max(fidelity["columns"], key=lambda c: c["value"], default=None)
    level = "pass" if auc <= DETECTION_PASS else "caution" if auc <= DETECTION_CAUTION else "fail"
    tail = f"; furthest column {worst['column']} ({worst['value']:.2f})" if worst else ""
    return _verdict("fidelity", level, f"a classifier tells real from synthetic at AUROC {auc:.2f} (0.5 is ideal){tail}")


def utility_verdict(utility: dict[str, Any] | None) -> dict[str, str]:
    if not utility:
        return _verdict("utility", "info", "no target column, so no train-on-synthetic/test-on-real score")
    ratios = utility["tstr_over_trtr_auroc"]
    name, worst = min(ratios.items(), key=lambda kv: kv[1] if kv[1] is not None else -1.0)
    if worst is None:
        return _verdict("utility", "fail", f"{name.replace('_', ' ')} could not be scored on the synthetic data")
    level = "pass" if worst >= UTILITY_PASS else "caution" if worst >= UTILITY_CAUTION else "fail"
    return _verdict("utility", level, f"models trained on synthetic data reach {worst:.0%} or more of the real-data AUROC "
                                      f"(worst: {name.replace('_', ' ')})")


def attacks_verdict(attacks: dict[str, Any]) -> dict[str, str]:
    copies = attacks["exact_copies"]
    dcr = attacks["distance_to_closest"]["share_closer_to_train"]
    mia = attacks["membership_inference"]["auroc"]
    problems = []
    if copies["synthetic_rate"] > copies["holdout_rate"] + 0.001 and copies["synthetic_rate"] > 0:
        problems.append(f"{copies['synthetic_rate']:.1%} of synthetic rows copy a training row "
                        f"(a real holdout: {copies['holdout_rate']:.1%})")
    if dcr > ATTACK_CAUTION:
        problems.append(f"{dcr:.0%} of synthetic rows lie nearer the training set than the holdout")
    if mia is not None and mia > ATTACK_CAUTION:
        problems.append(f"membership inference reaches AUROC {mia:.2f}")
    if not problems:
        return _verdict("privacy attacks", "pass", f"no copies beyond a real holdout's rate; distance-to-closest share {dcr:.2f}, "
                                                   f"membership-inference AUROC {mia:.2f} (0.5 is ideal)")
    severe = bool(copies["synthetic_rate"] > copies["holdout_rate"] + 0.01 or dcr > ATTACK_FAIL or (mia or 0) > ATTACK_FAIL)
    return _verdict("privacy attacks", "fail" if severe else "caution", "; ".join(problems))


def verdicts(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table of the report, in page order."""
    return [guarantee_verdict(metrics["guarantee"]), fidelity_verdict(metrics["fidelity"]),
            utility_verdict(metrics.get("utility")), attacks_verdict(metrics["privacy_attacks"])]
