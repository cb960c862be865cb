"""Machine limits and the fractions quoted against them (``fastgd.benchmarking``).

Without a GPU: the device probes are replaced by fakes, so what is tested is the plumbing
(best of the methods, reasons, which limits a run is quoted against). With a GPU,
``test_device_limits_on_a_gpu`` measures the real device read rate.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from fastgd import benchmarking as bm

HOST = dict(read_bytes_per_s=20e9, flop_per_s=100e9)


def fake_benchmark(mean_s: float):
    """The part of pytest-benchmark's fixture that ``record_rates`` reads."""
    stats = types.SimpleNamespace(stats=types.SimpleNamespace(mean=mean_s))
    return types.SimpleNamespace(stats=stats, extra_info={})


def rates(limits, on_device, bytes_read=10e9, flops_per_sample=1000):
    """extra_info of a 1-second run of 1e6 samples, 10 GB read, 1e9 FLOP."""
    bench = fake_benchmark(1.0)
    bm.record_rates(bench, limits, 1_000_000, 100, bytes_read, flops_per_sample,
                    on_device=on_device)
    return bench.extra_info


def test_host_run_is_quoted_against_host_limits():
    limits = bm.MachineLimits(**HOST, device_read_bytes_per_s=2e12, device_flop_per_s=5e13)
    info = rates(limits, on_device=False)
    assert info["fraction_of_read_bw"] == pytest.approx(10e9 / 20e9)
    assert info["fraction_of_flop_rate"] == pytest.approx(1e9 / 100e9)
    assert "no_fraction_reason" not in info


def test_device_run_is_quoted_against_device_limits():
    limits = bm.MachineLimits(**HOST, device_read_bytes_per_s=2e12, device_flop_per_s=5e13)
    info = rates(limits, on_device=True)
    assert info["fraction_of_read_bw"] == pytest.approx(10e9 / 2e12)
    assert info["fraction_of_flop_rate"] == pytest.approx(1e9 / 5e13)
    assert "no_fraction_reason" not in info


def test_device_run_without_device_limits_gets_no_fraction_and_a_reason():
    """A GPU run on a machine whose GPU limits could not be measured is not quoted against
    the host's bandwidth (that gave fractions far above 1): None, and the reason."""
    limits = bm.MachineLimits(**HOST, device_reason="no GPU read limit measured (cupy: x)")
    info = rates(limits, on_device=True)
    assert info["fraction_of_read_bw"] is None and info["fraction_of_flop_rate"] is None
    assert "cupy: x" in info["no_fraction_reason"]
    assert "read or FLOP" in info["no_fraction_reason"]
    assert info["bytes_per_s"] == pytest.approx(10e9)  # the rate itself is still recorded


def test_device_run_with_a_read_limit_only():
    """numba-cuda alone measures the read rate but no FLOP rate: a read fraction, no FLOP
    fraction, and the reason names what is missing."""
    limits = bm.MachineLimits(**HOST, device_read_bytes_per_s=2e12)
    info = rates(limits, on_device=True)
    assert info["fraction_of_read_bw"] == pytest.approx(10e9 / 2e12)
    assert info["fraction_of_flop_rate"] is None
    assert "device FLOP limit" in info["no_fraction_reason"]


def test_no_stats_records_nothing():
    """Under --benchmark-disable ``benchmark.stats`` is None."""
    bench = types.SimpleNamespace(stats=None, extra_info={})
    bm.record_rates(bench, bm.MachineLimits(**HOST), 10, 1, 10, 10, on_device=True)
    assert bench.extra_info == {}


class FakeEvent:
    """A CUDA event whose elapsed times come from a list (milliseconds)."""

    def __init__(self, log):
        self.log = log

    def record(self):
        self.log.append("record")

    def synchronize(self):
        self.log.append("sync")


def test_event_seconds_is_the_best_timed_run_after_a_warm_up():
    log, times = [], iter([5.0, 2.0, 4.0])
    calls = []
    start, stop = FakeEvent(log), FakeEvent(log)
    best = bm._event_seconds(lambda: calls.append(1), start, stop,
                             lambda a, b: next(times), repeats=3)
    assert best == pytest.approx(2e-3)
    assert len(calls) == 4  # one warm-up, three timed
    assert log == ["record", "record", "sync"] * 3  # stop waited for before each reading


