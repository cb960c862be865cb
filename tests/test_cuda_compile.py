"""The Numba-CUDA kernels compile for sm_90 without a GPU (``compile_ptx`` through NVVM): the
optimizer update, whose float32 per-parameter update computes in float32 only (its thread 0
adds the step's batch loss to the float64 sums), the gradient step with its float64
batch-loss block sums, and the gradient-noise kernels (``grad_norms``, the tracked update,
``grad_sq``, ``noise_step``), whose float32 instances add float64 work only for their norm
accumulators.

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
    from numba import float32, float64

    from fastgd.kernels.cuda import optim

    T = float32 if dtype == "float32" else float64
    ptx = compile_ptx(optim.build_update(dtype).py_func, _update_sig(T))
    assert ".entry" in ptx and ".target sm_90" in ptx
    if dtype == "float32":  # the only float64 stores: the two batch-loss sums (thread 0)
        assert ptx.count("st.global.f64") == 2


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


def _update_sig(T):
    """The update kernel's signature: the step's arguments, then the batch loss's
    (per-block loss sums, weight, rows, the float64 sums)."""
    from numba import float64, int64

    return (T[::1], T[:, ::1], T[:, ::1], int64, float64[::1], float64[::1], int64, int64,
            int64, float64[::1], float64, float64, float64[::1])


def _types(dtype):
    from numba import float32, float64

    return float32 if dtype == "float32" else float64


def _grad_sig(T, noise):
    from numba import float64, int64, uint64

    sig = (T[:, ::1], T[:, ::1], T[::1], uint64[::1], int64[:, ::1], T[:, ::1], T[:, ::1],
           int64, int64, T, float64[::1])
    return sig + (float64, float64[::1]) if noise else sig


def _f64_ops(ptx):
    return re.findall(r"^\s+\w+(?:\.\w+)*\.f64\b.*$", ptx, re.M)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss,activation", [("mse", "relu"), ("softmax", "tanh")])
def test_gradient_kernels_compile_for_sm90(compile_ptx, dtype, loss, activation):
    """``grad_step`` and its noise variant ``grad_norms`` compile to PTX; both hold the
    batch loss's block reduction (shared memory, one float64 store per block), the variant
    also the norms' (a second store), and in float32 its extra float64 work is the norm
    accumulators: it rounds no more f64 values to f32 than ``grad_step`` does."""
    from fastgd.kernels.cuda import dense

    T = _types(dtype)
    k = dense.build(loss, activation, dtype)
    plain = compile_ptx(k.grad_step.py_func, _grad_sig(T, False))
    norms = compile_ptx(k.grad_norms.py_func, _grad_sig(T, True))
    for ptx in (plain, norms):
        assert ".entry" in ptx and ".target sm_90" in ptx
        assert "st.shared.f64" in ptx
    if dtype == "float32":  # the only float64 stores: one per block and reduction
        assert plain.count("st.global.f64") == 1 and norms.count("st.global.f64") == 2
    assert len(_f64_ops(norms)) > len(_f64_ops(plain))
    assert norms.count("cvt.rn.f32.f64") == plain.count("cvt.rn.f32.f64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_noise_update_kernel_compiles_for_sm90(compile_ptx, dtype):
    """The tracked update compiles; in float32 it rounds exactly the per-step scalars the
    plain update rounds (its own float64 work is the squares' accumulator)."""
    from numba import float64

    from fastgd.kernels.cuda import optim

    T = _types(dtype)
    sig = _update_sig(T)
    plain = compile_ptx(optim.build_update(dtype).py_func, sig)
    noisy = compile_ptx(optim.build_update(dtype, noise=True).py_func, sig + (float64[::1],))
    assert ".entry" in noisy and "st.shared.f64" in noisy
    assert noisy.count("cvt.rn.f32.f64") == plain.count("cvt.rn.f32.f64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reduction_kernels_compile_for_sm90(compile_ptx, dtype):
    """``grad_sq`` (per dtype: only the squares in float64) and ``noise_step`` compile."""
    from numba import float64, int64

    from fastgd.kernels.cuda import reduce

    T = _types(dtype)
    ptx = compile_ptx(reduce.grad_sq.py_func, (T[:, ::1], int64, float64[::1]))
    assert ".entry" in ptx and "cvt.rn.f32.f64" not in ptx
    ptx = compile_ptx(reduce.noise_step.py_func, (float64[::1], int64, float64[::1], int64,
                                                  int64, int64, float64[::1]))
    assert ".entry" in ptx and "div.rn.f64" in ptx
