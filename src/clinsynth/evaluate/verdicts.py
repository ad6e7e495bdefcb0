"""Verdicts: one line per report section that a board member can read without the tables.

Rules of thumb, stated so a reader can disagree with them (levels: pass, caution, fail; a
missing guarantee is a warning; a part not run at the evaluation level is skipped). They read the
metrics dictionary, so a report rebuilt from ``metrics.json`` states the same verdicts.

- Fidelity: detection AUROC ≤ 0.6 passes, ≤ 0.8 is caution, above fails.
- Utility: the worst TSTR/TRTR AUROC ratio over classifiers ≥ 0.9 passes, ≥ 0.75 caution.
- Privacy attacks: fail when synthetic rows copy training rows more often than the holdout
  does, or when the distance-to-closest share or the membership-inference AUROC exceeds 0.6;
  caution above 0.55. Two readings are kept from failing on what is not evidence of copying:
  a membership-inference AUROC whose 95 % interval (Hanley and McNeil's standard error, from the
  numbers of members and non-members scored) still reaches 0.5 is chance on a small table; and
  when the synthetic rows' median distance to their nearest training record is more than twice
  a real unseen record's, no synthetic row sits near a real one, so a high distance-to-closest
  share only says which real records lie toward the (poorly placed) synthetic rows — a fidelity
  problem, reported there. Both are caution, with the reason, never pass. A third: a
  distance-to-closest share whose 95 % interval still reaches 0.5 once rows that share their
  nearest real record count as one coin flip (``effective_queries``, see
  :class:`~clinsynth.evaluate.privacy.DCRResult`) is chance too — unless the synthetic rows sit
  nearer the training records than a real unseen record does (a replay of a few records), which
  still fails. An older metrics file without ``effective_queries`` is read as before.

Code matrices (patients × codes, :mod:`clinsynth.evaluate.codes`) have their own sections:

- Dimension-wise probability: the correlation of code prevalences ≥ 0.95 passes (medGAN's bar
  for a good model), ≥ 0.85 is caution.
- Dimension-wise prediction: mean F1 trained on synthetic over mean F1 trained on real ≥ 0.9
  passes, ≥ 0.75 caution (as utility).
- Co-occurrence: the root mean square difference of the pair rates beyond sampling noise,
  relative to the mean real pair rate, ≤ 0.25 passes, ≤ 0.5 caution (a fresh draw scores about
  0, a model that keeps prevalences but draws codes independently well above 1).
- Privacy attacks: as for tables, on the Hamming distance; identical code sets are common among
  real patients (no code, one common code), so synthetic copies count only beyond the holdout's
  rate plus twice the standard error of the difference of the two rates.
"""
from __future__ import annotations

import math
from typing import Any

DETECTION_PASS, DETECTION_CAUTION = 0.6, 0.8
UTILITY_PASS, UTILITY_CAUTION = 0.9, 0.75
ATTACK_CAUTION, ATTACK_FAIL = 0.55, 0.6
#: synthetic rows farther than this many times a real unseen record's distance sit near no real record
FAR_FROM_REAL = 2.0
CODE_PROBABILITY_PASS, CODE_PROBABILITY_CAUTION = 0.95, 0.85
CODE_PREDICTION_PASS, CODE_PREDICTION_CAUTION = 0.9, 0.75
CO_OCCURRENCE_PASS, CO_OCCURRENCE_CAUTION = 0.25, 0.5


def _verdict(section: str, level: str, headline: str) -> dict[str, str]:
    return {"section": section, "level": level, "headline": headline}


def guarantee_verdict(guarantee: dict[str, Any]) -> dict[str, str]:
    if guarantee.get("differentially_private"):
        return _verdict("privacy guarantee", "pass",
                        f"(ε = {guarantee['spent']:.3g}, δ = {guarantee['delta']:.2g})-differential privacy over the whole "
                        f"fitting pipeline (budget ε = {guarantee['epsilon']:g}"
                        + (f"; privacy unit: {guarantee['privacy_unit'].split(' (')[0]})" if guarantee.get("privacy_unit") else ")"))
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


def _auroc_low(auroc: float, n_pos: int, n_neg: int) -> float:
    """The lower end of a 95 % interval on an AUROC (Hanley & McNeil 1982's standard error); the
    AUROC itself when the counts are unknown (an older metrics file), so nothing is excused."""
    if n_pos < 1 or n_neg < 1:
        return auroc
    a = min(max(auroc, 1e-9), 1 - 1e-9)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return a - 1.96 * math.sqrt(max(var, 0.0))


