"""The batch-size study's result: its rows, the fitted trade-off, the recommendation and
the plain sentences that explain it; Markdown, JSON and plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .scaling import CriticalBatch, flat_step_time_limit

# Columns of the Markdown table (the JSON keeps every field).
COLUMNS = (
    ("batch_size", "batch"), ("lr", "lr"), ("status", "status"),
    ("steps_to_target", "steps"), ("examples_to_target", "examples"),
    ("seconds_to_target", "seconds"), ("predicted_seconds", "predicted s"),
    ("step_s", "ms/step"), ("regime", "regime"), ("b_simple", "B_simple"),
    ("train_accuracy", "train acc"), ("val_accuracy", "val acc"),
    ("generalization_gap", "gap"), ("sharpness", "sharpness"),
    ("peak_memory_bytes", "memory"),
)


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if key == "step_s":
        return f"{v * 1e3:.3g}"
    if key == "peak_memory_bytes":
        return f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v / 2**10:.0f} KiB"
    if key in ("train_accuracy", "val_accuracy"):
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _seconds(v: float) -> str:
    return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


@dataclass
class BatchSizeStudy:
    """What :func:`fastgd.batch_size_study` returns (see there). ``noise_curve``: the exact
    noise scale along the recommended batch size's run (step, train loss, ``b_simple``)."""

    rows: list[dict]
    critical: CriticalBatch
    recommended_batch_size: int | None
    target_loss: float
    target_on: str
    momentum: float | None
    optimizer: dict
    backend: str
    model: list[int]
    loss: str
    n: int
    noise_curve: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        """A short name of the study's optimizer setting."""
        if self.momentum is None:
            return self.optimizer.get("name", "optimizer")
        return f"SGD, momentum {self.momentum:g}"

    @property
    def explanation(self) -> list[str]:
        """Plain sentences: the recommendation and why, from the fit and the step times."""
        return explain(self)

    def to_dict(self) -> dict:
        """Every field, plain Python (what ``to_json`` writes)."""
        return dict(target_loss=self.target_loss, target_on=self.target_on,
                    momentum=self.momentum, optimizer=self.optimizer, backend=self.backend,
                    model=self.model, loss=self.loss, n=self.n,
                    recommended_batch_size=self.recommended_batch_size,
                    critical=self.critical.to_dict(), explanation=self.explanation,
                    rows=self.rows, noise_curve=self.noise_curve)

    def to_json(self, path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        return path

    @classmethod
    def from_dict(cls, d: dict) -> BatchSizeStudy:
        """The study :meth:`to_dict` (or a JSON file of it, parsed) describes."""
        fields = {k: d[k] for k in ("rows", "recommended_batch_size", "target_loss",
                                    "target_on", "momentum", "optimizer", "backend", "model",
                                    "loss", "n", "noise_curve")}
        return cls(critical=CriticalBatch(**d["critical"]), **fields)

    def to_markdown(self) -> str:
        """The table, the fit and the explanation."""
        head = "| " + " | ".join(name for _, name in COLUMNS) + " |"
        lines = [f"### Batch size to loss {self.target_loss:g} ({self.target_on}), "
                 f"{self.label}, {self.backend}", "", head,
                 "|" + "---|" * len(COLUMNS)]
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + " |")
        c = self.critical
        lines.append("")
        if c.s_min is not None:
            lines.append(f"Fit S(B) = S_min (1 + B_crit / B): S_min = {c.s_min:.3g} steps, "
                         f"E_min = {c.e_min:.3g} examples, B_crit = {c.b_crit:.3g}, "
                         f"r2 = {c.r2:.3f} ({c.points} batch sizes); B_simple at the target "
                         f"= {_fmt('b_simple', c.b_simple)}.")
        else:
            lines.append(f"No fit: {c.reason}.")
        for r in self.rows:
            if r.get("reason"):
                lines.append(f"- batch {r['batch_size']}: {r['status']}: {r['reason']}")
        lines += ["", *self.explanation]
        return "\n".join(lines)

    def plot(self, path) -> Path:
        """Save the four panels (steps and time to target, noise over training, accuracy
        gap and sharpness against batch size) to ``path``."""
        from .plots import plot_studies

        return plot_studies([self], path)


