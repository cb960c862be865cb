"""Run the benchmark suites and write their tables (and a throughput plot) as Markdown.

Usage::

    python bench/make_results.py [--json bench.json] [--out bench/results/suite-<date>.md]
                                 [--png bench/results/suite-<date>.png] [-- pytest args]

Runs ``pytest bench --benchmark-json`` (or reads an existing JSON with ``--from-json``),
then, per benchmark group (model, mode), one table: every configuration's samples/s, steps/s,
fraction of the machine limits, and its ratio to each peer measured at the same batch size
in the same session. The plot shows samples/s against batch size per implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))


def _impl(name: str) -> str:
    """'test_fastgd_linear_mbgd[...]' -> 'fastgd'; peers by their test name."""
    base = name.split("[")[0].removeprefix("test_")
    return base.split("_")[0]


def _params(bench: dict) -> dict:
    params = dict(bench.get("params") or {})
    info = bench.get("extra_info") or {}
    if "batch_size" in info:
        params.setdefault("batch", info["batch_size"])
    return params


def _key(params: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in params.items() if k != "batch"))


def tables(data: dict) -> str:
    """Markdown tables of one pytest-benchmark JSON document."""
    by_group = defaultdict(list)
    for b in data["benchmarks"]:
        by_group[b["group"] or "ungrouped"].append(b)
    out = []
    for group, benches in sorted(by_group.items()):
        rates = {}
        for b in benches:
            p = _params(b)
            rates[(_impl(b["name"]), p.get("batch"), _key(p))] = b["extra_info"].get(
                "samples_per_s")
        out += [f"### {group}", "",
                "| implementation | params | samples/s | steps/s | of read bw | of FLOP rate "
                "| vs peers (same batch) |", "|---|---|---|---|---|---|---|"]
        for b in sorted(benches, key=lambda b: (_impl(b["name"]) != "fastgd", _impl(b["name"]),
                                                str(_key(_params(b))),
                                                _params(b).get("batch") or 0)):
            info, p, impl = b["extra_info"], _params(b), _impl(b["name"])
            sps = info.get("samples_per_s")
            ratios = []
            if impl == "fastgd" and sps:
                for (peer, batch, key), rate in rates.items():
                    same_batch = batch == p.get("batch") or group.endswith("sgd")
                    if peer != "fastgd" and rate and same_batch and (
                            not key or key == _key(p) or group.endswith("sgd")):
                        ratios.append(f"{sps / rate:.2f}x {peer}")
            out.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                impl, ", ".join(f"{k}={v}" for k, v in sorted(p.items())),
                f"{sps:,.0f}" if sps else "", f"{info['steps_per_s']:,.0f}"
                if info.get("steps_per_s") else "", _pct(info.get("fraction_of_read_bw")),
                _pct(info.get("fraction_of_flop_rate")), "; ".join(sorted(set(ratios)))))
        out.append("")
    return "\n".join(out)


def _pct(v) -> str:
    return "" if v is None else f"{v:.0%}"


def plot(data: dict, path: str) -> None:
    """samples/s against batch size, one line per (group, implementation)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = defaultdict(list)
    for b in data["benchmarks"]:
        info, p = b["extra_info"], _params(b)
        if info.get("samples_per_s") and p.get("batch"):
            shuffled = "" if p.get("shuffle", True) else " unshuffled"
            lines[(b["group"], _impl(b["name"]) + shuffled)].append(
                (p["batch"], info["samples_per_s"]))
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (group, impl), pts in sorted(lines.items()):
        pts.sort()
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"{group}: {impl}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s")
    ax.set_title(data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "")
                 or platform.machine())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    """Run the suites (or read ``--from-json``) and write the Markdown and the plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    day = time.strftime("%Y-%m-%d")
    ap.add_argument("--from-json", help="read this pytest-benchmark JSON instead of running")
    ap.add_argument("--json", default=os.path.join(HERE, "results", f"suite-{day}.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", f"suite-{day}.md"))
    ap.add_argument("--png", default=os.path.join(HERE, "results", f"suite-{day}.png"))
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"),
                    help="Markdown file whose suite section (between the markers "
                         f"{BEGIN} and {END}) is replaced by the new tables ('' to skip)")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    src = args.from_json
    if src is None:
        src = args.json
        cmd = [sys.executable, "-m", "pytest", HERE, "-q", f"--benchmark-json={src}",
               *args.pytest_args]
        print("running:", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc not in (0, 5):
            return rc
    with open(src) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    head = [f"Benchmark suite, {data.get('datetime', day)[:16]}, "
            f"{machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
            f"{machine.get('cpu', {}).get('count', os.cpu_count())} cores, "
            f"Python {machine.get('python_version', platform.python_version())}.", "",
            "Command: `python bench/make_results.py " + " ".join(args.pytest_args) + "`", ""]
    limits = next((b["extra_info"]["limits"] for b in data["benchmarks"]
                   if "limits" in b["extra_info"]), None)
    if limits:
        head += ["Machine limits measured in the same session: " + ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in limits.items() if v is not None) + ".", ""]
    text = "\n".join(head) + tables(data)
    text = re.sub(r"\n{3,}", "\n\n", text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    try:
        plot(data, args.png)
    except ImportError:
        print("matplotlib missing: no plot (pip install 'fastgd[plot]')")
    if args.results:
        update_section(args.results, text, os.path.relpath(args.out, os.path.dirname(
            os.path.abspath(args.results))))
    print(f"wrote {args.out} and {args.png}" + (f"; updated {args.results}" if args.results
                                                 else ""))
    return 0


BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


def update_section(path: str, tables_md: str, source: str) -> None:
    """Replace the text between the suite markers of ``path`` (appending the section when
    the markers are missing) with ``tables_md``, demoting its headings one level."""
    body = re.sub(r"^### ", "#### ", tables_md, flags=re.M)
    block = f"{BEGIN}\n_Written by `bench/make_results.py` from `{source}`._\n\n{body}\n{END}"
    text = open(path).read() if os.path.exists(path) else "# fastgd benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Latest suite run\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
