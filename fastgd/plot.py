"""Pictures of a study: one PNG with four panels, drawn from a :class:`fastgd.compare.Table`.

1. training loss against training seconds (one line per configuration that ran);
2. training loss against epoch;
3. samples/s against batch size, log-log, one line per backend (SGD at batch 1, BGD at
   batch n, MBGD at its batch sizes), with the min-max spread of the repeats as error bars;
4. peak memory against batch size: the traced peak (solid, markers) and the analytic
   estimate (dashed), one colour per backend.

matplotlib is optional (``pip install "fastgd[plot]"``). It is imported inside
:func:`plot_table` and used through ``Figure`` + ``FigureCanvasAgg`` only, so drawing never
touches pyplot's global state or the user's chosen backend.
"""

from __future__ import annotations

import math
from pathlib import Path

PLOT_HINT = 'pip install "fastgd[plot]"'

_RAN = ("ok", "diverged")
_MODE_ORDER = {"sgd": 0, "mbgd": 1, "bgd": 2}
_MIB = 2.0**20


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _label(row: dict) -> str:
    bs = row.get("batch_size")
    text = f"{row.get('backend')} {row.get('mode')}"
    if row.get("mode") == "mbgd" or bs not in (None, 1):
        text += f" b={bs}"
    if row.get("status") == "diverged":
        text += " (diverged)"
    return text


def _title(meta: dict) -> str:
    first = " · ".join(str(p) for p in (
        meta.get("study"), meta.get("model"), meta.get("data"),
    ) if p)
    shape = []
    if meta.get("n") is not None:
        shape.append(f"n={meta['n']:,}" if isinstance(meta["n"], int) else f"n={meta['n']}")
    if meta.get("d") is not None:
        shape.append(f"d={meta['d']}")
    for key in ("dtype", "machine", "date"):
        if meta.get(key):
            shape.append(str(meta[key]))
    return "\n".join(s for s in (first, " · ".join(shape)) if s) or "fastgd study"


