"""Session fixtures for the benchmarks: the data sets, and ``record`` for the peers.

fastgd's own benchmarks use the ``fastgd_benchmark`` fixture of fastgd's pytest plugin
(``fastgd/pytest_plugin.py``); the machine limits (``fastgd_machine_limits``) are measured
once per session and attached to every benchmark's ``extra_info``.
"""

from __future__ import annotations

import pytest
import workloads

from fastgd.benchmarking import record_rates
from fastgd.measure import HostPeak


@pytest.fixture(scope="session")
def linear_xy():
    """n x 64 float32 linear-regression data (1M rows; 20k with FASTGD_BENCH_QUICK=1)."""
    return workloads.linear_data()


@pytest.fixture(scope="session")
def logistic_xy():
    """Binary labels (0/1, float32) on the linear data's features."""
    X, y = workloads.linear_data()
    return X, (y > 0).astype("float32")


@pytest.fixture(scope="session")
def mlp_xy():
    """10-class data for the 64-128-10 MLP."""
    return workloads.mlp_data()


def record(benchmark, limits, run, samples, steps, bytes_read=0, flops_per_sample=0,
           on_device=False):
    """The same ``extra_info`` fields for a peer's timed rounds as for fastgd's: rates (as
    fractions of the device's limits when ``on_device``), and the host memory peaks of one
    more call of ``run`` (tracemalloc sees NumPy and scikit-learn buffers, not PyTorch's
    allocator: its growth shows in the RSS peak)."""
    with HostPeak(trace=True) as peak:
        run()
    benchmark.extra_info.update(peak_host_bytes=peak.traced_peak_bytes,
                                peak_rss_bytes=peak.rss_peak_bytes, peak_device_bytes=None)
    record_rates(benchmark, limits, samples, steps, bytes_read, flops_per_sample, on_device)
