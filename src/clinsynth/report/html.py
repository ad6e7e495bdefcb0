"""The release report: one self-contained HTML page rendered from the metrics dictionary.

The page is drawn from ``metrics.json`` alone (Jinja2 template, figures embedded as ``data:``
URIs, no script, no network), so ``clinsynth report metrics.json`` rebuilds it anywhere and every
number the page shows is in the metrics file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clinsynth.data.io import write_text_atomic
from clinsynth.errors import InputError
from clinsynth.report import figures


def _fmt(value: Any, digits: int = 3) -> str:
    """Numbers as the page prints them: fixed significant digits, '–' for missing."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _ci(pair: Any, digits: int = 3) -> str:
    if not pair or any(v is None for v in pair):
        return ""
    return f"[{_fmt(float(pair[0]), digits)}, {_fmt(float(pair[1]), digits)}]"


def build_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the page from the numbers in ``metrics``."""
    if metrics.get("codes") is not None:
        codes = metrics["codes"]
        return {"code_prevalence": figures.code_prevalence_figure(codes.get("dimension_wise_probability") or {}),
                "code_prediction": figures.code_prediction_figure(codes.get("dimension_wise_prediction") or {})}
    fidelity = metrics.get("fidelity") or {}
    scores = {c["column"]: c["value"] for c in fidelity.get("columns", [])}
    longitudinal_columns = {c for g in metrics.get("schema", {}).get("longitudinal", []) for c in g.get("columns", [])}
    marginal_panels = [m for m in fidelity.get("marginals", []) if m["column"] not in longitudinal_columns]
    utility = metrics.get("utility") or {}
    return {
        "marginals": figures.marginals_figure(marginal_panels, scores),
        "associations": figures.association_heatmap((fidelity.get("associations") or {}).get("matrix") or {}),
        "dimension_wise": figures.dimension_wise_figure(fidelity.get("dimension_wise_probability") or {}),
        "trajectories": [(s["group"], figures.trajectories_figure(s)) for s in fidelity.get("longitudinal", [])],
        "roc": figures.roc_figure(utility.get("curves") or []),
        "patient_trajectories": (figures.patient_trajectories_figure(metrics["patients"]["trajectories"])
                                 if metrics.get("patients") else None),
    }


REQUIRED = ("clinsynth_version", "created", "dataset", "schema", "guarantee", "fidelity", "utility",
            "privacy_attacks", "verdicts")
#: A code-matrix evaluation holds a ``codes`` section instead of the table sections.
REQUIRED_CODES = ("clinsynth_version", "created", "dataset", "guarantee", "codes", "verdicts")


def render(metrics: dict[str, Any]) -> str:
    """The page as a string; refuses a dictionary that is not clinsynth's metrics."""
    required = REQUIRED_CODES if isinstance(metrics, dict) and metrics.get("codes") is not None else REQUIRED
    missing = [k for k in required if k not in metrics] if isinstance(metrics, dict) else list(REQUIRED)
    if missing:
        raise InputError(f"not a clinsynth metrics file: it lacks {', '.join(missing)} "
                         "(write one with `clinsynth run` or `clinsynth evaluate`)")
    return _environment().get_template("report.html.j2").render(m=metrics, fig=build_figures(metrics))


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("clinsynth.report", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["ci"] = _ci
    return env


def write_guarantee(metrics: dict[str, Any], path: str | Path) -> Path:
    """The shareable page: the privacy guarantee and ledger alone, from the parts of ``metrics``
    that describe the model (never a figure computed on real records)."""
    page = {k: metrics.get(k) for k in ("guarantee", "model", "clinsynth_version", "created")}
    path = Path(path)
    write_text_atomic(path, _environment().get_template("guarantee_page.html.j2").render(m=page))
    return path


def write_report(metrics: dict[str, Any], path: str | Path) -> Path:
    """Render and write atomically (a half-written page never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render(metrics))
    return path