def _not_run_note(rows: list[dict], limit: int = 6) -> str:
    lines = [f"not run: {_label(r)}: {r.get('status')}"
             + (f" ({r['reason']})" if r.get("reason") else "") for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more")
    return "\n".join(line if len(line) <= 150 else line[:147] + "..." for line in lines)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10,
            color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _series(row: dict, xkey: str | None):
    """(x, y) points of the loss curve of ``row`` with non-finite points dropped."""
    losses = row.get("train_loss") or []
    xs = row.get(xkey) if xkey else list(range(1, len(losses) + 1))
    xs = xs or []
    pts = [(x, y) for x, y in zip(xs, losses, strict=False) if _finite(x) and _finite(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _tidy_log_axes(ax, FuncFormatter) -> None:  # noqa: N803 (a class, passed in)
    """Plain numbers (``0.3``, ``2``, ``1e+06``) on log axes instead of ``3x10^-1``; on an
    axis spanning little more than a decade, label the minor ticks at 2, 3 and 5 too."""
    for axis, get_lim, scale in ((ax.xaxis, ax.get_xlim, ax.get_xscale()),
                                 (ax.yaxis, ax.get_ylim, ax.get_yscale())):
        if scale != "log":
            continue

        def minor(v, _pos, get_lim=get_lim):
            lo, hi = sorted(get_lim())
            if v <= 0 or lo <= 0 or math.log10(hi / lo) > 1.3:
                return ""
            mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
            return f"{v:g}" if round(mantissa, 6) in (2.0, 3.0, 5.0) else ""

        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(minor))


def _loss_panel(ax, ran, styles, xkey, xlabel, logx):
    drawn = []
    for row in ran:
        xs, ys = _series(row, xkey)
        if not xs:
            continue
        color, ls = styles[id(row)]
        ax.plot(xs, ys, marker="o", markersize=3, linestyle=ls, color=color, label=_label(row))
        drawn += ys
    if not drawn:
        _empty(ax, "no finite losses to draw")
        return False
    if all(v > 0 for v in drawn):
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    return True


def _by_backend(ran):
    out: dict[str, list[dict]] = {}
    for row in ran:
        out.setdefault(str(row.get("backend")), []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: (r.get("batch_size") or 0, _MODE_ORDER.get(r.get("mode"), 9)))
    return out


def _throughput_panel(ax, groups, colors):
    drawn = False
    for backend, rows in groups.items():
        pts = [r for r in rows if _finite(r.get("samples_per_s")) and r["samples_per_s"] > 0
               and _finite(r.get("batch_size")) and r["batch_size"] > 0]
        if not pts:
            continue
        xs = [r["batch_size"] for r in pts]
        ys = [r["samples_per_s"] for r in pts]
        lo = [max(0.0, y - r.get("samples_per_s_min", y)) if _finite(r.get("samples_per_s_min"))
              else 0.0 for y, r in zip(ys, pts, strict=True)]
        hi = [max(0.0, r.get("samples_per_s_max", y) - y) if _finite(r.get("samples_per_s_max"))
              else 0.0 for y, r in zip(ys, pts, strict=True)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=4, capsize=2,
                    color=colors[backend], label=backend)
        for r, x, y in zip(pts, xs, ys, strict=True):
            if r.get("mode") in ("sgd", "bgd"):
                ax.annotate(r["mode"], (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=colors[backend])
        drawn = True
    if not drawn:
        _empty(ax, "no throughput measured")
        return
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (SGD = 1, BGD = n)")
    ax.set_ylabel("samples / s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _memory_panel(ax, groups, colors):
    drawn, values = False, []
    for backend, rows in groups.items():
        for key, style, label in (("peak_traced_bytes", "-", "traced peak"),
                                  ("estimate_bytes", "--", "estimate")):
            pts = [(r["batch_size"], r[key] / _MIB) for r in rows
                   if _finite(r.get(key)) and _finite(r.get("batch_size")) and r["batch_size"] > 0]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, linestyle=style, marker="o" if style == "-" else None,
                    markersize=4, color=colors[backend], label=f"{backend} {label}")
            values += ys
            drawn = True
    if not drawn:
        _empty(ax, "no memory measured")
        return
    ax.set_xscale("log")
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    else:  # a narrow range reads better on a linear axis that starts at zero
        ax.set_ylim(bottom=0, top=max(values) * 1.15)
    ax.set_xlabel("batch size (SGD = 1, BGD = n)")
    ax.set_ylabel("peak host memory (MiB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_table(table, path) -> str:
    """Write one PNG of ``table`` (a :class:`fastgd.compare.Table`) to ``path``; return the
    path as a string.

    Four panels: training loss against training seconds and against epoch (one line per
    configuration that ran; log y when every loss is positive), samples/s against batch size
    (log-log, one line per backend) and peak memory against batch size (traced peak solid,
    analytic estimate dashed, per backend). Rows that did not run (skipped, unavailable,
    failed, out of memory) are left out of the panels and listed under them; a table where
    nothing ran still gives a PNG, with a note. The title comes from ``table.meta`` (study,
    model, n, d, dtype, machine, date).

    Raises ``ImportError`` with an install hint when matplotlib is missing.
    """
    try:
        import matplotlib  # imported first, so that a missing package fails here
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, MaxNLocator
    except ImportError as exc:
        raise ImportError(f"plotting needs matplotlib: {PLOT_HINT}") from exc

    rows = list(getattr(table, "rows", None) or [])
    meta = dict(getattr(table, "meta", None) or {})
    ran = [r for r in rows if r.get("status") in _RAN]
    not_run = [r for r in rows if r.get("status") not in _RAN]

    if not ran:
        fig = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(_title(meta), fontsize=11)
        ax = fig.add_subplot(1, 1, 1)
        what = "no configuration ran" if rows else "the table has no rows"
        _empty(ax, f"{what}: nothing to plot\n\n{_not_run_note(not_run)}")
        ax.set_frame_on(False)
        fig.savefig(path, format="png")
        return str(Path(path))

    fig = Figure(figsize=(14, 9.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(_title(meta), fontsize=11)
    if not_run:
        fig.supxlabel(_not_run_note(not_run), fontsize=7, color="0.35", ha="center")

    ax_time, ax_epoch, ax_tput, ax_mem = fig.subplots(2, 2).flat

    # loss panels: one colour per (mode, batch size), one line style per backend, so the same
    # configuration on two backends reads as the same colour
    backends = list(dict.fromkeys(str(r.get("backend")) for r in ran))
    linestyles = ["-", "--", ":", "-."]
    configs = list(dict.fromkeys((r.get("mode"), r.get("batch_size")) for r in ran))
    if len(configs) <= 10:
        palette = [f"C{i}" for i in range(len(configs))]
    else:  # a batch-size sweep: a colour ramp in study order reads better than a cycle
        cmap = matplotlib.colormaps["viridis"]
        palette = [cmap(0.9 * i / (len(configs) - 1)) for i in range(len(configs))]
    styles = {id(r): (palette[configs.index((r.get("mode"), r.get("batch_size")))],
                      linestyles[backends.index(str(r.get("backend"))) % 4]) for r in ran}
    if _loss_panel(ax_time, ran, styles, "elapsed_s", "training seconds (cumulative)", True):
        ax_time.set_title("loss vs training time", fontsize=10)
        handles, labels = ax_time.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7,
                   ncol=1 if len(labels) <= 24 else 2, title="configuration",
                   title_fontsize=8)
    if _loss_panel(ax_epoch, ran, styles, None, "epoch", False):
        ax_epoch.set_title("loss vs epoch", fontsize=10)
        ax_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))

    groups = _by_backend(ran)
    colors = {b: f"C{i % 10}" for i, b in enumerate(groups)}
    _throughput_panel(ax_tput, groups, colors)
    ax_tput.set_title("throughput vs batch size", fontsize=10)
    _memory_panel(ax_mem, groups, colors)
    ax_mem.set_title("peak memory vs batch size", fontsize=10)

    for ax in (ax_time, ax_epoch, ax_tput, ax_mem):
        _tidy_log_axes(ax, FuncFormatter)
    fig.savefig(path, format="png")
    return str(Path(path))