def _far_from_real(dcr: dict[str, Any]) -> bool:
    """No synthetic row sits near a real record: the DCR share then measures direction, not copying."""
    synthetic, unseen = dcr.get("median_dcr_train"), dcr.get("median_dcr_holdout_to_train")
    return synthetic is not None and unseen is not None and synthetic > FAR_FROM_REAL * unseen > 0


def _dcr_within_chance(dcr: dict[str, Any]) -> bool:
    """The share's interval, counting rows on one real record as one coin flip, reaches chance, and
    the synthetic rows sit no nearer the training records than a real unseen record does."""
    synthetic, unseen = dcr.get("median_dcr_train"), dcr.get("median_dcr_holdout_to_train")
    return (dcr.get("effective_queries") is not None and dcr.get("ci_low") is not None and dcr["ci_low"] <= 0.5
            and synthetic is not None and unseen is not None and synthetic >= unseen)


def attacks_verdict(attacks: dict[str, Any], copy_slack: float = 0.0) -> dict[str, str]:
    """``copy_slack``: how far the synthetic copy rate may exceed the holdout's by chance (0 for
    tables, where copies are rare; code matrices pass their sampling noise)."""
    copies, dcr_result, mia_result = (attacks["exact_copies"], attacks["distance_to_closest"],
                                      attacks["membership_inference"])
    dcr, mia = dcr_result["share_closer_to_train"], mia_result["auroc"]
    copied = copies["synthetic_rate"] > copies["holdout_rate"] + 0.01 + copy_slack
    problems, evidence = [], copied
    if copies["synthetic_rate"] > copies["holdout_rate"] + 0.001 + copy_slack and copies["synthetic_rate"] > 0:
        problems.append(f"{copies['synthetic_rate']:.1%} of synthetic rows copy a training row "
                        f"(a real holdout: {copies['holdout_rate']:.1%})")
    if dcr > ATTACK_CAUTION:
        if _far_from_real(dcr_result):
            problems.append(f"{dcr:.0%} of synthetic rows lie nearer the training set than the holdout, but they sit "
                            f"far from every real record (median distance {dcr_result['median_dcr_train']:.2f} against "
                            f"{dcr_result['median_dcr_holdout_to_train']:.2f} for a real unseen record): a sign of poor "
                            "fidelity, not of copying")
        elif _dcr_within_chance(dcr_result):
            problems.append(f"{dcr:.0%} of synthetic rows lie nearer the training set than the holdout, within chance: "
                            f"the {dcr_result['n_queries']} rows scored land on {dcr_result['nearest_records']} real "
                            f"records, as good as {dcr_result['effective_queries']:.0f} independent rows (95 % interval "
                            f"down to {dcr_result['ci_low']:.2f})")
        else:
            problems.append(f"{dcr:.0%} of synthetic rows lie nearer the training set than the holdout")
            evidence |= dcr > ATTACK_FAIL
    if mia is not None and mia > ATTACK_CAUTION:
        low = _auroc_low(mia, mia_result.get("n_members", 0), mia_result.get("n_non_members", 0))
        if low > 0.5:
            problems.append(f"membership inference reaches AUROC {mia:.2f}")
            evidence |= mia > ATTACK_FAIL
        else:
            problems.append(f"membership inference reaches AUROC {mia:.2f}, within chance on "
                            f"{mia_result['n_members']} + {mia_result['n_non_members']} records (95 % interval "
                            f"down to {low:.2f})")
    if not problems:
        return _verdict("privacy attacks", "pass", f"no copies beyond a real holdout's rate; distance-to-closest share {dcr:.2f}, "
                                                   f"membership-inference AUROC {mia:.2f} (0.5 is ideal)")
    return _verdict("privacy attacks", "fail" if evidence else "caution", "; ".join(problems))


