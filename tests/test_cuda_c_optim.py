"""The CUDA C optimizers (``kernels/cu/optim.cuh``) against the NumPy reference, on the host.

``optim.cuh`` holds only ``__device__`` functions of plain arithmetic, so it also compiles
as host C++ (``__device__`` defined away, ``<cmath>`` for ``sqrt``/``pow``): this runs the
very source the cupy backend compiles, on random inputs, for every optimizer of the backend
matrix, without a GPU. Skips without a C++ compiler.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import backend_matrix
import numpy as np
import pytest

from fastgd.kernels import cupy_module as cm
from fastgd.kernels import optimizers as ref
from fastgd.kernels.codes import cuda_defines

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) to build optim.cuh")

HARNESS = r"""
#define __device__
#include <cmath>
using std::pow;
using std::sqrt;
%s
template <typename T>
static void steps(int code, T* theta, T* state, long long n, const T* grads, long long k,
                  const double* h, const double* lrs, long long t0) {
    for (long long s = 0; s < k; ++s) {
        T sc[FASTGD_SCALAR_SLOTS];
        step_scalars<T>(code, h, lrs[s], t0 + s + 1, sc);
        for (long long p = 0; p < n; ++p)
            update_element<T>(code, theta, state, n, p, grads[s * n + p], sc);
    }
}
extern "C" void steps_f64(int c, double* th, double* st, long long n, const double* g,
                          long long k, const double* h, const double* lrs, long long t0) {
    steps<double>(c, th, st, n, g, k, h, lrs, t0);
}
extern "C" void steps_f32(int c, float* th, float* st, long long n, const float* g,
                          long long k, const double* h, const double* lrs, long long t0) {
    steps<float>(c, th, st, n, g, k, h, lrs, t0);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """optim.cuh built as a host shared library."""
    out = tmp_path_factory.mktemp("optim_cuh")
    src = out / "harness.cpp"
    with open(cm.source_path(cm.SOURCES[0]), encoding="utf-8") as f:  # optim.cuh
        src.write_text(HARNESS % f.read())
    so = out / "optim.so"
    # -ffp-contract=off: no fused multiply-adds, so float64 results are comparable exactly
    subprocess.run([CXX, "-O2", "-ffp-contract=off", "-std=c++17", "-shared", "-fPIC",
                    *cuda_defines(), str(src), "-o", str(so)], check=True, capture_output=True)
    return ctypes.CDLL(str(so))


def _run(lib, dtype, code, theta, state, grads, h, lrs):
    fn = lib.steps_f64 if dtype == np.float64 else lib.steps_f32
    ptr = np.ctypeslib.as_ctypes
    fn(ctypes.c_int(code), ptr(theta), ptr(state.reshape(-1)) if state.size else None,
       ctypes.c_longlong(theta.size), ptr(grads.reshape(-1)), ctypes.c_longlong(len(grads)),
       ptr(h), ptr(lrs), ctypes.c_longlong(0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(backend_matrix.OPTIMIZERS))
def test_cuda_c_update_matches_reference(lib, name, dtype):
    """Five steps with fresh random parameters and gradients, decaying learning rates."""
    rng = np.random.default_rng()
    opt = backend_matrix.optimizer(name)
    n, k = 37, 5
    theta = rng.standard_normal(n).astype(dtype)
    grads = rng.standard_normal((k, n)).astype(dtype)
    lrs = opt.lr * np.linspace(1.0, 0.5, k)
    h = opt.hyper()
    want_theta, want_state = theta.copy(), opt.init_state(n, dtype)
    for s in range(k):
        ref.update(opt.code, want_theta, want_state, grads[s], h, lrs[s], s + 1)
    got_state = opt.init_state(n, dtype)
    _run(lib, dtype, opt.code, theta, got_state, np.ascontiguousarray(grads), h, lrs)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(theta, want_theta, **tol)
    np.testing.assert_allclose(got_state, want_state, **tol)
