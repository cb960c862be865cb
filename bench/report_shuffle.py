"""What the shuffle strategies cost and change, in one run, as Markdown.

Usage: ``python bench/report_shuffle.py [--out bench/results/shuffle.md]``. For linear
regression (1M x 64 synthetic), logistic regression (synthetic) and an MLP on MNIST-5k
(sorted by class, as it ships): the final training loss after a fixed budget of epochs and
the steady-state epoch time under ``shuffle=True`` (a new permutation each epoch),
``"blocks"`` (a new permutation of 64 KiB blocks and of the rows inside each), ``"once"``
(one permutation of a private copy) and ``False`` (the given order), on numba-cpu, MBGD
256, float32; the MNIST-5k MLP also on the same images permuted once beforehand (the
block shuffle assumes data whose order carries no structure).
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

STRATEGIES = (True, "blocks", "once", False)
EPOCHS = 3


def problems():
    """(name, model, X, y, lr) of the three problems."""
    X, y = workloads.linear_data()
    Xl, yl = fg.datasets.make_classification(200_000, 32, 2, class_sep=2.0)
    Xm, ym = fg.datasets.load_mnist5k()
    (Xm,) = fg.datasets.standardize(Xm)
    mixed = np.random.default_rng(0).permutation(len(Xm))
    return [("linear 1M x 64", fg.Linear(64), X, y, 0.05),
            ("logistic 200k x 32", fg.Linear(32, loss="logistic"), Xl, yl, 0.5),
            ("MLP 784-128-10 MNIST-5k (sorted by class)", fg.MLP([784, 128, 10]), Xm, ym,
             0.1),
            ("MLP 784-128-10 MNIST-5k (permuted beforehand)", fg.MLP([784, 128, 10]),
             Xm[mixed], ym[mixed], 0.1)]


def main():
    """Run every problem under every strategy and print (or write) the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [f"# Shuffle strategies on numba-cpu ({platform.processor() or platform.machine()},"
             f" {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})", "",
             f"MBGD 256, float32, SGD, {EPOCHS} epochs from the same start; loss is the exact "
             "training loss after the last epoch; epoch time the best epoch; speed the "
             "samples/s of that epoch against the same problem in the given order (False), "
             "measured in the same run.", "",
             "| problem | shuffle | final train loss | vs True | best epoch | speed vs False |",
             "|---|---|---|---|---|---|"]
    for name, model, X, y, lr in problems():
        rows = []
        for strategy in STRATEGIES:
            res = fg.fit(model, X, y, batch_size=256, epochs=EPOCHS, lr=lr, shuffle=strategy,
                         eval_every=EPOCHS)
            rows.append((strategy, res.history[-1].full_train_loss,
                         min(r.seconds for r in res.history)))
        base, in_order = rows[0][1], rows[-1][2]
        for strategy, loss, best in rows:
            lines.append(f"| {name} | {strategy!r} | {loss:.5g} | {100 * (loss / base - 1):+.1f}%"
                         f" | {best * 1e3:.1f} ms | {100 * in_order / best:.0f}% |")
            print(lines[-1], flush=True)
    workloads.emit(lines, args.out)


if __name__ == "__main__":
    main()
