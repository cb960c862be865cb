"""pytest plugin (entry point ``pytest11``): benchmark fastgd configurations in your suite.

Installed with fastgd, active in every pytest session, and free until used: its fixtures
import fastgd and measure the machine only when a test asks for them.

```python
import fastgd as fg

def test_my_config(fastgd_benchmark):
    X, y = fg.datasets.make_regression(n=200_000, d=64)
    info = fastgd_benchmark(fg.Linear(64), X, y, mode="mbgd", batch_size=256)
```

``fastgd_benchmark(model, X, y, rounds=3, **fit_kwargs)`` times whole epochs with
pytest-benchmark (compilation before the first round, the device synchronised before the
clock stops) and records samples/s, steps/s, peak host/device bytes, achieved bytes/s and
FLOP/s and their fractions of the machine limits in ``benchmark.extra_info`` (they land in
``--benchmark-json``); a GPU run is quoted against the device's limits only (without them
its fractions are None and ``no_fraction_reason`` says why). ``fastgd_machine_limits``
(session scope) measures those limits once.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fastgd_machine_limits():
    """Host read bandwidth and float32 FLOP rate and, when a GPU is usable, the device's
    read rate (read-only reductions of a 1 GiB device array) and matmul rate, measured
    once per session (``fastgd.benchmarking.machine_limits``)."""
    from fastgd.benchmarking import machine_limits

    return machine_limits()


@pytest.fixture
def fastgd_benchmark(request, fastgd_machine_limits):
    """A function ``(model, X, y, rounds=3, **fit_kwargs) -> extra_info`` that benchmarks
    one fastgd configuration with pytest-benchmark's ``benchmark`` fixture."""
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip("pytest-benchmark is not installed (pip install pytest-benchmark)")
    from fastgd.benchmarking import bench_fit

    def run(model, X, y, **kwargs):
        return bench_fit(benchmark, model, X, y, limits=fastgd_machine_limits, **kwargs)

    return run
