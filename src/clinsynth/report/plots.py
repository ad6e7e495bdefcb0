"""Figures from result frames; matplotlib with the file-only Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from clinsynth.data.io import write_with
from clinsynth.evaluate.longitudinal import per_visit_summary
from clinsynth.schema import LongitudinalGroup


def trajectory_plot(real: pd.DataFrame, synthetic: pd.DataFrame, group: LongitudinalGroup, by: str | None,
                    path: str | Path, unit: str = "") -> Path:
    """Per-visit median (with IQR band) by class, real solid and synthetic dashed: SPRINT Fig. 2."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    r = per_visit_summary(real, group, by)
    s = per_visit_summary(synthetic, group, by)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    x = range(len(group.visits))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, cls in enumerate(r["class"].unique()):
        colour = colours[i % len(colours)]
        for frame, style, label in ((r, "-", "real"), (s, "--", "synthetic")):
            part = frame[frame["class"] == cls]
            if part.empty:
                continue
            name = f"{by}={cls} {label}" if by else label
            ax.plot(x, part["median"], style, color=colour, marker="o" if label == "real" else None, label=name)
            if label == "real":
                ax.fill_between(x, part["q1"], part["q3"], color=colour, alpha=0.12)
    ax.set_xticks(list(x), group.visits)
    ax.set_xlabel("visit")
    ax.set_ylabel(f"median {group.name}{f' ({unit})' if unit else ''}")
    ax.set_title(f"{group.name} by visit: real (solid, IQR shaded) vs synthetic (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(path)
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
