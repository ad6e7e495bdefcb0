"""The report's figures, drawn from the numbers in ``metrics.json`` alone (never from records), so
the page shows nothing its metrics file does not hold. Each function returns a PNG as a
``data:`` URI, which the page embeds so it opens offline as one file."""
from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np

REAL, SYNTHETIC = "#1f77b4", "#ff7f0e"


def _literal_text(draw: Callable[..., Any]) -> Callable[..., Any]:
    """Draw with every text shown as written: a column named ``$\\cmd$`` is data, not mathtext
    (matplotlib parsed it and the report failed after the whole run). Only this figure's text is
    affected; the caller's matplotlib settings are restored after."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)
    return wrapper


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # file-only backend: no display on servers
    import matplotlib.pyplot as plt

    return plt


def _data_uri(fig: Any) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@_literal_text
def marginals_figure(marginals: list[dict[str, Any]], scores: dict[str, float], max_panels: int = 24) -> str | None:
    """Small multiples of real vs synthetic shares, the worst-scoring columns first."""
    panels = sorted(marginals, key=lambda m: -scores.get(m["column"], 0.0))[:max_panels]
    if not panels:
        return None
    plt = _pyplot()
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False)
    for ax, m in zip(axes.flat, panels):
        x = np.arange(len(m["labels"]))
        if m["kind"] in ("binary", "categorical"):
            ax.bar(x - 0.2, m["real"], 0.4, color=REAL, label="real")
            ax.bar(x + 0.2, m["synthetic"], 0.4, color=SYNTHETIC, label="synthetic")
            ax.set_xticks(x, [str(v)[:10] for v in m["labels"]], rotation=45, ha="right", fontsize=6)
        else:
            ax.step(x, m["real"], where="mid", color=REAL, label="real")
            ax.step(x, m["synthetic"], where="mid", color=SYNTHETIC, linestyle="--", label="synthetic")
            ends = (m["labels"][0].split("–")[0], m["labels"][-1].split("–")[-1])
            ax.set_xticks([0, len(x) - 1], ends, fontsize=6)
        score = scores.get(m["column"])
        ax.set_title(f"{m['column']}" + (f"  ({score:.2f})" if score is not None else ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("marginals, worst first (KS or total variation in brackets)", fontsize=9)
    fig.tight_layout()
    return _data_uri(fig)


@_literal_text
def association_heatmap(matrix: dict[str, Any], max_columns: int = 40) -> str | None:
    """Synthetic − real association, red where synthetic is stronger; the most changed columns kept."""
    names = matrix.get("columns") or []
    if len(names) < 2:
        return None
    diff = np.array([[np.nan if v is None else v for v in row] for row in matrix["difference"]], dtype=float)
    if len(names) > max_columns:
        keep = np.argsort(-np.nan_to_num(np.abs(diff)).max(axis=1))[:max_columns]
        keep.sort()
        diff, names = diff[np.ix_(keep, keep)], [names[i] for i in keep]
    plt = _pyplot()
    size = min(11.0, 2.5 + 0.22 * len(names))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(np.ma.masked_invalid(diff), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.colorbar(image, ax=ax, shrink=0.7, label="synthetic − real")
    ax.set_title("association difference (Spearman between numbers, Cramér's V between categories)", fontsize=8)
    return _data_uri(fig)


@_literal_text
def dimension_wise_figure(dwp: dict[str, Any]) -> str | None:
    """medGAN's scatter: each binary column's prevalence, real (x) vs synthetic (y)."""
    if not dwp.get("columns"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.scatter(dwp["real"], dwp["synthetic"], s=14, color=SYNTHETIC, edgecolor="black", linewidth=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("real prevalence")
    ax.set_ylabel("synthetic prevalence")
    corr = dwp.get("correlation")
    ax.set_title("dimension-wise probability" + (f" (r = {corr:.3f})" if corr is not None and corr == corr else ""), fontsize=9)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


@_literal_text
def trajectories_figure(summary: dict[str, Any]) -> str:
    """Per-visit median (IQR shaded) by class, real solid, synthetic dashed: SPRINT's Fig. 2."""
    plt = _pyplot()
    rows = summary["rows"]
    visits = list(dict.fromkeys(r["visit"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax, ax_obs) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(visits))
    for i, cls in enumerate(classes):
        colour = colours[i % len(colours)]
        for source, style in (("real", "-"), ("synthetic", "--")):
            part = {r["visit"]: r for r in rows if r["class"] == cls and r["source"] == source}
            med = [part[v]["median"] if v in part and part[v]["median"] is not None else np.nan for v in visits]
            obs = [part[v]["observed"] if v in part else np.nan for v in visits]
            label = f"{summary['by']}={cls} {source}" if summary.get("by") else source
            ax.plot(x, med, style, color=colour, marker="o" if source == "real" else None, label=label, markersize=3)
            ax_obs.plot(x, obs, style, color=colour, label=label)
            if source == "real":
                q1 = [part[v]["q1"] if v in part and part[v]["q1"] is not None else np.nan for v in visits]
                q3 = [part[v]["q3"] if v in part and part[v]["q3"] is not None else np.nan for v in visits]
                ax.fill_between(x, q1, q3, color=colour, alpha=0.12)
    for a in (ax, ax_obs):
        a.set_xticks(x, visits, fontsize=7, rotation=45)
        a.grid(alpha=0.3)
    ax.set_title(f"{summary['group']}: median by visit (real IQR shaded)", fontsize=9)
    ax_obs.set_title("share still observed (dropout)", fontsize=9)
    ax_obs.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _data_uri(fig)


@_literal_text
def patient_trajectories_figure(trajectories: dict[str, Any], max_labs: int = 4, min_n: int = 5) -> str | None:
    """Long-format trajectories by class (``metrics["patients"]["trajectories"]``): per lab the median
    per time bin, real solid with its IQR shaded, synthetic dashed; last panel the share of each
    class's patients still in follow-up. At most ``max_labs`` labs, in the table's order; a bin with
    fewer than ``min_n`` observations of a lab is not drawn (its median is noise)."""
    labs = (trajectories.get("labs") or [])[:max_labs]
    follow = trajectories.get("follow_up") or []
    if not follow:
        return None
    plt = _pyplot()
    rows, classes = trajectories.get("rows") or [], trajectories.get("classes") or [None]
    width = trajectories.get("bin_days") or 1.0
    starts = sorted({r["start"] for r in follow})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(labs) + 1, figsize=(3.6 * (len(labs) + 1), 3.4), squeeze=False)
    by = trajectories.get("by")

    def series(source_rows: list[dict[str, Any]], key: str) -> list[float]:
        at = {r["start"]: r.get(key) for r in source_rows if r.get("n", min_n) >= min_n}
        return [np.nan if at.get(x) is None else at[x] for x in starts]

    for i, cls in enumerate(classes):
        colour = colours[i % len(colours)]
        for source, style in (("real", "-"), ("synthetic", "--")):
            label = f"{by}={cls} {source}" if by else source
            for ax, lab in zip(axes[0], labs):
                part = [r for r in rows if r["class"] == cls and r["source"] == source and r["lab"] == lab]
                ax.plot(starts, series(part, "median"), style, color=colour, label=label,
                        marker="o" if source == "real" else None, markersize=3)
                if source == "real":
                    ax.fill_between(starts, series(part, "q1"), series(part, "q3"), color=colour, alpha=0.12)
            part = [r for r in follow if r["class"] == cls and r["source"] == source]
            axes[0][-1].plot(starts, series(part, "in_follow_up"), style, color=colour, label=label)
    for ax, lab in zip(axes[0], labs):
        ax.set_title(f"{lab}: median by {width:g}-day bin (real IQR shaded)", fontsize=8)
    axes[0][-1].set_title("share still in follow-up", fontsize=8)
    axes[0][-1].set_ylim(0, 1.02)
    for ax in axes[0]:
        ax.set_xlabel("days since baseline", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return _data_uri(fig)


@_literal_text
def roc_figure(curves: list[dict[str, Any]]) -> str | None:
    """ROC curves on the real holdout: trained on real (solid) and on synthetic (dashed)."""
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(c["classifier"] for c in curves))
    for c in curves:
        style = "-" if c["trained_on"] == "real" else "--"
        ax.plot(c["fpr"], c["tpr"], style, color=colours[names.index(c["classifier"]) % len(colours)],
                label=f"{c['classifier'].replace('_', ' ')}, {c['trained_on']}", linewidth=1.2)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the real holdout", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


