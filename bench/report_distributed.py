"""Data-parallel scaling on this machine, an all-gather cost model fitted from it, and its
predictions for many workers on stated networks, as Markdown (and a PNG).

Usage: ``python bench/report_distributed.py [--out bench/results/x.md]``. It starts itself
under ``mpiexec -n 1`` and ``mpiexec -n 2`` (each rank one Numba thread, so a rank is a
core), then, in this process, fits the model and writes the report, the plot and the
measurements (``x.json``; ``--from-json x.json`` redoes the report from them).

Measured, per problem (linear 1M x 64 and MLP 64-128-10, float32, numba-cpu, unshuffled)
and mode (SGD, MBGD, BGD), weak scaling (every rank its own shard of the one-rank size,
the per-rank batch fixed) and strong scaling (the global batch and data fixed, split over
the ranks): samples/s of the whole job, and per step the compute time and the time in the
gradient exchange (``FitResult.exchange_s``: the transfer and any wait for a slower rank).
A compiled ``numba_mpi.allgather`` loop over message sizes gives the exchange's cost,
``T(m) = alpha + (P - 1) m / beta`` on ``P`` ranks, fitted by least squares; an exchange's
time beyond it is reported as idle (the wait for the slower rank), and the model's step
time (one rank's compute plus ``T``) is checked against the measured two-rank step.

Predicted, for ``P = 2 .. 1024`` workers on two stated networks (25 Gb/s Ethernet with 20 us
latency; an NVLink-class 400 GB/s with 5 us): the weak-scaling efficiency ``t_c / (t_c +
T)`` of fastgd's all-gather (``alpha log2 P + (P - 1) m / beta``: recursive doubling) and
of a ring all-reduce (``2 (P - 1) alpha + 2 (P - 1) / P * m / beta``), and the per-rank batch
above which computing a step takes longer than exchanging its gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORKS = {"25 Gb/s Ethernet, 20 us": (20e-6, 25e9 / 8),
            "NVLink-class 400 GB/s, 5 us": (5e-6, 400e9)}
WORKERS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


# ----------------------------------------------------------------------------- worker
def problems():
    """``(name, model, rows for one rank, [(mode, per-rank batch), ...])``."""
    import fastgd as fg

    return [("linear 1M x 64", fg.Linear(64), 1_000_000, [("mbgd", 256), ("bgd", None)]),
            ("linear 100k x 64", fg.Linear(64), 100_000, [("sgd", None)]),
            ("MLP 64-128-10", fg.MLP([64, 128, 10]), 100_000,
             [("mbgd", 32), ("mbgd", 1024), ("bgd", None)])]


def data(model, n, rank, seed=0):
    """Rank ``rank``'s ``n`` rows (a different draw per rank)."""
    rng = np.random.default_rng([seed, rank])
    X = rng.standard_normal((n, model.n_features), dtype=np.float32)
    if model.loss == "softmax":
        return X, rng.integers(0, model.n_outputs, n)
    return X, X @ np.ones(model.n_features, np.float32)


