"""Linear MBGD in order against the machine's read limit, measured in the same rounds.

Usage: ``python bench/report_linear_read.py [--batch 256] [--rounds 3]``. Each round
measures every read method (``fastgd.benchmarking.read_methods``, 512 MiB) and then ten
epochs of linear regression on 1M x 64 float32 (numba-cpu, unshuffled), and prints the
best epoch's bytes/s as a fraction of that round's best method. Rounds are kept apart
because this machine's memory bandwidth moves between them.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import workloads  # noqa: E402

import fastgd as fg  # noqa: E402
from fastgd.benchmarking import read_methods  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    X, y = workloads.linear_data()
    nbytes = X.nbytes + y.nbytes
    run, _ = workloads.make_fastgd(fg.Linear(X.shape[1]), X, y, "mbgd", args.batch,
                                   shuffle=False)
    run()
    print("| round | numpy sum | numba 1 thread | numba all threads | epoch | GB/s | "
          "of the limit |\n|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        methods = read_methods(512 << 20)
        best = min(workloads._timed(run) for _ in range(10))
        limit = max(methods.values())
        cells = " | ".join(f"{methods[m] / 1e9:.1f} GB/s" for m in
                           ("numpy-sum", "numba-1-thread", "numba-all-threads"))
        print(f"| {r + 1} | {cells} | {best * 1e3:.2f} ms | {nbytes / best / 1e9:.1f} | "
              f"{nbytes / best / limit:.0%} |")


if __name__ == "__main__":
    main()
