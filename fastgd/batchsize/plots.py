"""The batch-size study's figure: four panels, one or more studies overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _reached(study):
    return [r for r in study.rows if r["status"] == "ok"]


def plot_studies(studies, path) -> Path:
    """Steps to target (log-log, the fitted S(B), B_crit and B_simple marked), time to
    target measured and predicted (the recommendation marked), the noise scale over the
    recommended run, and the accuracy gap and sharpness against batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    (steps_ax, time_ax), (noise_ax, gap_ax) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, study in enumerate(studies):
        color, label = colors[i % len(colors)], study.label
        rows = _reached(study)
        b = np.array([r["batch_size"] for r in rows], float)
        c = study.critical
        if len(rows):
            steps_ax.loglog(b, [r["steps_to_target"] for r in rows], "o", color=color,
                            label=f"{label}: measured")
            time_ax.loglog(b, [r["seconds_to_target"] for r in rows], "o-", color=color,
                           label=f"{label}: measured")
        if c.s_min is not None:
            grid = np.geomspace(b.min(), b.max(), 100)
            steps_ax.loglog(grid, c.s_min + c.e_min / grid, "-", color=color,
                            label=f"S(B) fit, B_crit={c.b_crit:.3g}")
            steps_ax.axvline(c.b_crit, color=color, ls="--", lw=1)
            if c.b_simple is not None and np.isfinite(c.b_simple):
                steps_ax.axvline(c.b_simple, color=color, ls=":", lw=1,
                                 label=f"B_simple={c.b_simple:.3g}")
            pred = [(r["batch_size"], r["predicted_seconds"]) for r in study.rows
                    if r.get("predicted_seconds")]
            if pred:
                time_ax.loglog(*zip(*pred, strict=True), "x--", color=color,
                               label=f"{label}: S(B) x t(B)")
        if study.recommended_batch_size is not None:
            best = next(r for r in rows if r["batch_size"] == study.recommended_batch_size)
            time_ax.plot(best["batch_size"], best["seconds_to_target"], "*", ms=16,
                         color=color, label=f"recommended: {best['batch_size']}")
        if study.noise_curve:
            pts = [(p["step"], p["b_simple"]) for p in study.noise_curve
                   if p["step"] > 0 and np.isfinite(p["b_simple"])]
            if pts:
                noise_ax.loglog(*zip(*pts, strict=True), "o-", color=color,
                                label=f"{label}, batch {study.recommended_batch_size}")
        gap = [(r["batch_size"], r["generalization_gap"]) for r in rows
               if r.get("generalization_gap") is not None]
        if gap:
            gap_ax.semilogx(*zip(*gap, strict=True), "o-", color=color, label=f"{label}: gap")
        sharp = [(r["batch_size"], r["sharpness"]) for r in rows
                 if r.get("sharpness") is not None]
        if sharp:
            twin = getattr(gap_ax, "right_ax", None) or gap_ax.twinx()
            gap_ax.right_ax = twin
            twin.semilogx(*zip(*sharp, strict=True), "s--", color=color, alpha=0.7,
                          label=f"{label}: sharpness")
            twin.set_ylabel("sharpness (top Hessian eigenvalue)")
    first = studies[0]
    steps_ax.set(xlabel="batch size", ylabel=f"steps to loss {first.target_loss:g}",
                 title="Steps to target")
    time_ax.set(xlabel="batch size", ylabel="seconds to target", title="Time to target")
    noise_ax.set(xlabel="step", ylabel="B_simple (exact)",
                 title="Gradient noise scale over training")
    gap_ax.set(xlabel="batch size", ylabel="generalization gap (train - val)",
               title="Generalization and sharpness at the target")
    for ax in (steps_ax, time_ax, noise_ax, gap_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"Batch-size study: model {first.model}, {first.loss}, n={first.n}, "
                 f"{first.backend}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
