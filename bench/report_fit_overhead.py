"""Where a default ``fit`` spends its wall clock, and what the input checks cost, as Markdown.

Usage: ``python bench/report_fit_overhead.py [--out bench/results/fit-overhead.md]``. On
linear and logistic regression over 1M x 64 float32 rows (MBGD 256, numba-cpu, kernels
already in Numba's cache): ``fit(epochs=5)`` with default arguments, in order, row-shuffled
and block-shuffled; the sum of the epochs' seconds against the wall clock of the call (the
history's ``train_loss`` is the kernels' batch-loss mean, so no full-data pass runs between
epochs). Then the input checks: ``check_features`` on float32 data (a finiteness pass) and
on float64 data converted to float32 (one pass that converts and checks), against NumPy's
single-threaded equivalents and the machine's read limit measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import workloads  # noqa: E402

import fastgd as fg  # noqa: E402
from fastgd import validate  # noqa: E402
from fastgd.benchmarking import read_bandwidth  # noqa: E402

EPOCHS = 5
REPEATS = 3


def _best(fn, repeats=REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fit_rows(X, y):
    """Table rows: each model and shuffle, the median of REPEATS fits."""
    rows = []
    for name, model, target in (("linear", fg.Linear(X.shape[1]), y),
                                ("logistic", fg.Linear(X.shape[1], loss="logistic"),
                                 (y > 0).astype(np.float32))):
        for shuffle in (False, True, "blocks"):
            fg.fit(model, X, target, batch_size=256, epochs=1, shuffle=shuffle)  # cache
            runs = []
            for _ in range(REPEATS):
                t = time.perf_counter()
                res = fg.fit(model, X, target, batch_size=256, epochs=EPOCHS, shuffle=shuffle)
                runs.append((time.perf_counter() - t, res.train_s, res.compile_s))
            wall, epochs, compile_s = sorted(runs)[len(runs) // 2]
            rows.append(f"| {name} | {shuffle!r} | {wall * 1e3:.0f} ms | {epochs * 1e3:.0f} ms "
                        f"| {100 * epochs / wall:.0f}% | {compile_s * 1e3:.0f} ms |")
            print(rows[-1], flush=True)
    return rows


def check_rows(X32, X64):
    """Table rows: the input checks against NumPy, in GB/s of input read."""
    f32 = np.dtype(np.float32)
    limit = read_bandwidth()
    cases = [("float32 input (finiteness)", X32,
              lambda: validate.check_features(X32, X32.shape[1], f32),
              lambda: np.isfinite(np.add.reduce(X32, axis=None))),
             ("float64 input converted to float32", X64,
              lambda: validate.check_features(X64, X64.shape[1], f32),
              lambda: np.isfinite(X64.astype(np.float32)).all())]
    rows = []
    for name, data, ours, numpy_way in cases:
        ours()
        t_ours, t_numpy = _best(ours), _best(numpy_way)
        rows.append(f"| {name} | {t_ours * 1e3:.1f} ms | {t_numpy * 1e3:.1f} ms | "
                    f"{t_numpy / t_ours:.1f}x | {100 * data.nbytes / t_ours / limit:.0f}% |")
        print(rows[-1], flush=True)
    return rows, limit


def main():
    """Measure both tables and print (or write) them."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    X, y = workloads.linear_data()
    cpu = platform.processor() or platform.machine()
    lines = [f"# fit overhead and input checks on numba-cpu ({cpu}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')})", "",
             f"`fit(model, X, y, batch_size=256, epochs={EPOCHS})` with default arguments on "
             f"{len(X):,} x {X.shape[1]} float32 rows, median of {REPEATS} calls, kernels "
             "loaded from Numba's cache (compile column: that load).", "",
             "| model | shuffle | wall clock | sum of epochs | epochs / wall | compile |",
             "|---|---|---|---|---|---|", *fit_rows(X, y), ""]
    rows, limit = check_rows(X, X.astype(np.float64))
    lines += [f"Input checks (`fastgd.validate.check_features`, best of {REPEATS}); read limit "
              f"{limit / 1e9:.1f} GB/s (best of `fastgd.benchmarking.read_methods`, same run).",
              "", "| input | fastgd | NumPy | speed-up | of the read limit |",
              "|---|---|---|---|---|", *rows]
    workloads.emit(lines, args.out)


if __name__ == "__main__":
    main()
