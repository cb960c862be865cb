"""The batch-size study on MNIST-5k: softmax regression and MLP 784-128-10, SGD with and
without momentum, into ``bench/results/`` (Markdown, JSON, figure per model).

Usage: ``python bench/report_batchsize.py [--models softmax,mlp] [--out bench/results]``.
Features standardised on the training split (80%, seeded; the other 20% is the validation
set), float32 on numba-cpu; every configuration's learning rate tuned per batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import fastgd as fg

STUDIES = {
    "softmax": dict(model=lambda: fg.Linear(784, 10, loss="softmax"), target=0.3),
    "mlp": dict(model=lambda: fg.MLP([784, 128, 10]), target=0.15),
}


def mnist_split(seed=0):
    """MNIST-5k, standardised on an 80% training split; (X, y, X_val, y_val)."""
    X, y = fg.datasets.load_mnist5k()
    order = np.random.default_rng(seed).permutation(len(X))
    tr, va = order[:4000], order[4000:]
    X_train, X_val = fg.datasets.standardize(X[tr], X[va])
    return X_train, y[tr], X_val, y[va]


def main():
    """Run the studies and write their reports."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="softmax,mlp")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--max-epochs", type=int, default=50)
    args = ap.parse_args()
    X, y, Xv, yv = mnist_split()
    out = Path(args.out)
    stamp = time.strftime("%Y-%m-%d")
    summary = {}
    for name in args.models.split(","):
        spec = STUDIES[name]
        t0 = time.time()

        def progress(b, lr, traj, name=name):
            print(f"[{name}] batch {b} lr {lr:.3g}: {traj.status} steps={traj.steps} "
                  f"best={traj.best_loss:.4f}", flush=True)

        group = fg.batch_size_study(spec["model"](), X, y, target_loss=spec["target"],
                                    momentum=(0.0, 0.9), X_val=Xv, y_val=yv,
                                    max_epochs=args.max_epochs, progress=progress)
        wall = time.time() - t0
        base = out / f"cpu-{stamp}-batchsize-mnist5k-{name}"
        header = (f"# Batch-size study, MNIST-5k, {name} (train 4000 / val 1000, standardised)"
                  f"\n\nMachine: {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores; numba-cpu float32; {wall:.0f} s wall in all.\n\n")
        base.with_suffix(".md").write_text(header + group.to_markdown() + "\n")
        group.to_json(base.with_suffix(".json"))
        group.plot(base.with_suffix(".png"))
        summary[name] = dict(wall_s=wall, studies=[
            dict(label=s.label, recommended=s.recommended_batch_size, **s.critical.to_dict())
            for s in group.studies])
        print(group.to_markdown(), flush=True)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