def code_probability_verdict(dwp: dict[str, Any]) -> dict[str, str]:
    corr = dwp.get("correlation")
    if corr is None:
        return _verdict("dimension-wise probability", "fail", "code prevalences could not be correlated "
                                                              "(every code equally common on one side)")
    level = "pass" if corr >= CODE_PROBABILITY_PASS else "caution" if corr >= CODE_PROBABILITY_CAUTION else "fail"
    worst = (dwp.get("largest") or [None])[0]
    tail = (f"; furthest code {worst['code']} ({worst['real']:.1%} real, {worst['synthetic']:.1%} synthetic)"
            if worst else "")
    return _verdict("dimension-wise probability", level,
                    f"code prevalences correlate at r = {corr:.3f} across {dwp['n_codes']:,} codes (1 is ideal){tail}")


def code_prediction_verdict(pred: dict[str, Any]) -> dict[str, str]:
    ratio = pred.get("f1_ratio")
    if not pred.get("n_scored") or ratio is None:
        return _verdict("dimension-wise prediction", "info", "no code could be scored (see the skipped codes)")
    level = "pass" if ratio >= CODE_PREDICTION_PASS else "caution" if ratio >= CODE_PREDICTION_CAUTION else "fail"
    return _verdict("dimension-wise prediction", level,
                    f"predicting each of {pred['n_scored']} common codes from the others, models trained on synthetic "
                    f"data reach {ratio:.0%} of the real-data F1 ({pred['mean_f1_synthetic']:.2f} vs {pred['mean_f1_real']:.2f})")


def co_occurrence_verdict(co: dict[str, Any]) -> dict[str, str]:
    excess = co.get("excess_relative_rms")
    if excess is None:
        return _verdict("co-occurrence", "info", "fewer than two codes: no pairs to compare")
    level = "pass" if excess <= CO_OCCURRENCE_PASS else "caution" if excess <= CO_OCCURRENCE_CAUTION else "fail"
    base = co.get("holdout_excess_relative_rms")
    tail = f" (a real holdout: {base:.0%})" if base is not None else ""
    corr = co.get("correlation")
    return _verdict("co-occurrence", level,
                    f"pair rates of the {co['n_codes']} commonest codes differ by {excess:.0%} of the mean rate beyond "
                    f"sampling noise{tail}" + (f"; correlation {corr:.3f}" if corr is not None else ""))


def _copy_slack(copies: dict[str, Any]) -> float:
    """Twice the standard error of (synthetic copy rate − holdout copy rate) under equal true rates."""
    h, n_s, n_h = copies["holdout_rate"], copies["n_synthetic"], copies["n_holdout"]
    return 2.0 * math.sqrt(max(h * (1 - h), 0.0) * (1 / max(n_s, 1) + 1 / max(n_h, 1)))


def code_verdicts(codes: dict[str, Any]) -> list[dict[str, str]]:
    """The verdicts of a code-matrix evaluation (the ``codes`` section), in page order."""
    return [code_probability_verdict(codes["dimension_wise_probability"]),
            code_prediction_verdict(codes["dimension_wise_prediction"]),
            co_occurrence_verdict(codes["co_occurrence"]),
            attacks_verdict(codes["privacy_attacks"], _copy_slack(codes["privacy_attacks"]["exact_copies"]))]


def skipped_verdict(section: str, level: str) -> dict[str, str]:
    """A part the evaluation level did not run: said so, never a pass."""
    why = "no real-data evaluation was asked for" if level == "none" else "not run at this level"
    return _verdict(section, "skipped", f"not run: evaluation level {level} ({why}; run with --evaluate full to score it)")


TABLE_SECTIONS = ("fidelity", "utility", "privacy attacks")
CODE_SECTIONS = ("dimension-wise probability", "dimension-wise prediction", "co-occurrence", "privacy attacks")


def verdicts(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table of the report, in page order."""
    level = (metrics.get("evaluation") or {}).get("level", "full")
    if metrics.get("codes") is not None:
        if metrics["codes"].get("skipped"):
            return [guarantee_verdict(metrics["guarantee"]), *(skipped_verdict(s, level) for s in CODE_SECTIONS)]
        return [guarantee_verdict(metrics["guarantee"]), *code_verdicts(metrics["codes"])]
    if metrics.get("fidelity") is None and metrics.get("privacy_attacks") is None:
        return [guarantee_verdict(metrics["guarantee"]), *(skipped_verdict(s, level) for s in TABLE_SECTIONS)]
    return [guarantee_verdict(metrics["guarantee"]), fidelity_verdict(metrics["fidelity"]),
            utility_verdict(metrics.get("utility")), attacks_verdict(metrics["privacy_attacks"])]
