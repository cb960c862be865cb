"""The cupy backend (``kernels/cu/dense.cu`` through ``cupy.RawModule``).

Without a GPU: the registry explains why it is unavailable, the ``.cu`` source is installed
and found through ``importlib.resources``, the name expressions are well-formed, and (when
NVRTC is loadable through ``cuda.bindings``) every template instance compiles. With a GPU,
``TestOnGpu`` compares the backend with the NumPy reference through ``fastgd.fit``.
"""

from __future__ import annotations

import re

import backend_matrix
import numpy as np
import pytest
from backend_check import make_problem

import fastgd as fg
from fastgd.backends import registry
from fastgd.kernels import cupy_module as cm
from fastgd.kernels.codes import OPTIMIZER_CODES
from fastgd.kernels.permutation import ROUNDS

CONFIGS = [(dt, loss, act) for dt in ("float32", "float64") for loss in cm.LOSS_IDS
           for act in cm.ACTIVATION_IDS]


def test_registry_lists_cupy_with_a_reason_when_unusable():
    """'cupy' is a known backend; where it cannot run, describe() says why and available()
    leaves it out (create() raises with the reason)."""
    assert "cupy" in fg.backends.names()
    reason = fg.backends.describe()["cupy"]
    if reason is None:
        assert "cupy" in fg.backends.available()
        return
    assert isinstance(reason, str) and reason
    assert "cupy" not in fg.backends.available()
    with pytest.raises(RuntimeError, match="unavailable"):
        fg.backends.create("cupy")


def test_cudasim_reason(monkeypatch):
    """Under the CUDA simulator the check refuses before touching any driver."""
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    reason = registry._cupy_reason()
    assert reason is not None
    assert reason.startswith(("cupy is not installed", "CUDA simulator is on"))


def test_no_device_reason(monkeypatch):
    """A driver error or zero devices becomes 'no CUDA driver or GPU found (...)'."""
    import sys
    import types

    fake = types.ModuleType("cupy")

    def raising():
        raise RuntimeError("cudaErrorNoDevice")

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=raising))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: object())
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    assert registry._cupy_reason() == ("no CUDA driver or GPU found "
                                       "(RuntimeError: cudaErrorNoDevice)")
    fake.cuda.runtime.getDeviceCount = lambda: 0
    assert registry._cupy_reason().startswith("no CUDA driver or GPU found")


def test_source_is_package_data_with_the_expected_kernels():
    """dense.cu is found through importlib.resources, starts with a #line directive naming
    its path, and defines every kernel and enum value the module expects."""
    text = cm.source()
    assert text.startswith(f'#line 1 "{cm.source_path(cm.SOURCES[0])}"\n')
    assert f'#line 1 "{cm.source_path()}"\n' in text
    assert cm.source_path().endswith("dense.cu")
    for kernel in cm.KERNELS:
        assert re.search(rf"__global__ void {kernel}\(", text), kernel
    assert 'extern "C" __global__ void permutation_kernel(' in text
    for prefix, ids in (("LOSS", cm.LOSS_IDS), ("ACT", cm.ACTIVATION_IDS)):
        for name in ids:
            assert f"{prefix}_{name.upper()} = FASTGD_{prefix}_{name.upper()}" in text
    # no code is spelt as a literal in the sources: they come from kernels/codes.py
    for name in OPTIMIZER_CODES:
        assert f"FASTGD_OPT_{name.upper()}" in text


def test_compile_options_carry_the_python_constants():
    """The constants dense.cu needs come from Python (-D options), never duplicated."""
    opts = cm.compile_options()
    assert "-std=c++17" in opts
    assert f"-DFASTGD_ROUNDS={ROUNDS}" in opts
    assert f"-DFASTGD_PERM_HEADER={cm.PERM_HEADER}" in opts
    assert f"-DFASTGD_MAX_THREADS={cm.MAX_THREADS}" in opts
    for name, code in {**cm.LOSS_IDS, **OPTIMIZER_CODES}.items():
        assert any(o.endswith(f"_{name.upper()}={code}") for o in opts), name


