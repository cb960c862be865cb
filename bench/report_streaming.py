"""Streaming data larger than memory: speed against in-memory data, and what the chunked
shuffle changes, in one run, as Markdown.

Usage: ``python bench/report_streaming.py [--rows 2000000] [--out bench/results/x.md]``.

Speed: linear regression ``rows`` x 64 float32 saved as ``.npy`` (in the page cache: it was
just written and is read once before timing), MBGD 256 on numba-cpu, unshuffled and
shuffled, fed as (1) an in-memory array, (2) ``np.load(mmap_mode="r")`` (in place), (3)
``fg.chunks.from_npy`` (64k-row chunks, each a map of its own rows, the next read and
checked while one trains) and (4)
``fg.chunks.from_arrays`` over the memory map (64k-row views). Samples/s is the wall-clock
time of ``fit`` less its compile time, best of three alternating runs of each feed, over 2
epochs; the streamed feeds' share of the in-memory rate is the figure of merit.

Loss: the exact training loss after a few epochs with the chunked shuffle (chunks of
``rows/16`` rows, their order and the rows inside each permuted every epoch) against a full
row shuffle of the same data in memory, on logistic regression 200k x 32 and on the MNIST-5k
MLP stored sorted by class (the worst case for chunks: a chunk holds one or two classes)
and permuted once beforehand (what to do with such data).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import workloads  # noqa: E402

import fastgd as fg  # noqa: E402
from fastgd import chunks  # noqa: E402
from fastgd.kernels import reference  # noqa: E402
from fastgd.kernels.reference import flatten  # noqa: E402
from fastgd.validate import check_targets  # noqa: E402

CHUNK_ROWS = 65536
EPOCHS = 2


def speed_rows(rows: int, tmp: str) -> list[str]:
    """The speed table's rows."""
    X, y = workloads.linear_data(n=rows)
    xp, yp = os.path.join(tmp, "X.npy"), os.path.join(tmp, "y.npy")
    np.save(xp, X)
    np.save(yp, y)
    mm = np.load(xp, mmap_mode="r")
    float(np.asarray(mm[::4096]).sum())  # touch the map once
    feeds = {
        "in-memory array": lambda: (X, y),
        "np.load(mmap_mode='r'), in place": lambda: (np.load(xp, mmap_mode="r"), y),
        "fg.chunks.from_npy (a map per chunk)": lambda: (chunks.from_npy(xp, yp, CHUNK_ROWS),
                                                   None),
        "fg.chunks.from_arrays (memmap views)": lambda: (
            chunks.from_arrays(np.load(xp, mmap_mode="r"), y, CHUNK_ROWS), None),
    }
    out = []
    for shuffle in (False, True):
        best = dict.fromkeys(feeds, 0.0)
        for _ in range(3):
            for name, feed in feeds.items():
                Xf, yf = feed()
                t = time.perf_counter()
                res = fg.fit(fg.Linear(64), Xf, yf, batch_size=256, epochs=EPOCHS, lr=0.01,
                             shuffle=shuffle)
                wall = time.perf_counter() - t - res.compile_s
                best[name] = max(best[name], EPOCHS * rows / wall)
        base = best["in-memory array"]
        for name, rate in best.items():
            out.append(f"| {name} | {shuffle} | {rate / 1e6:.1f}M | "
                       f"**{100 * rate / base:.0f}%** |")
    return out


def loss_rows() -> list[str]:
    """The loss table's rows."""
    Xl, yl = fg.datasets.make_classification(200_000, 32, 2, class_sep=1.0)
    Xm, ym = fg.datasets.load_mnist5k()
    (Xm,) = fg.datasets.standardize(Xm)
    mixed = np.random.default_rng(0).permutation(len(Xm))
    problems = [("logistic 200k x 32", fg.Linear(32, loss="logistic"), Xl, yl, 0.5, 256, 3),
                ("MLP 784-128-10 MNIST-5k, stored sorted by class", fg.MLP([784, 128, 10]),
                 Xm, ym, 0.05, 32, 5),
                ("MLP 784-128-10 MNIST-5k, permuted once on disk", fg.MLP([784, 128, 10]),
                 Xm[mixed], ym[mixed], 0.05, 32, 5)]
    out = []
    for name, model, X, y, lr, batch, epochs in problems:
        Y = check_targets(y, model, len(X), np.dtype(np.float32))
        losses = {}
        for seed in range(3):
            kw = dict(batch_size=batch, epochs=epochs, lr=lr, seed=seed)
            full = fg.fit(model, X, y, shuffle=True, **kw)
            streamed = fg.fit(model, chunks.from_arrays(X, y, len(X) // 16), **kw)
            for key, res in (("row shuffle", full), ("chunked shuffle", streamed)):
                losses.setdefault(key, []).append(reference.dataset_loss(
                    flatten(res.params), X, Y, model.sizes, model.activation, model.loss))
        a, b = np.mean(losses["row shuffle"]), np.mean(losses["chunked shuffle"])
        out.append(f"| {name} | {batch} | {epochs} | {a:.5f} | {b:.5f} | "
                   f"{100 * (b - a) / a:+.2f}% |")
    return out


def main():
    """Run both tables and print (or write) them."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speed = speed_rows(args.rows, tmp)
    lines = [f"# Streaming on numba-cpu ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})", "",
             f"Linear {args.rows} x 64 float32, MBGD 256, {EPOCHS} epochs; chunks of "
             f"{CHUNK_ROWS} rows; best of 3 alternating runs; the file in the page cache.",
             "", "| feed | shuffle | samples/s | of in-memory |", "|---|---|---|---|",
             *speed, "",
             "Exact training loss after the last epoch, mean of seeds 0-2: a full row "
             "shuffle of the data in memory against the chunked shuffle (16 chunks, their "
             "order and their rows permuted every epoch).", "",
             "| problem | batch | epochs | row shuffle | chunked shuffle | difference |",
             "|---|---|---|---|---|---|", *loss_rows()]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
