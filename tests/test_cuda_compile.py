"""The Numba-CUDA optimizer kernel compiles for sm_90 without a GPU (``compile_ptx`` through
NVVM), and its float32 per-parameter update computes in float32 only.

Skips when numba-cuda or NVVM (the CUDA toolkit's ``libnvvm``) is missing.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")


class _Sm90:
    compute_capability = (9, 0)


@pytest.fixture
def compile_ptx(monkeypatch):
    """``cuda.compile_ptx`` for sm_90; device functions ask the current device for its
    compute capability, so a stand-in answers (no GPU here)."""
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Sm90())

    def compile_(fn, sig):
        try:
            return cuda.compile_ptx(fn, sig, cc=(9, 0))[0]
        except Exception as exc:  # noqa: BLE001 - NVVM missing or unusable: skip, say why
            if "nvvm" in str(exc).lower() or "libnvvm" in type(exc).__name__.lower():
                pytest.skip(f"NVVM is not usable here: {exc}")
            raise

    return compile_


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_update_kernel_compiles_for_sm90(compile_ptx, dtype):
    """The generated ``opt_update`` kernel of each dtype compiles to PTX."""
    from numba import float32, float64, int64

    from fastgd.kernels.cuda import optim

    T = float32 if dtype == "float32" else float64
    sig = (T[::1], T[:, ::1], T[:, ::1], int64, float64[::1], float64[::1], int64, int64, int64)
    ptx = compile_ptx(optim.build_update(dtype).py_func, sig)
    assert ".entry" in ptx and ".target sm_90" in ptx


def test_float32_element_update_has_no_float64(compile_ptx):
    """Every optimizer's per-parameter update in float32 has no f64 instruction (the
    per-step scalars are float64 by design, computed once per thread)."""
    from numba import cuda, float32, int64

    from fastgd.kernels.cuda import optim

    element = optim._rules["update_element"]

    def kernel(theta, state, grad, c, code):
        p = cuda.grid(1)
        s = (c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11])
        theta[p], state[0, p], state[1, p], state[2, p] = element(
            code, theta[p], grad[p], state[0, p], state[1, p], state[2, p], s)

    ptx = compile_ptx(kernel, (float32[::1], float32[:, ::1], float32[::1], float32[::1],
                               int64))
    assert re.search(r"\.f32", ptx)
    assert not re.findall(r".*\.f64.*", ptx)