def test_device_limits_take_the_best_read_method(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(bm, "DEVICE_PROBES", {
        "a": lambda nbytes, repeats: ({"a-sum": 2e12, "a-kernel": 3e12}, 5e13, "GPU A"),
        "b": lambda nbytes, repeats: ({"b-kernel": 2.5e12}, None, "GPU A"),
    })
    got = bm.device_limits(nbytes=1 << 20, repeats=1)
    assert got["device_read_bytes_per_s"] == 3e12
    assert got["device_read_methods"] == {"a-sum": 2e12, "a-kernel": 3e12, "b-kernel": 2.5e12}
    assert got["device_flop_per_s"] == 5e13 and got["device_name"] == "GPU A"
    assert "device_reason" not in got


def test_device_limits_without_a_device_give_every_probes_reason(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)

    def missing(what):
        def probe(nbytes, repeats):
            raise RuntimeError(f"{what} sees no CUDA device")
        return probe

    monkeypatch.setattr(bm, "DEVICE_PROBES", {"cupy": missing("CuPy"),
                                              "numba-cuda": missing("numba-cuda")})
    got = bm.device_limits(nbytes=1 << 20, repeats=1)
    assert list(got) == ["device_reason"]
    assert "cupy: RuntimeError: CuPy sees" in got["device_reason"]
    assert "numba-cuda: RuntimeError: numba-cuda sees" in got["device_reason"]


def test_device_limits_never_probe_the_simulator(monkeypatch):
    def probe(nbytes, repeats):
        raise AssertionError("probed under the simulator")

    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    monkeypatch.setattr(bm, "DEVICE_PROBES", {"numba-cuda": probe})
    assert "simulator" in bm.device_limits()["device_reason"]


def test_machine_limits_carry_the_device_limits(monkeypatch):
    monkeypatch.setattr(bm, "read_methods", lambda nbytes: {"numpy-sum": 1e10, "numba": 2e10})
    monkeypatch.setattr(bm, "flop_rate", lambda: 1e11)
    monkeypatch.setattr(bm, "device_limits", lambda: {"device_read_bytes_per_s": 3e12,
                                                      "device_read_methods": {"k": 3e12}})
    limits = bm.machine_limits()
    assert limits.read_bytes_per_s == 2e10 and limits.flop_per_s == 1e11
    assert limits.device_read_bytes_per_s == 3e12 and limits.device_reason is None
    assert limits.to_dict()["device_read_methods"] == {"k": 3e12}


def test_this_machines_device_limits_are_measured_or_explained():
    """Either a device read rate (with its methods) or a reason, never both or neither."""
    got = bm.device_limits()
    if "device_reason" in got:
        assert got["device_reason"] and "device_read_bytes_per_s" not in got
        return
    assert got["device_read_bytes_per_s"] == max(got["device_read_methods"].values())


def test_device_limits_on_a_gpu():
    """On a GPU: every read method reads at a plausible device rate (over 100 GB/s, under
    10 TB/s), and the read-only reductions it times compute the sum of what they read."""
    got = bm.device_limits(nbytes=1 << 30, repeats=5)
    if "device_reason" in got:
        pytest.skip(got["device_reason"])
    methods = got["device_read_methods"]
    assert all(1e11 < v < 1e13 for v in methods.values()), methods
    a = np.arange(3000, dtype=np.float32)
    if any(k.startswith("cupy") for k in methods):
        import cupy as cp

        assert float(bm._cupy_read_kernel()(cp.asarray(a))) == a.sum()
    if "numba-cuda-kernel" in methods:
        from numba import cuda

        out = cuda.device_array(2 * 64, np.float32)
        bm._numba_read_kernel()[2, 64](cuda.to_device(a), out)
        assert out.copy_to_host().sum(dtype=np.float64) == a.sum(dtype=np.float64)