@dataclass
class StudyGroup:
    """The same study for several momentum values (``momentum=(0.0, 0.9)``)."""

    studies: list[BatchSizeStudy]

    @property
    def explanation(self) -> list[str]:
        """Each study's sentences, then how momentum moved the fit."""
        out = []
        for s in self.studies:
            out += [f"{s.label}:", *s.explanation]
        fits = [(s.label, s.critical) for s in self.studies if s.critical.s_min is not None]
        if len(fits) == 2:
            (a, ca), (b, cb) = fits
            verdict = ("as Shallue et al. found, momentum extended perfect scaling to larger "
                       "batches" if cb.b_crit > ca.b_crit else "unlike Shallue et al.'s "
                       "finding that momentum extends perfect scaling to larger batches")
            out.append(f"From {a} to {b}, S_min went from {ca.s_min:.3g} to {cb.s_min:.3g} "
                       f"steps and B_crit from {ca.b_crit:.3g} to {cb.b_crit:.3g} ({verdict}).")
        return out

    def to_dict(self) -> dict:
        """Every study, plain Python."""
        return dict(studies=[s.to_dict() for s in self.studies],
                    explanation=self.explanation)

    @classmethod
    def from_dict(cls, d: dict) -> StudyGroup:
        """The group :meth:`to_dict` describes."""
        return cls([BatchSizeStudy.from_dict(s) for s in d["studies"]])

    def to_json(self, path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        return path

    def to_markdown(self) -> str:
        """Each study's Markdown, then the comparison."""
        parts = [s.to_markdown() for s in self.studies]
        fits = [s for s in self.studies if s.critical.s_min is not None]
        if len(fits) == 2:
            parts.append(self.explanation[-1])
        return "\n\n".join(parts)

    def plot(self, path) -> Path:
        """The panels with every study overlaid."""
        from .plots import plot_studies

        return plot_studies(self.studies, path)


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot write {type(v).__name__} as JSON")


def explain(study: BatchSizeStudy) -> list[str]:
    """The sentences of :attr:`BatchSizeStudy.explanation`."""
    rows, c = study.rows, study.critical
    reached = [r for r in rows if r["status"] == "ok"]
    if not reached:
        best = min((r.get("best_loss") for r in rows if r.get("best_loss") is not None),
                   default=None)
        tail = f"; the lowest loss any reached was {best:.4g}" if best is not None else ""
        return [f"No batch size reached loss {study.target_loss:g}{tail}: raise max_epochs or "
                "the target."]
    best = next(r for r in reached if r["batch_size"] == study.recommended_batch_size)
    fastest = min(reached, key=lambda r: r["seconds_to_target"])
    slowest = max(reached, key=lambda r: r["seconds_to_target"])
    out = [f"Batch size {best['batch_size']} (lr {best['lr']:.3g}) reaches loss "
           f"{study.target_loss:g} fastest: {_seconds(best['seconds_to_target'])}, "
           f"{best['steps_to_target']} step(s) of {best['step_s'] * 1e3:.3g} ms "
           f"({slowest['seconds_to_target'] / fastest['seconds_to_target']:.1f}x faster than "
           f"the slowest that reached it, batch {slowest['batch_size']})."]
    if c.s_min is not None:
        out.append(f"Steps to target follow S(B) = {c.s_min:.3g} (1 + {c.b_crit:.3g} / B) "
                   f"(r2 {c.r2:.2f}): below B_crit = {c.b_crit:.3g} doubling the batch nearly "
                   "halves the steps; above it, more examples per step buy few fewer steps.")
        if c.b_simple is not None and math.isfinite(c.b_simple) and c.b_simple > 0:
            ratio = c.b_simple / c.b_crit
            out.append(f"The gradient noise scale at the target, B_simple = {c.b_simple:.3g}, "
                       f"is {ratio:.2g}x B_crit" + (
                           " (within an order of magnitude, as McCandlish et al. found)."
                           if 0.1 <= ratio <= 10 else "."))
        by_regime: dict[str, list[int]] = {}
        for r in rows:
            by_regime.setdefault(c.regime(r["batch_size"]), []).append(r["batch_size"])
        out.append("Regimes (against B_crit): " + "; ".join(
            f"{name}: {', '.join(map(str, sizes))}" for name, sizes in by_regime.items())
            + f". Batch {best['batch_size']} is in the {best['regime']} regime.")
    sizes = [r["batch_size"] for r in rows]
    limit = flat_step_time_limit(sizes, [r.get("step_s") for r in rows])
    timed = sorted((r["batch_size"], r["step_s"]) for r in rows if r.get("step_s"))
    if limit is not None and limit > timed[0][0]:
        out.append(f"Measured step time stays within 1.3x of the smallest batch's up to batch "
                   f"{limit}: up to there a bigger batch costs little more time per step, so "
                   "time to target falls with the steps; beyond it each step costs more.")
    elif len(timed) >= 2:
        (b0, t0), (b1, t1) = timed[0], timed[1]
        out.append(f"Measured step time already grows from batch {b0} to {b1} ({t0 * 1e3:.3g} "
                   f"to {t1 * 1e3:.3g} ms): a step costs its arithmetic more than a fixed "
                   "overhead, so a bigger batch pays only while its steps shrink faster than "
                   "its step time grows.")
    if c.s_min is not None:
        out.append("So the time to target, S(B) x t(B), is lowest where the steps have "
                   "stopped halving or the step time has started growing: batch "
                   f"{best['batch_size']}.")
    missed = [r["batch_size"] for r in rows if r["status"] != "ok"]
    if missed:
        out.append(f"Batch sizes {missed} did not reach the target (see their reasons).")
    return out
