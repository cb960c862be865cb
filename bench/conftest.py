"""Session fixtures for the benchmarks: data and the machine's read bandwidth."""

from __future__ import annotations

import pytest
import workloads


@pytest.fixture(scope="session")
def linear_xy():
    """n x 64 float32 linear-regression data (1M rows; 20k with FASTGD_BENCH_QUICK=1)."""
    return workloads.linear_data()


@pytest.fixture(scope="session")
def mlp_xy():
    """10-class data for the 64-128-10 MLP."""
    return workloads.mlp_data()


@pytest.fixture(scope="session")
def read_bw():
    """Read bandwidth of a large NumPy sum, bytes/s (smaller array in quick mode)."""
    return workloads.read_bandwidth(64 << 20 if workloads.QUICK else 512 << 20)


def record(benchmark, samples, bytes_read=None, bw=None, flops=None):
    """Attach samples/s (and the fraction of the read floor) when timing is on."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing was timed
        return
    mean = stats.stats.mean
    benchmark.extra_info["samples_per_s"] = samples / mean
    if bytes_read and bw:
        benchmark.extra_info["bytes_per_s"] = bytes_read / mean
        benchmark.extra_info["fraction_of_read_bw"] = bytes_read / mean / bw
    if flops:
        benchmark.extra_info["flop_per_s"] = flops * samples / mean
