"""The ``fastgd`` command: ``fastgd demo`` (the default) and ``fastgd backends``."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _synthetic_regression(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal(d).astype(np.float32)
    y = X @ w + 0.1 * rng.standard_normal(n).astype(np.float32)
    return X, y


def _synthetic_classification(n: int, d: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((classes, d))
    y = rng.integers(0, classes, n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def demo(quick: bool = False) -> int:
    """Train on built-in synthetic data across modes and backends; print a table."""
    import fastgd as fg

    n_lin = 20_000 if quick else 100_000
    n_mlp = 5_000 if quick else 20_000
    Xr, yr = _synthetic_regression(n_lin, 64)
    Xc, yc = _synthetic_classification(n_mlp, 64, 10)
    runs = [
        ("linear 64->1 mse", fg.Linear(64, 1), Xr, yr, [("bgd", None, 0.5), ("sgd", None, 0.002),
                                                        ("mbgd", 256, 0.05)]),
        ("mlp 64-128-10 softmax", fg.MLP([64, 128, 10]), Xc, yc,
         [("mbgd", 32, 0.05), ("mbgd", 128, 0.1)]),
    ]
    print(f"{'model':24} {'backend':10} {'mode':5} {'batch':>6} {'samples/s':>12} "
          f"{'compile s':>9} {'final loss':>11}")
    for title, model, X, y, configs in runs:
        for mode, bs, lr in configs:
            for backend in fg.backends.available():
                res = fg.fit(model, X, y, mode=mode, batch_size=bs, epochs=2, lr=lr,
                             backend=backend, seed=0)
                batch = {"bgd": len(X), "sgd": 1}.get(mode, bs)
                print(f"{title:24} {backend:10} {mode:5} {batch:>6} {res.samples_per_s:>12,.0f} "
                      f"{res.compile_s:>9.2f} {res.history[-1].train_loss:>11.5f}")
    return 0


def backends_cmd() -> int:
    """List backends with availability and the reason when unavailable."""
    import fastgd as fg

    for name, reason in fg.backends.describe().items():
        print(f"{name:12} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``fastgd`` console script."""
    parser = argparse.ArgumentParser(prog="fastgd", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="train on built-in data across modes and backends")
    p_demo.add_argument("--quick", action="store_true", help="smaller data, a few seconds")
    sub.add_parser("backends", help="list backends and why any is unavailable")
    args = parser.parse_args(argv)
    try:
        if args.command == "backends":
            return backends_cmd()
        return demo(quick=getattr(args, "quick", False))
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"fastgd: error: {exc}", file=sys.stderr)
        return 2