@_literal_text
def code_prevalence_figure(dwp: dict[str, Any]) -> str | None:
    """Code prevalences, real (x) vs synthetic (y), with the diagonal: medGAN's scatter on a linear
    scale (left) and on log scales (right), where the long tail of rare codes can be seen."""
    real, synthetic = np.asarray(dwp.get("real") or [], dtype=float), np.asarray(dwp.get("synthetic") or [], dtype=float)
    if real.size == 0:
        return None
    plt = _pyplot()
    fig, (ax, ax_log) = plt.subplots(1, 2, figsize=(8.6, 4.2))
    top = max(float(real.max()), float(synthetic.max()), 1e-6) * 1.05
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8)
    ax.scatter(real, synthetic, s=8, color=SYNTHETIC, edgecolor="black", linewidth=0.2, alpha=0.7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    positive = np.concatenate([real[real > 0], synthetic[synthetic > 0]])
    floor = float(positive.min()) / 2 if positive.size else 1e-6
    ax_log.plot([floor, top], [floor, top], color="grey", linewidth=0.8)
    ax_log.scatter(np.maximum(real, floor), np.maximum(synthetic, floor), s=8, color=SYNTHETIC, edgecolor="black",
                   linewidth=0.2, alpha=0.7)
    ax_log.set_xscale("log")
    ax_log.set_yscale("log")
    ax_log.set_title(f"log scales (0 drawn at {floor:.1g})", fontsize=8)
    for a in (ax, ax_log):
        a.set_xlabel("real prevalence")
        a.set_ylabel("synthetic prevalence")
        a.grid(alpha=0.3)
    corr = dwp.get("correlation")
    shown = f"{real.size:,} codes" + (" (a prevalence-stratified sample)" if dwp.get("scatter_sampled") else "")
    ax.set_title(f"dimension-wise probability, {shown}" + (f", r = {corr:.3f}" if corr is not None else ""), fontsize=8)
    fig.tight_layout()
    return _data_uri(fig)


@_literal_text
def code_prediction_figure(prediction: dict[str, Any]) -> str | None:
    """Dimension-wise prediction: each code's holdout F1, model trained on real (x) vs on synthetic (y)."""
    codes = prediction.get("codes") or []
    if not codes:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.scatter([c["f1_real"] for c in codes], [c["f1_synthetic"] for c in codes], s=14, color=SYNTHETIC,
               edgecolor="black", linewidth=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("F1, trained on real")
    ax.set_ylabel("F1, trained on synthetic")
    ax.set_title(f"dimension-wise prediction, {len(codes)} codes", fontsize=9)
    ax.grid(alpha=0.3)
    return _data_uri(fig)