@pytest.mark.parametrize("dtype,loss,activation", CONFIGS)
def test_name_expressions_are_well_formed(dtype, loss, activation):
    """One name expression per kernel, with C type and integer template ids."""
    ctype, loss_id, act_id = cm.template_args(dtype, loss, activation)
    assert ctype == {"float32": "float", "float64": "double"}[dtype]
    names = cm.name_expressions(np.dtype(dtype), loss, activation)
    assert set(names) == set(cm.KERNELS)
    assert names["grad_step"] == f"grad_step<{ctype}, {loss_id}, {act_id}>"
    assert names["loss_sum"] == f"loss_sum<{ctype}, {loss_id}, {act_id}>"
    assert names["opt_update"] == f"opt_update<{ctype}>"
    assert names["permutation_kernel"] == "permutation_kernel"
    pattern = re.compile(r"^[a-z_]+(<(float|double)(, [0-2]){0,2}>)?$")
    assert all(pattern.match(expr) for expr in names.values())


def test_name_expressions_are_distinct_per_configuration():
    """Different configurations never share a templated instance name."""
    seen = {cm.name_expressions(*c)["grad_step"] for c in CONFIGS}
    assert len(seen) == len(CONFIGS)


@pytest.mark.parametrize("bad", [("int32", "mse", "relu"), ("float32", "hinge", "relu"),
                                 ("float64", "mse", "gelu")])
def test_template_args_reject_unknown(bad):
    """Unknown dtype, loss or activation is a ValueError, not a broken name expression."""
    with pytest.raises(ValueError):
        cm.template_args(*bad)


def test_host_tables():
    """layout() and perm_table() match the numba-cuda kernels' tables."""
    from fastgd.kernels.permutation import epoch_key

    lay, width = cm.layout((5, 6, 3))
    assert width == 14
    assert lay.tolist() == [[5, 6, 0, 30, 0, 5], [6, 3, 36, 54, 5, 11]]
    assert cm.perm_table(None).tolist() == [0] * (cm.PERM_HEADER + 2 * ROUNDS)
    key = epoch_key(3, 1, 100)
    table = cm.perm_table(key)
    assert table.dtype == np.uint64 and table[0] == 1 and table[1] == key.mask
    np.testing.assert_array_equal(table[cm.PERM_HEADER:], key.keys)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc

        err, _major, _minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # noqa: BLE001 - any failure means "no NVRTC here"
        pytest.skip(f"NVRTC is not loadable ({type(exc).__name__}: {exc}); the compile check "
                    "runs where cuda-bindings finds libnvrtc (pip install nvidia-cuda-nvrtc)")
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        pytest.skip(f"NVRTC is not usable: {err}")
    return nvrtc


@pytest.mark.parametrize("dtype,loss,activation", CONFIGS)
def test_nvrtc_compiles_every_instance(dtype, loss, activation):
    """optim.cuh + dense.cu compile without warnings for compute_90 with the module's options
    and name expressions (NVRTC through cuda.bindings; needs no GPU)."""
    nvrtc = _nvrtc()
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, prog = nvrtc.nvrtcCreateProgram(cm.source().encode(), b"dense.cu", 0, [], [])
    assert err == ok
    exprs = [e for k, e in cm.name_expressions(dtype, loss, activation).items()
             if k in cm.TEMPLATED or k == "opt_update"]
    for expr in exprs:
        assert nvrtc.nvrtcAddNameExpression(prog, expr.encode())[0] == ok
    opts = [o.encode() for o in cm.compile_options()] + [b"-arch=compute_90"]
    result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
    size = nvrtc.nvrtcGetProgramLogSize(prog)[1]
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    log = log.rstrip(b"\x00 ").decode(errors="replace")
    assert result == ok, log
    assert log == "", log
    for expr in exprs:
        err, lowered = nvrtc.nvrtcGetLoweredName(prog, expr.encode())
        assert err == ok and lowered.startswith(b"_Z"), expr
    nvrtc.nvrtcDestroyProgram(prog)


