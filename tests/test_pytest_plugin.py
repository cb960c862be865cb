"""The fastgd pytest plugin, run inside pytester sessions."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytest_benchmark")
pytest_plugins = ["pytester"]

USER_TEST = '''
import numpy as np
import fastgd as fg

def test_linear(fastgd_benchmark):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 8), dtype=np.float32)
    y = X @ np.ones(8, np.float32)
    info = fastgd_benchmark(fg.Linear(8), X, y, mode="mbgd", batch_size=64, rounds=2)
    assert info["backend"] == "numba-cpu" and info["batch_size"] == 64
    assert info["peak_host_bytes"] is not None

def test_limits(fastgd_machine_limits):
    """The read limit is the best of the three read methods (a NumPy sum alone is one
    thread); every method reads at a plausible rate."""
    limits = fastgd_machine_limits
    assert limits.read_bytes_per_s > 1e8 and limits.flop_per_s > 1e8
    assert set(limits.read_methods) == {"numpy-sum", "numba-1-thread", "numba-all-threads"}
    assert limits.read_bytes_per_s == max(limits.read_methods.values())
    assert min(limits.read_methods.values()) > 1e8
    assert limits.to_dict()["read_methods"] == limits.read_methods
    # the GPU's read limit, or why there is none (never a host figure in its place)
    assert (limits.device_read_bytes_per_s is None) == (limits.device_reason is not None)
'''


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    monkeypatch.setenv("FASTGD_LIMITS_MB", "16")  # keep the limit measurements quick


def test_plugin_records_extra_info(pytester):
    """Timed run: extra_info carries throughput, memory and fractions of the limits."""
    pytester.makepyfile(test_user=USER_TEST)
    out = pytester.path / "bench.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--benchmark-json={out}")
    result.assert_outcomes(passed=2)
    bench = json.loads(out.read_text())["benchmarks"]
    info = bench[0]["extra_info"]
    for key in ("samples_per_s", "steps_per_s", "bytes_per_s", "flop_per_s", "compile_s",
                "peak_host_bytes", "fraction_of_read_bw", "fraction_of_flop_rate", "limits"):
        assert key in info, key
    assert info["samples_per_s"] > 0 and 0 < info["fraction_of_read_bw"]
    assert info["steps_per_s"] == pytest.approx(info["samples_per_s"] / 64, rel=0.05)
    assert "device_read_bytes_per_s" in info["limits"]  # a CPU run carries them too
    assert "no_fraction_reason" not in info  # a CPU run always has host limits


def test_plugin_with_benchmarking_disabled(pytester):
    """--benchmark-disable: no stats, no crash, the epochs still run."""
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-disable")
    result.assert_outcomes(passed=2)


def test_fixtures_are_listed(pytester):
    result = pytester.runpytest_subprocess("--fixtures")
    text = result.stdout.str()
    assert "fastgd_benchmark" in text and "fastgd_machine_limits" in text
