"""The cost of measuring gradient noise on numba-cpu, in one run, as Markdown.

Usage: ``python bench/report_noise.py [--out bench/results/noise.md]``. For linear 1M x 64
MBGD 256 and MLP 64-128-10 at batch 128 (shuffled, as users train): the epoch time with
``track_noise`` off and on (interleaved rounds, best of each, so machine noise hits both
alike) and the exact ``noise_scale`` pass against one epoch. Compile time is excluded (each
run is prepared, i.e. compiled, before it is timed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import workloads  # noqa: E402

import fastgd as fg  # noqa: E402

ROUNDS = 2 if workloads.QUICK else 5


def _epoch_runner(model, X, y, batch_size, track, **kw):
    run = fg.prepare(model, X, y, mode="mbgd", batch_size=batch_size, track_noise=track,
                     dtype="float32", **kw)
    epochs = iter(range(1 << 30))
    return run, lambda: run.run_epoch(next(epochs))


def overhead(name, model, X, y, batch_size, **kw) -> dict:
    """Best epoch seconds off and on, and the exact pass's seconds, for one workload."""
    off_run, off = _epoch_runner(model, X, y, batch_size, False, **kw)
    on_run, on = _epoch_runner(model, X, y, batch_size, True, **kw)
    best_off = best_on = float("inf")
    for _ in range(ROUNDS):
        best_off = min(best_off, workloads._timed(off))
        best_on = min(best_on, workloads._timed(on))
    on_run.epoch_noise()
    engine = off_run.engine
    engine.exact_noise(off_run.X, off_run.Y)  # compile the exact pass outside the timing
    exact = min(workloads._timed(lambda: engine.exact_noise(off_run.X, off_run.Y))
                for _ in range(ROUNDS))
    return dict(name=name, off=best_off, on=best_on, exact=exact)


def main():
    """Measure both workloads and print (or write) the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", choices=("linear", "mlp"), default=None)
    args = ap.parse_args()
    t0 = time.time()
    rows = []
    if args.only != "mlp":
        X, y = workloads.linear_data()
        rows.append(overhead(f"linear {len(X)}x64 MBGD 256", fg.Linear(64), X, y, 256,
                             lr=1e-4))
    if args.only != "linear":
        Xm, ym = workloads.mlp_data()
        rows.append(overhead(f"MLP 64-128-10 {len(Xm)} rows b=128", fg.MLP([64, 128, 10]),
                             Xm, ym, 128, lr=0.01, momentum=0.9))
    lines = [f"# track_noise overhead on numba-cpu ({platform.processor() or platform.machine()},"
             f" {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})", "",
             "| workload | epoch off | epoch on | overhead (goal <= 15%) | exact pass | "
             "exact / epoch (goal <= 2x) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['off'] * 1e3:.1f} ms | {r['on'] * 1e3:.1f} ms | "
                     f"{100 * (r['on'] / r['off'] - 1):+.1f}% | {r['exact'] * 1e3:.1f} ms | "
                     f"{r['exact'] / r['off']:.2f}x |")
    lines += ["", f"Best of {ROUNDS} interleaved rounds each, shuffled epochs, float32; "
              f"{time.time() - t0:.0f} s in all."]
    workloads.emit(lines, args.out)


if __name__ == "__main__":
    main()