# ----------------------------------------------------------------------------- on a GPU
_REASON = fg.backends.describe()["cupy"]
N = 300
MODELS = [
    (lambda: fg.Linear(n_features=7, n_outputs=1, loss="mse"), "mse"),
    (lambda: fg.Linear(n_features=7, n_outputs=3, loss="logistic"), "logistic"),
    (lambda: fg.Linear(n_features=7, n_outputs=4, loss="softmax"), "softmax"),
    (lambda: fg.MLP([7, 16, 8, 3], activation="tanh", loss="softmax"), "softmax"),
    (lambda: fg.MLP([7, 12, 2], activation="relu", loss="mse"), "mse"),
    (lambda: fg.MLP([7, 10, 2], activation="sigmoid", loss="logistic"), "logistic"),
]
TOL = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-3, atol=2e-4)}
CASES = backend_matrix.cases()


def _problem(model, loss, dtype, seed=0):
    return make_problem(model.sizes, loss, N, dtype, seed)


@pytest.mark.skipif(_REASON is not None, reason=f"cupy backend unavailable: {_REASON}")
class TestOnGpu:
    """cupy against the NumPy reference through fastgd.fit (needs a GPU and CuPy)."""

    @pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
    def test_matches_reference(self, case):
        """The backend matrix (every model, mode, optimizer and dtype), shuffled."""
        backend_matrix.check(case, "cupy", n=N, tol=TOL[case.dtype])

    @pytest.mark.parametrize("name", list(backend_matrix.OPTIMIZERS))
    def test_matches_reference_unshuffled(self, name):
        """Every optimizer without shuffling, on an MLP over three epochs."""
        case = backend_matrix.Case((7, 16, 8, 3), "softmax", "tanh", "mbgd", 32, name,
                                   "float64")
        backend_matrix.check(case, "cupy", n=N, epochs=3, shuffle=False, tol=TOL["float64"])

    def test_validation_loss_and_memory(self):
        """Validation data are evaluated on the device; memory() reports the peak."""
        model = fg.MLP([7, 16, 3], activation="relu", loss="softmax")
        X, y = _problem(model, "softmax", "float64")
        kw = dict(mode="mbgd", batch_size=50, epochs=2, lr=0.05, dtype="float64",
                  X_val=X[:100], y_val=y[:100])
        ref = fg.fit(model, X, y, backend="numpy", **kw)
        got = fg.fit(model, X, y, backend="cupy", **kw)
        np.testing.assert_allclose([r.val_loss for r in got.history],
                                   [r.val_loss for r in ref.history], rtol=1e-9)
        prep = fg.prepare(model, X, y, backend="cupy", dtype="float64")
        assert prep.engine.memory() >= X.nbytes

    def test_bitwise_reproducible(self):
        """Two runs give the same bits (fixed-order sums, no atomics)."""
        model = fg.MLP([7, 16, 3], activation="tanh", loss="softmax")
        X, y = _problem(model, "softmax", "float32")
        a = fg.fit(model, X, y, backend="cupy", batch_size=64, epochs=2)
        b = fg.fit(model, X, y, backend="cupy", batch_size=64, epochs=2)
        for u, v in zip(a.params, b.params, strict=True):
            np.testing.assert_array_equal(u, v)

    @pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1000])
    def test_device_permutation_matches_numpy(self, n):
        """permutation_kernel visits the samples in the order of kernels.permutation."""
        import cupy

        from fastgd.kernels.permutation import epoch_key, permutation

        k = cm.build("float32", "mse", "relu")
        perm = cupy.asarray(cm.perm_table(epoch_key(11, 2, n)))
        out = cupy.empty(n, cupy.int64)
        k.permutation_kernel((-(-n // 128),), (128,), (perm, np.int64(n), out))
        np.testing.assert_array_equal(out.get(), permutation(11, 2, n))

    def test_out_of_memory_names_the_batch_size(self):
        """A pool limit below the data's size turns into MemoryError naming batch_size."""
        import cupy

        pool = cupy.get_default_memory_pool()
        model = fg.Linear(n_features=64, n_outputs=1, loss="mse")
        X = np.zeros((20_000, 64), np.float32)
        y = np.zeros(20_000, np.float32)
        old = pool.get_limit()
        pool.free_all_blocks()
        pool.set_limit(size=pool.used_bytes() + 1024 * 1024)
        try:
            with pytest.raises(MemoryError, match="batch_size=77"):
                fg.fit(model, X, y, backend="cupy", batch_size=77, epochs=1)
        finally:
            pool.set_limit(size=old)
