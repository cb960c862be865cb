"""Measure the CPU targets in one run and print them as Markdown ratios.

Usage: ``python bench/report_cpu.py [--out bench/results/cpu.md]``. Every figure is the best
of a few rounds after a warm-up; ratios are taken against peers and the read bandwidth
measured in this same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import workloads  # noqa: E402

import fastgd as fg  # noqa: E402
from fastgd.benchmarking import flop_rate, read_methods  # noqa: E402


def best_rate(run, samples, rounds=3):
    """Best samples/s over ``rounds`` calls of ``run``."""
    return samples / min(workloads._timed(run) for _ in range(rounds))


def compile_times():
    """First-call time of a fit in a fresh process: cold (empty cache) and cached."""
    code = ("import time, numpy as np, fastgd as fg; X=np.ones((64,64),np.float32); "
            "y=np.ones(64,np.float32); r=fg.fit(fg.MLP([64,128,10],loss='mse'), X, "
            "np.ones((64,10),np.float32), epochs=1); print(r.compile_s)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = [float(subprocess.check_output([sys.executable, "-c", code], env=env))
               for _ in range(2)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    # This machine's memory bandwidth and FLOP rate move by tens of percent within minutes,
    # so both limits are probed before and after the workloads, and the best of each is the
    # limit the rows below are quoted against: a row that needs a limit holds a function
    # of both, formatted once they are known.
    methods = read_methods(512 << 20)
    matmul_before = flop_rate(2048)  # float32 matrix product, NumPy's BLAS on every thread
    X, y = workloads.linear_data()
    linear_bytes = (X.nbytes + y.nbytes) / len(X)
    gather = workloads.gather_rate(X, y)  # samples/s of the cheapest shuffled pass
    lin = fg.Linear(64)
    sgd = best_rate(*workloads.make_fastgd(lin, X, y, "sgd"), rounds=2)
    sgd_ns = best_rate(*workloads.make_fastgd(lin, X, y, "sgd", shuffle=False), rounds=2)
    try:
        skl = best_rate(*workloads.make_sklearn_sgd(X, y), rounds=2)
    except ImportError:
        skl = float("nan")
    rows.append(("linear SGD b=1 shuffled", sgd, f"{sgd / skl:.2f}x sklearn SGDRegressor "
                 f"({skl / 1e6:.2f}M/s, shuffle=True)", "3x"))
    rows.append(("linear SGD b=1 unshuffled", sgd_ns, f"{sgd_ns / skl:.2f}x sklearn", ""))
    for b in (256, 4096):
        r = best_rate(*workloads.make_fastgd(lin, X, y, "mbgd", b))
        rn = best_rate(*workloads.make_fastgd(lin, X, y, "mbgd", b, shuffle=False))
        npr = best_rate(*workloads.make_numpy_mbgd(X, y, b), rounds=2)
        nprn = best_rate(*workloads.make_numpy_mbgd(X, y, b, shuffle=False), rounds=2)
        rows.append((f"linear MBGD b={b} shuffled", r,
                     lambda floor, matmul, r=r, npr=npr: f"{r / floor:.0%} of read floor, "
                     f"{r / gather:.0%} of gather limit; {r / npr:.2f}x NumPy loop "
                     f"({npr / 1e6:.1f}M/s)",
                     ">=70%, 3x" if b == 256 else ""))
        rows.append((f"linear MBGD b={b} unshuffled", rn,
                     lambda floor, matmul, rn=rn, nprn=nprn: f"{rn / floor:.0%} of read floor; "
                     f"{rn / nprn:.2f}x NumPy loop ({nprn / 1e6:.1f}M/s)",
                     ">=70%, 3x" if b == 256 else ""))
    # what Adam's state costs: the same epoch (MBGD b=256, in order) with SGD and with Adam
    sgd256 = best_rate(*workloads.make_fastgd(lin, X, y, "mbgd", 256, shuffle=False,
                                              optimizer=fg.SGD(lr=1e-4)), rounds=5)
    adam256 = best_rate(*workloads.make_fastgd(lin, X, y, "mbgd", 256, shuffle=False,
                                               optimizer=fg.Adam(lr=1e-4)), rounds=5)
    rows.append(("linear MBGD b=256 unshuffled, Adam", adam256,
                 f"epoch {sgd256 / adam256:.2f}x SGD's ({sgd256 / 1e6:.1f}M/s in this run)",
                 "<=1.25x"))
    bgd = best_rate(*workloads.make_fastgd(lin, X, y, "bgd"), rounds=5)
    rows.append(("linear BGD epoch", bgd,
                 lambda floor, matmul: f"{floor / bgd:.2f}x the read-floor time", "<=1.5x"))
    Xm, ym = workloads.mlp_data()
    mlp = fg.MLP([64, 128, 10])
    mlp_flops = 6 * (64 * 128 + 128 * 10)  # per sample, as fastgd.plan counts them
    for b, target in ((1, ""), (32, "4x; >=35% of matmul"), (128, "2x"),
                      (1024, "1x; >=55% of matmul")):
        r = best_rate(*workloads.make_fastgd(mlp, Xm[: 20_000 if b == 1 else None],
                                             ym[: 20_000 if b == 1 else None], "mbgd", b,
                                             lr=0.01, momentum=0.9), rounds=2)
        try:
            steps = max(1, 20_000 // b)
            t = best_rate(*workloads.make_torch_mlp(Xm, ym, b, steps), rounds=2)
            ratio = f"{r / t:.2f}x PyTorch CPU ({t / 1e6:.3f}M/s)"
        except ImportError:
            ratio = "torch missing"
        rows.append((f"MLP 64-128-10 b={b}", r,
                     lambda floor, matmul, r=r, ratio=ratio: f"{r * mlp_flops / matmul:.0%} of "
                     f"the matmul rate; {ratio}", target))
    for b, target in ((32, "4x"), (128, "2x"), (1024, "1x")):
        r = best_rate(*workloads.make_fastgd(mlp, Xm, ym, "mbgd", b,
                                             optimizer=fg.Adam(lr=1e-3)), rounds=2)
        try:
            steps = max(1, 20_000 // b)
            t = best_rate(*workloads.make_torch_mlp(Xm, ym, b, steps, optimizer="adam"),
                          rounds=2)
            ratio = f"{r / t:.2f}x PyTorch CPU + torch.optim.Adam ({t / 1e6:.3f}M/s)"
        except ImportError:
            ratio = "torch missing"
        rows.append((f"MLP 64-128-10 b={b}, Adam", r, ratio, target))
    cold, cached = compile_times()
    after = read_methods(512 << 20)
    matmul = max(matmul_before, flop_rate(2048))  # probed before and after, as the reads
    bw = max(*methods.values(), *after.values())  # the all-core limit: the best of any probe
    floor = bw / linear_bytes  # samples/s if only reading X and y
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; float32 matmul rate (2048^3, NumPy's BLAS, all threads; "
        f"the best of probes before and after the workloads) {matmul / 1e9:.0f} GFLOP/s "
        f"(before: {matmul_before / 1e9:.0f}); MLP 64-128-10 counted as {mlp_flops:,} FLOP "
        f"a sample; "
        f"read limit {bw / 1e9:.1f} GB/s, the best of reading 512 MB before and after the "
        f"workloads by " + ", ".join(f"{k} {v / 1e9:.1f}/{after[k] / 1e9:.1f}"
                                     for k, v in methods.items()) + " GB/s; "
        f"linear data n={len(X):,}, d=64, float32; read floor {floor / 1e6:.0f}M samples/s; "
        f"gather limit (one core reading rows in a random order with prefetch, no "
        f"arithmetic) {gather / 1e6:.1f}M samples/s.",
        "",
        "| workload | fastgd samples/s | ratio | target |",
        "|---|---|---|---|",
    ] + [f"| {a} | {b / 1e6:.2f}M | {c(floor, matmul) if callable(c) else c} | {d} |"
         for a, b, c, d in rows] + [
        "",
        f"JIT first call (fit of an MLP, fresh process): cold {cold:.1f} s, "
        f"from Numba's cache {cached:.2f} s.",
    ]
    workloads.emit(lines, args.out)


if __name__ == "__main__":
    main()