def allgather_times(sizes, repeats=200):
    """Seconds per ``numba_mpi.allgather`` of ``m`` bytes per rank, in compiled code."""
    import numba
    import numba_mpi
    from mpi4py import MPI

    @numba.njit
    def loop(send, recv, count, times):
        t0 = numba_mpi.wtime()
        for _ in range(times):
            numba_mpi.allgather(send, recv, count)
        return numba_mpi.wtime() - t0

    P = MPI.COMM_WORLD.Get_size()
    out = {}
    for m in sizes:
        n = max(1, m // 4)
        send, recv = np.zeros(n, np.int32), np.zeros(n * P, np.int32)
        loop(send, recv, n, 3)
        MPI.COMM_WORLD.Barrier()
        best = min(loop(send, recv, n, repeats) for _ in range(3)) / repeats
        out[n * 4] = MPI.COMM_WORLD.allreduce(best, op=MPI.MAX)
    return out


def worker(path):
    """One MPI job's measurements, written by rank 0 as JSON."""
    from mpi4py import MPI

    import fastgd as fg

    comm = MPI.COMM_WORLD
    P, rank = comm.Get_size(), comm.Get_rank()
    rows = []
    for name, model, n1, modes in problems():
        for mode, b in modes:
            for scaling in ("weak", "strong"):
                if scaling == "strong" and mode == "bgd":
                    n, batch = n1 // P, None
                elif scaling == "strong":
                    n, batch = n1 // P, (None if b is None else max(1, b // P))
                else:
                    n, batch = n1, b
                if mode == "sgd" and scaling == "strong":
                    continue  # a batch of 1 cannot be split
                X, y = data(model, n, rank)
                kw = dict(mode=mode, batch_size=batch, lr=1e-4, shuffle=False,
                          comm=comm if P > 1 else None)
                fg.fit(model, X[:4096], y[:4096], epochs=1, **{**kw, "batch_size": (
                    None if batch is None or mode != "mbgd" else min(batch, 4096))})
                res = fg.fit(model, X, y, epochs=3, **kw)
                best = min(res.history, key=lambda r: r.seconds)
                steps = res.steps // 3
                rows.append(dict(problem=name, mode=mode, batch=batch or n, scaling=scaling,
                                 ranks=P, rows=n, epoch_s=best.seconds, steps=steps,
                                 exchange_s=res.exchange_s / 3, n_params=model.n_params,
                                 samples_per_s=P * n / best.seconds))
    local = local_sgd_trade(comm) if P > 1 else []
    sizes = [4 << k for k in range(0, 21, 2)]
    gathered = allgather_times(sizes) if P > 1 else {}
    if rank == 0:
        with open(path, "w") as f:
            json.dump({"rows": rows, "allgather": gathered, "local_sgd": local}, f)


def local_sgd_trade(comm, epochs=5):
    """MLP 64-128-10 at per-rank batch 32 (where the exchange costs most): samples/s and the
    final exact training loss, gradients averaged every step against local SGD."""
    import fastgd as fg

    model = fg.MLP([64, 128, 10])
    X, _ = data(model, 20_000, comm.Get_rank(), seed=1)
    # learnable labels: the arg-max of a fixed random linear teacher (the same on every rank)
    teacher = np.random.default_rng(7).standard_normal((64, 10)).astype(np.float32)
    y = (X @ teacher).argmax(axis=1)
    out = []
    for sync in (None, 4, 16, 64):
        res = fg.fit(model, X, y, batch_size=32, epochs=epochs, lr=0.05, shuffle=True,
                     comm=comm, sync_every=sync, eval_every=epochs)
        out.append(dict(sync_every=sync or 0, train_s=res.train_s,
                        samples_per_s=comm.Get_size() * res.history[-1].samples / res.train_s,
                        loss=res.history[-1].full_train_loss, exchange_s=res.exchange_s))
    return out


# ----------------------------------------------------------------------------- report
def run_jobs(tmp):
    """Both MPI jobs; their JSON."""
    out = {}
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for P in (1, 2):
        path = os.path.join(tmp, f"ranks{P}.json")
        subprocess.run([mpiexec, "-n", str(P), sys.executable, __file__, "--worker", path],
                       check=True, env=env, timeout=3000)
        with open(path) as f:
            out[P] = json.load(f)
    return out


def fit_model(gathered):
    """``(alpha, beta)`` of ``T(m) = alpha + m / beta`` on 2 ranks (``(P - 1) m = m``)."""
    m = np.array([float(k) for k in gathered])
    t = np.array(list(gathered.values()))
    A = np.column_stack([np.ones_like(m), m])
    (alpha, inv_beta), *_ = np.linalg.lstsq(A, t, rcond=None)
    return max(alpha, 0.0), 1.0 / inv_beta


def allgather_model(alpha, beta, P, m):
    """Seconds of fastgd's exchange (recursive-doubling all-gather) on ``P`` ranks."""
    return alpha * np.log2(P) + (P - 1) * m / beta


def ring_model(alpha, beta, P, m):
    """Seconds of a ring all-reduce of ``m`` bytes on ``P`` ranks."""
    return 2 * (P - 1) * alpha + 2 * (P - 1) / P * m / beta


def report(jobs, out_png):
    """The Markdown (and the plot written to ``out_png``)."""
    alpha, beta = fit_model(jobs[2]["allgather"])
    one = {(r["problem"], r["mode"], r["batch"], r["scaling"]): r for r in jobs[1]["rows"]}
    lines = [f"# Data-parallel training on numba-cpu ({platform.machine()}, {os.cpu_count()} "
             f"cores, {time.strftime('%Y-%m-%d')})", "",
             "Each rank one Numba thread; float32, unshuffled, 3 epochs, best epoch. "
             "Speed-up: the job's samples/s on 2 ranks over 1 rank's (weak: each rank the "
             "one-rank data and batch; strong: the one-rank data and global batch split).",
             "", "| problem | mode | batch (per rank) | scaling | 1 rank | 2 ranks | speed-up "
             "| compute / step | exchange / step | of which idle | model step / measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for r in jobs[2]["rows"]:
        key_batch = r["batch"] * (2 if r["scaling"] == "strong" else 1)
        base = one.get((r["problem"], r["mode"], key_batch, r["scaling"]))
        if base is None:
            continue
        step = r["epoch_s"] / r["steps"]
        exch = r["exchange_s"] / r["steps"]
        compute = step - exch
        m = 4 * r["n_params"]
        # the model: this rank's compute alone (measured at 1 rank for the same per-rank
        # work) plus the fitted exchange
        base_step = base["epoch_s"] / base["steps"] * (r["rows"] / base["rows"]
                                                       if r["scaling"] == "strong" else 1)
        predicted = base_step + allgather_model(alpha, beta, 2, m)
        ratio = predicted / step
        checks.append(abs(ratio - 1) <= 0.25)
        # idle: the exchange's time beyond what the fitted transfer takes (waiting for the
        # slower rank)
        idle = max(0.0, exch - allgather_model(alpha, beta, 2, m))
        lines.append(f"| {r['problem']} | {r['mode']} | {r['batch']} | {r['scaling']} | "
                     f"{base['samples_per_s'] / 1e6:.2f}M | {r['samples_per_s'] / 1e6:.2f}M | "
                     f"**{r['samples_per_s'] / base['samples_per_s']:.2f}x** | "
                     f"{compute * 1e6:.1f} us | {exch * 1e6:.1f} us | {idle * 1e6:.1f} us | "
                     f"{ratio:.2f} |")
    lines += ["", f"All-gather fitted on 2 ranks (compiled loop, {len(jobs[2]['allgather'])} "
              f"sizes, 4 B to 4 MiB): alpha = {alpha * 1e6:.2f} us, beta = {beta / 1e9:.2f} "
              f"GB/s; the model's step time is within 25% of the measured one in "
              f"{sum(checks)} of {len(checks)} rows.", ""]
    lines += ["Predicted weak-scaling efficiency (one rank's measured compute per step, "
              "plus the exchange on the stated network) and the per-rank batch above "
              "which a step's compute exceeds its exchange:", "",
              "| model, per-rank batch | network | exchange | " +
              " | ".join(f"P={p}" for p in (2, 8, 64, 1024)) + " | batch where compute = "
              "exchange at P=64 |", "|---|---|---|" + "---|" * 5]
    curves = []  # (label, efficiencies, colour key, exchange kind, network)
    for r in jobs[1]["rows"]:
        if r["scaling"] != "weak" or r["mode"] != "mbgd":
            continue
        t_c = r["epoch_s"] / r["steps"]
        per_row = t_c / r["batch"]
        m = 4 * r["n_params"]
        for net, (a, bw) in NETWORKS.items():
            for kind, fn in (("all-gather", allgather_model), ("ring all-reduce", ring_model)):
                eff = [t_c / (t_c + fn(a, bw, p, m)) for p in WORKERS]
                curves.append((f"{r['problem']} b={r['batch']}, {kind}, {net}", eff,
                               f"{r['problem']} b={r['batch']}", kind, net))
                b_star = fn(a, bw, 64, m) / per_row
                cells = " | ".join(f"{eff[WORKERS.index(p)]:.2f}" for p in (2, 8, 64, 1024))
                lines.append(f"| {r['problem']}, {r['batch']} | {net} | {kind} | {cells} | "
                             f"{b_star:,.0f} |")
    _plot(curves, out_png)
    lines += ["", f"![efficiency]({os.path.basename(out_png)})", "",
              "Local SGD against gradient averaging (MLP 64-128-10, 2 ranks of 20k rows, "
              "per-rank batch 32, lr 0.05, 5 epochs, shuffled, labels from a random linear "
              "teacher; the exact training loss after the last epoch):", "",
              "| exchange | samples/s | time exchanging | final train loss |",
              "|---|---|---|---|"]
    for r in jobs[2].get("local_sgd", []):
        what = ("gradients every step" if not r["sync_every"] else
                f"parameters every {r['sync_every']} steps")
        lines.append(f"| {what} | {r['samples_per_s'] / 1e6:.2f}M | "
                     f"{100 * r['exchange_s'] / r['train_s']:.0f}% | {r['loss']:.4f} |")
    return "\n".join(lines) + "\n"


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = {key: f"C{i}" for i, key in enumerate(dict.fromkeys(c[2] for c in curves))}
    nets = list(NETWORKS)
    for label, eff, key, kind, net in curves:
        ax.plot(WORKERS, eff, color=colours[key],
                linestyle="-" if kind == "all-gather" else "--",
                marker="o" if net == nets[0] else "s", ms=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers P")
    ax.set_ylabel("predicted weak-scaling efficiency")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    """Run the two MPI jobs, or be one of their ranks (``--worker``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--from-json", default=None, help="redo the report from a run's JSON")
    args = ap.parse_args()
    if args.worker:
        sys.path.insert(0, HERE)
        worker(args.worker)
        return
    out = args.out or os.path.join(tempfile.gettempdir(), "distributed.md")
    if args.from_json:
        with open(args.from_json) as f:
            jobs = {int(k): v for k, v in json.load(f).items()}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            jobs = run_jobs(tmp)
        with open(os.path.splitext(out)[0] + ".json", "w") as f:
            json.dump(jobs, f)
    text = report(jobs, os.path.splitext(out)[0] + ".png")
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
