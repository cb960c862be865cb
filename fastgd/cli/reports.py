"""What the studies write: the output folder, each study's ``.md/.json/.csv/.png``, the
tables or JSON on stdout, and notes on stderr."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..compare import json_default
from .defaults import DEFAULT_OUT


def note(args, text: str, always: bool = False) -> None:
    """A line on stderr (skipped with --quiet unless ``always``)."""
    if always or not getattr(args, "quiet", False):
        print(f"fastgd: {text}", file=sys.stderr, flush=True)


def have_matplotlib() -> bool:
    """Whether the PNG can be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def out_dir(path) -> Path:
    """The output folder, created now (so that an unwritable one fails before the study)."""
    if path:
        out = Path(path)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(DEFAULT_OUT) / stamp
        i = 2
        while out.exists():
            out = Path(DEFAULT_OUT) / f"{stamp}-{i}"
            i += 1
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def markdown_report(name: str, table, png: str | None) -> str:
    """The ``<study>.md`` text: the command, the study's settings, the table, the plot."""
    m = table.meta
    extras = ", ".join(f"{k} {m[k]}" for k in ("lr_schedule", "target_loss")
                       if m.get(k) not in (None, 0, 0.0, False))
    opt = m.get("optimizer") or {}
    opt_text = (f"{opt.get('name')}(" + ", ".join(f"{k}={v!r}" for k, v in opt.items()
                                                  if k != "name") + ")") if opt else "?"
    lines = [f"# {name}", ""]
    if m.get("command"):
        lines += [f"`{m['command']}`", ""]
    lines += [f"- study: {m.get('study')}; model: {m.get('model')}",
              f"- data: {m.get('data')} (n = {m.get('n')}, d = {m.get('d')}), {m.get('dtype')}"
              + _data_handling(m),
              f"- optimizer {opt_text}" + _rule_text(m.get("lr_rule")),
              f"- epochs {m.get('epochs')}, repeats {m.get('repeats')}, "
              f"seed {m.get('seed')}" + (f", {extras}" if extras else ""),
              f"- machine: {m.get('machine')}; date: {m.get('date')}"]
    if m.get("note"):
        lines.append(f"- note: {m['note']}")
    lines += ["", table.to_markdown(), "", f"Conclusion: {table.conclusion()}", ""]
    if png:
        lines += [f"![{name}]({png})", ""]
    return "\n".join(lines)


def _data_handling(meta: dict) -> str:
    """``; features standardized; 20% held out``: what was done to the data, if anything."""
    parts = []
    if meta.get("standardized"):
        parts.append("features standardized (training-row mean and deviation)")
    if meta.get("val_split"):
        parts.append(f"{meta['val_split']:.0%} of the rows held out for validation")
    return "".join(f"; {p}" for p in parts)


def _rule_text(rule: dict | None) -> str:
    """``, lr = 0.1 x B/32 ...`` for a study with a linear-scaling rule, else nothing."""
    if not rule:
        return ""
    return (f"; lr by the linear-scaling rule: {rule['base_lr']:g} x B/{rule['ref_batch']}, "
            f"at most {rule['max_lr']:g}, warm-up over the first "
            f"{rule['warmup_fraction']:.0%} of the steps when scaled up (per row: column lr)")


def write_study(table, out: Path, name: str, plot: bool) -> None:
    """``<name>.png`` (when ``plot``), ``.json``, ``.csv`` and ``.md`` in ``out``."""
    png = None
    if plot:
        from ..plot import plot_table

        png = f"{name}.png"
        plot_table(table, out / png)
    table.to_json(out / f"{name}.json")
    table.to_csv(out / f"{name}.csv")
    (out / f"{name}.md").write_text(markdown_report(name, table, png))


def print_study(table, name: str, optimizer: str) -> None:
    """A study's heading (with its ``optimizer`` described), its note if any, and its
    Markdown table on stdout."""
    m = table.meta
    print(f"## {name}: {m.get('model')} on {m.get('data')} (n={m.get('n')}, d={m.get('d')}, "
          f"{optimizer})")
    if m.get("note"):
        print(f"note: {m['note']}")
    print()
    print(table.to_markdown())
    print()
    print(f"conclusion: {table.conclusion()}")
    print(flush=True)


def print_results(args, results: dict, out: Path, plot: bool) -> None:
    """The end of the studies: with ``--json`` the table (one study) or
    ``{"studies": {NAME: table}}`` on stdout, else the folder and what it holds."""
    if args.json:
        if len(results) == 1:
            text = next(iter(results.values())).to_json()
        else:
            text = json.dumps({"studies": {k: t.to_dict() for k, t in results.items()}},
                              indent=1, default=json_default)
        print(text)
        note(args, f"results in {out}/")
    else:
        print(f"results: {out}/ ({', '.join(results)}: .md .json .csv"
              f"{' .png' if plot else ''})")
