"""The cupy backend (``kernels/cu/dense.cu`` through ``cupy.RawModule``).

Without a GPU: the registry explains why it is unavailable, the ``.cu`` source is installed
and found through ``importlib.resources``, the name expressions are well-formed, and (when
NVRTC is loadable through ``cuda.bindings``) every template instance compiles, the float32
gradient kernels compute in float32 but for their float64 batch-loss and norm accumulators,
and nothing spills on sm_90. With a GPU, ``TestOnGpu`` compares the backend with the NumPy
reference through ``fastgd.fit``, ``TestNoiseAndPartsOnGpu`` its partial epochs, ``load``,
``exact_noise`` and online noise tracking, and ``TestBatchLossOnGpu`` its in-kernel batch
loss (``epoch_loss``; ``tests/cudasim/device_checks.py``).
"""

from __future__ import annotations

import re

import backend_matrix
import numpy as np
import pytest
from backend_check import make_problem
from cudasim import device_checks

import fastgd as fg
from fastgd.backends import registry
from fastgd.kernels import cupy_module as cm
from fastgd.kernels.codes import OPTIMIZER_CODES, SCALAR_SLOTS
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
    assert f"-DFASTGD_PERM_FIRST={cm.FIRST}" in opts
    assert f"-DFASTGD_PERM_ORDERS={cm.TABLE_SIZE}" in opts
    assert f"-DFASTGD_MAX_THREADS={cm.MAX_THREADS}" in opts
    assert f"-DFASTGD_TILE_MAX={cm.TILE_MAX}" in opts
    for name, code in {**cm.LOSS_IDS, **OPTIMIZER_CODES}.items():
        assert any(o.endswith(f"_{name.upper()}={code}") for o in opts), name


@pytest.mark.parametrize("dtype,loss,activation", CONFIGS)
def test_name_expressions_are_well_formed(dtype, loss, activation):
    """One name expression per kernel, with C type and integer template ids."""
    ctype, loss_id, act_id = cm.template_args(dtype, loss, activation)
    assert ctype == {"float32": "float", "float64": "double"}[dtype]
    names = cm.name_expressions(np.dtype(dtype), loss, activation)
    assert set(names) == set(cm.KERNELS)
    for kernel in ("step", "step_noise", "grad_norms", "loss_sum"):
        assert names[kernel] == f"{kernel}<{ctype}, {loss_id}, {act_id}>"
    assert names["grad_sq"] == f"grad_sq<{ctype}>"
    assert names["permutation_kernel"] == "permutation_kernel"
    pattern = re.compile(r"^[a-z_]+(<(float|double)(, [0-2]){0,2}>)?$")
    assert all(pattern.match(expr) for expr in names.values())


def test_name_expressions_are_distinct_per_configuration():
    """Different configurations never share a templated instance name."""
    seen = {cm.name_expressions(*c)["step"] for c in CONFIGS}
    assert len(seen) == len(CONFIGS)


@pytest.mark.parametrize("bad", [("int32", "mse", "relu"), ("float32", "hinge", "relu"),
                                 ("float64", "mse", "gelu")])
def test_template_args_reject_unknown(bad):
    """Unknown dtype, loss or activation is a ValueError, not a broken name expression."""
    with pytest.raises(ValueError):
        cm.template_args(*bad)


def test_host_tables():
    """layout() and perm_table() match the numba-cuda kernels' tables; perm_table is the
    order table every backend reads."""
    from fastgd.kernels.permutation import TABLE_SIZE, epoch_key, order_table

    lay, width = cm.layout((5, 6, 3))
    assert width == 14
    assert lay.tolist() == [[5, 6, 0, 30, 0, 5], [6, 3, 36, 54, 5, 11]]
    assert cm.perm_table().tolist() == [0] * TABLE_SIZE
    key = epoch_key(3, 1, 100)
    table = cm.perm_table(3, 1, 100, True)
    assert table.dtype == np.uint64 and table[0] == 1 and table[cm.FIRST] == key.mask
    np.testing.assert_array_equal(table[cm.FIRST + 2:cm.FIRST + 2 + 2 * ROUNDS], key.keys)
    np.testing.assert_array_equal(cm.perm_table(3, 1, 100, True, 16),
                                  order_table(3, 1, 100, True, 16))


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


def _nvrtc_ptx(exprs, *extra):
    """Compile the program with the module's options, ``extra`` ones (default
    ``-arch=compute_90``) and ``exprs`` (NVRTC through cuda.bindings, no GPU needed):
    ``(log, {expression: lowered name}, ptx)`` (the PTX for the default only); asserts it
    compiled."""
    nvrtc = _nvrtc()
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, prog = nvrtc.nvrtcCreateProgram(cm.source().encode(), b"dense.cu", 0, [], [])
    assert err == ok
    for expr in exprs:
        assert nvrtc.nvrtcAddNameExpression(prog, expr.encode())[0] == ok
    opts = [o.encode() for o in cm.compile_options()] + list(extra or [b"-arch=compute_90"])
    result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
    size = nvrtc.nvrtcGetProgramLogSize(prog)[1]
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    log = log.rstrip(b"\x00 ").decode(errors="replace")
    assert result == ok, log
    lowered = {}
    for expr in exprs:
        err, name = nvrtc.nvrtcGetLoweredName(prog, expr.encode())
        assert err == ok and name.startswith(b"_Z"), expr
        lowered[expr] = name.decode()
    ptx = b""
    if not extra:  # PTX for a virtual architecture (a real one gives machine code)
        size = nvrtc.nvrtcGetPTXSize(prog)[1]
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(prog)
    return log, lowered, ptx.rstrip(b"\x00 ").decode()


def _entry(ptx: str, name: str) -> str:
    """The PTX body of kernel ``name`` (a lowered or plain name)."""
    match = re.search(r"\.entry " + re.escape(name) + r"\(.*?\n\}\n", ptx, re.S)
    assert match, name
    return match.group(0)


@pytest.mark.parametrize("dtype,loss,activation", CONFIGS)
def test_nvrtc_compiles_every_instance(dtype, loss, activation):
    """optim.cuh + reduce.cuh + dense.cu compile without warnings for compute_90 with the
    module's options and name expressions, the noise kernels included (NVRTC through
    cuda.bindings; needs no GPU)."""
    names = cm.name_expressions(dtype, loss, activation)
    log, lowered, ptx = _nvrtc_ptx([e for k, e in names.items() if k not in cm.PLAIN])
    assert log == "", log
    for kernel in cm.PLAIN:
        assert f".entry {kernel}(" in ptx
    assert set(lowered) == {names[k] for k in cm.KERNELS if k not in cm.PLAIN}


# float64 instructions an accumulator needs (a float32 value widened and added, the block's
# shared-memory tree, the store of its sum); the norms add their products
ACCUMULATOR_F64 = {"add.f64", "cvt.f64.f32", "mov.f64", "ld.shared.f64", "st.shared.f64",
                   "st.global.f64"}
NORM_F64 = ACCUMULATOR_F64 | {"fma.rn.f64", "mul.f64", "mul.rn.f64"}


@pytest.mark.parametrize("loss,activation", [("mse", "relu"), ("softmax", "tanh"),
                                             ("logistic", "sigmoid")])
def test_nvrtc_float32_kernels_compute_in_float32(loss, activation):
    """In float32 the passes over rows are pure f32 but for their float64 accumulators:
    ``loss_sum``'s only f64 instructions are an accumulator's (the rows' losses are computed
    in f32), ``grad_norms`` adds the norms' products, neither rounds an f64 value to f32;
    a step's rounding of f64 values to f32 is its per-step optimizer scalars only, the same
    in the plain and the tracked step, and it stores f64 only in its block's loss sum and
    the batch-loss sums (the tracked step also its block's norms and the noise sums)."""
    names = cm.name_expressions("float32", loss, activation)
    _, lowered, ptx = _nvrtc_ptx([e for k, e in names.items() if k not in cm.PLAIN])
    body = {k: _entry(ptx, lowered[names[k]]) for k in cm.KERNELS if k not in cm.PLAIN}
    mnemonic = re.compile(r"^\s+([a-z][\w.]*)\s", re.M)

    def kinds(kernel):
        """The kinds of the kernel's instructions with a float64 operand type."""
        return {op for op in mnemonic.findall(body[kernel]) if ".f64" in op}

    assert kinds("loss_sum") <= ACCUMULATOR_F64, kinds("loss_sum") - ACCUMULATOR_F64
    assert kinds("grad_norms") <= NORM_F64, kinds("grad_norms") - NORM_F64
    for kernel in ("grad_norms", "grad_sq", "loss_sum"):
        assert "cvt.rn.f32.f64" not in body[kernel], kernel
    assert (body["step"].count("cvt.rn.f32.f64") == body["step_noise"].count("cvt.rn.f32.f64")
            <= SCALAR_SLOTS)
    stores = {k: body[k].count("st.global.f64") for k in body}
    assert stores["loss_sum"] == 1 and stores["grad_norms"] == 2
    assert stores["step"] == 3 and stores["step_noise"] == 7


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nvrtc_sm90_kernels_do_not_spill(dtype):
    """Compiled to sm_90 machine code (NVRTC runs ptxas, ``-Xptxas -v``), every kernel of a
    two-hidden-layer softmax configuration, the noise kernels included, has no register
    spills."""
    names = cm.name_expressions(dtype, "softmax", "tanh")
    log, _, _ = _nvrtc_ptx([e for k, e in names.items() if k not in cm.PLAIN],
                           b"-arch=sm_90", b"--ptxas-options=-v")
    for kernel in ("step", "step_noise", "grad_norms", "grad_sq", "loss_sum"):
        assert kernel in log, log
    assert "bytes spill" in log, log
    assert not re.search(r"[1-9]\d* bytes spill", log), log


# ----------------------------------------------------------------------------- launch plan
class _FakeArray(np.ndarray):
    """A host array with CuPy's ``get``/``set`` (the fake device memory)."""

    def get(self):
        return np.array(self)

    def set(self, a):
        self[...] = a


class _FakeStream:
    """A stand-in CUDA stream: a context manager; between ``begin_capture`` and
    ``end_capture`` the fake kernels record their launches into the capture (a graph
    whose ``launch`` replays them) instead of running."""

    made: list = []

    def __init__(self, non_blocking=False):
        self.capture = None
        _FakeStream.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        assert self.capture is None, "a synchronisation during a capture"

    def begin_capture(self):
        self.capture = []

    def end_capture(self):
        graph, self.capture = _FakeGraph(self.capture), None
        return graph


class _FakeGraph:
    """A captured list of launches; ``launch`` replays them into ``_FakeGraph.sink``."""

    sink: list = []

    def __init__(self, launches):
        self.launches, self.replays = launches, 0

    def launch(self, stream=None):
        self.replays += 1
        _FakeGraph.sink.extend(self.launches)


def _fake_cupy():
    """A stand-in ``cupy`` module for the backend's Python code (arrays on the host)."""
    import types

    def wrap(a):
        return np.array(a).view(_FakeArray)

    class Hook:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    pool = types.SimpleNamespace(used_bytes=lambda: 0)
    cuda = types.SimpleNamespace(MemoryHook=Hook, Stream=_FakeStream,
                                 memory=types.SimpleNamespace(OutOfMemoryError=MemoryError))
    return types.SimpleNamespace(
        cuda=cuda, ndarray=_FakeArray, get_default_memory_pool=lambda: pool,
        asarray=lambda a, dtype=None: wrap(np.asarray(a, dtype=dtype)),
        ascontiguousarray=lambda a: wrap(np.ascontiguousarray(a)),
        empty=lambda shape, dtype: wrap(np.zeros(shape, dtype)),
        zeros=lambda shape, dtype: wrap(np.zeros(shape, dtype)))


def _c_arity(kernel: str) -> int:
    """Number of parameters of ``kernel`` in the CUDA C source."""
    match = re.search(r"__global__ void " + kernel + r"\((.*?)\)\s*\{", cm.source(), re.S)
    return match.group(1).count(",") + 1


# positions in a step launch's arguments (dense.cu's ``step``; ``step_noise`` adds two), and
# of the step index in ``update_params``'
STEP, FIRST, ROWS, SCALE, TILE, WSH, LOSSES, UPDATE_STEP = 14, 19, 20, 21, 22, 23, 24, 10


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("track_noise", [False, True])
def test_launch_plan_without_a_gpu(monkeypatch, track_noise, fused):
    """The backend's Python on a stand-in CuPy: one launch per step (``step_noise`` for a
    tracked step of at least two rows, the one-row last step a plain ``step``; with a long
    last-block sum, ``grad_blocks`` then ``update_params``), every launch with as many
    arguments as its CUDA C kernel takes and the dynamic shared memory of its tile; a whole
    epoch is captured once into a graph and replayed, every later whole epoch replays the
    same graph (with the step count before it in ``t0``); parts of an epoch launch exactly
    their steps directly, with ``t0`` making their global steps those of one epoch; the
    warm-up leaves the backend's sums alone; ``epoch_loss`` reads and resets them."""
    import importlib.util
    import sys

    import fastgd as fg
    from fastgd.kernels import device_tables
    from fastgd.kernels.reference import flatten
    from fastgd.plan import Plan

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(device_tables, "FUSED_MAX", 1 << 30 if fused else 0)
    launches = []
    monkeypatch.setattr(_FakeGraph, "sink", launches)
    monkeypatch.setattr(_FakeStream, "made", [])

    def kernel(name):
        def launch(grid, block, args, shared_mem=0):
            assert len(args) == _c_arity(name), name
            if name in ("step", "step_noise", "grad_blocks"):
                tile, wsh = args[15:17] if name == "grad_blocks" else args[TILE:WSH + 1]
                # the tile, and the 57 parameters (they fit beside it)
                assert int(wsh) == 1 and shared_mem == (int(tile) * 2 * (5 + 6 + 3) + 57) * 8
            capture = _FakeStream.made[-1].capture
            (launches if capture is None else capture).append((name, args))
        return launch

    def steps(names=("step", "step_noise")):
        return [a for n, a in launches if n in names]

    monkeypatch.setattr(cm, "build", lambda *a: cm.Kernels(*(kernel(k) for k in cm.KERNELS)))
    # a private copy of the module bound to the stand-in (sys.modules keeps the real one)
    spec = importlib.util.find_spec("fastgd.backends.cupy_backend")
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    model = fg.MLP([5, 6, 3], activation="tanh", loss="softmax")
    X = np.zeros((21, 5))
    Y = np.zeros((21, 1))
    plan = Plan.for_model(model, "float64", "mbgd", 5, optimizer=fg.Adam(),
                          track_noise=track_noise)
    e = backend.CupyBackend()
    e.prepare(plan, X, Y, flatten(model.init_params(0, np.float64)))
    e.warmup()
    # the warm-up's steps run on copies (its loss pass reads the parameters in place)
    assert launches and all(a[2] is not e.theta for n, a in launches if n != "loss_sum")
    assert all(a[LOSSES] is not e.losses for a in steps())
    assert all(a[13] is not e.losses for a in steps(("update_params",)))
    launches.clear()
    lrs = np.full(plan.steps_per_epoch(21), 0.1)
    e.run_epoch(0, lrs)
    plain = ["step"] if fused else ["grad_blocks", "update_params"]
    per_step = ["step_noise"] if track_noise else plain
    assert [n for n, _ in launches] == per_step * 4 + plain
    first = steps(("step", "step_noise", "grad_blocks"))
    assert [(int(a[FIRST]), int(a[ROWS])) if n != "grad_blocks" else (int(a[12]), int(a[13]))
            for n, a in launches if n != "update_params"] == [
        (0, 5), (5, 5), (10, 5), (15, 5), (20, 1)]
    assert all(a[8] is e.loss_blocks and a[LOSSES] is e.losses and a[12] is e.t0
               for a in steps())
    updates = steps(("update_params",))
    assert all(a[5] is e.loss_blocks and a[8] is e.t0 and a[13] is e.losses for a in updates)
    assert len(updates) == (0 if fused else 1 if track_noise else 5)
    # softmax: scale 1 / rows; the two-launch weight is the fused one's (scale * rows)
    assert [float(a[11]) for a in updates] == [1.0] * len(updates)
    # the C types: i64 rows and steps, double weight
    assert all(isinstance(a[12], np.int64) and isinstance(a[11], np.float64) for a in updates)
    scales = [float(a[14] if n == "grad_blocks" else a[SCALE]) for n, a in launches
              if n != "update_params"]
    assert len(first) == 5 and scales == [0.2] * 4 + [1.0]
    assert e.t0.tolist() == [0] and e.steps_done == 5
    graphs = list(e._graphs.values())
    assert len(graphs) == 1 and graphs[0].replays == 1
    launches.clear()
    e.run_epoch(1, lrs)  # the same graph again, no new capture
    assert [n for n, _ in launches] == per_step * 4 + plain
    assert list(e._graphs.values()) == graphs and graphs[0].replays == 2
    assert e.t0.tolist() == [5] and e.lrs[:5].tolist() == lrs.tolist()
    assert e.epoch_loss() is None  # the stand-in kernels add nothing
    e.losses[:] = (6.0, 4.0)
    assert e.loss_sums().tolist() == [6.0, 4.0] and e.epoch_loss() == 1.5
    assert e.losses.tolist() == [0.0, 0.0] and e.epoch_loss() is None
    launches.clear()
    e.run_epoch(2, lrs, 1, 3)
    assert e.t0.tolist() == [9]  # global steps 9 + s + 1: those of one whole epoch
    e.run_epoch(2, lrs, 3)
    assert e.t0.tolist() == [9]
    assert [int(a[STEP]) if n != "update_params" else int(a[UPDATE_STEP])
            for n, a in launches if n != "grad_blocks"] == [1, 2, 3, 4]
    assert [n for n, _ in launches] == per_step * 3 + plain
    assert graphs[0].replays == 2 and e.steps_done == 14
    assert e.epoch_noise().tolist() == [0.0, 0.0, 0.0]
    assert _c_arity("step_noise") == _c_arity("step") + 2


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

    @pytest.mark.parametrize("block_rows", [0, 16])
    @pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1000])
    def test_device_permutation_matches_numpy(self, n, block_rows):
        """permutation_kernel visits the samples in the order of kernels.permutation (a row
        and a block shuffle)."""
        import cupy

        from fastgd.kernels.permutation import order

        k = cm.build("float32", "mse", "relu")
        table = cm.perm_table(11, 2, n, True, block_rows)
        out = cupy.empty(n, cupy.int64)
        k.permutation_kernel((-(-n // 128),), (128,), (cupy.asarray(table), np.int64(n), out))
        np.testing.assert_array_equal(out.get(), order(table, n))

    def test_out_of_memory_says_what_did_not_fit(self):
        """A pool limit below the data's size turns into a MemoryError naming the buffers
        the run needs (none grows with the batch size)."""
        import cupy

        pool = cupy.get_default_memory_pool()
        model = fg.Linear(n_features=64, n_outputs=1, loss="mse")
        X = np.zeros((20_000, 64), np.float32)
        y = np.zeros(20_000, np.float32)
        old = pool.get_limit()
        pool.free_all_blocks()
        pool.set_limit(size=pool.used_bytes() + 1024 * 1024)
        try:
            with pytest.raises(MemoryError, match=r"placing the run.*needs about .* MiB at "
                                                  r"its peak; largest: X .*batch size"):
                fg.fit(model, X, y, backend="cupy", batch_size=77, epochs=1)
        finally:
            pool.set_limit(size=old)


@pytest.mark.skipif(_REASON is not None, reason=f"cupy backend unavailable: {_REASON}")
class TestNoiseAndPartsOnGpu:
    """Partial epochs, load, exact_noise and online noise tracking against the NumPy
    reference (``tests/cudasim/device_checks.py``, shared with the simulator suite)."""

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("row", device_checks.NOISE_MODELS,
                             ids=[device_checks.row_id(r) for r in device_checks.NOISE_MODELS])
    def test_exact_noise_matches_reference(self, row, dtype):
        """exact_noise over 300 rows (three blocks), the training data and another set."""
        device_checks.check_exact_noise("cupy", row, dtype, n=N)

    @pytest.mark.parametrize("track_noise", [False, True])
    def test_chunked_epochs_are_one_epoch_bitwise(self, track_noise):
        """run_epoch in parts == one call, bitwise (shuffled, Adam)."""
        device_checks.check_chunked_epochs("cupy", ((7, 16, 3), "softmax", "relu"),
                                           "float64", fg.Adam(lr=0.01), n=N,
                                           parts=(0, 7, 7, 30, None), track_noise=track_noise)

    def test_chunked_epochs_float32(self):
        """The same in float32 with SGD momentum."""
        device_checks.check_chunked_epochs("cupy", ((7, 2), "mse", "relu"), "float32",
                                           fg.SGD(lr=0.05, momentum=0.9), n=N,
                                           parts=(0, 1, 33, None))

    def test_load_then_run_is_the_run_from_there(self):
        """load() restores parameters, Adam state and the step counter exactly."""
        device_checks.check_load("cupy", ((7, 16, 3), "softmax", "tanh"), "float64",
                                 fg.Adam(lr=0.01, amsgrad=True), n=N)

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("row,n,batch_size,mode", [
        (((7, 1), "mse", "relu"), 300, 32, "mbgd"),
        (((7, 3), "mse", "relu"), 301, 50, "mbgd"),         # last batch of 1: skipped
        (((7, 2), "logistic", "relu"), 300, 300, "bgd"),    # b = n, three blocks
        (((7, 16, 8, 3), "softmax", "tanh"), 300, 200, "mbgd"),
        (((7, 4), "softmax", "relu"), 40, 1, "sgd"),        # nothing tracked
    ], ids=device_checks.ONLINE_IDS)
    def test_online_noise_matches_reference(self, row, n, batch_size, mode, dtype):
        """epoch_noise sums equal the reference's; tracking leaves the parameters' bits."""
        device_checks.check_online_noise("cupy", row, dtype, n, batch_size, mode,
                                         fg.SGD(lr=0.05, momentum=0.9))

    def test_untracked_epochs_launch_no_noise_kernel(self):
        """track_noise=False: the noise kernels are never launched."""
        device_checks.check_untracked_launches_nothing_extra(
            "cupy", ((7, 16, 3), "softmax", "relu"), "float64")


@pytest.mark.skipif(_REASON is not None, reason=f"cupy backend unavailable: {_REASON}")
class TestBatchLossOnGpu:
    """The in-kernel batch loss (``epoch_loss``) against the NumPy reference
    (``tests/cudasim/device_checks.py``, shared with the simulator suite), and against the
    numba-cuda backend's (the same decomposition) where that runs on a GPU too."""

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("mode,n,batch_size", [("sgd", 40, None), ("mbgd", N, 32),
                                                   ("bgd", N, None)])
    @pytest.mark.parametrize("row", device_checks.LOSS_MODELS,
                             ids=[device_checks.row_id(r) for r in device_checks.LOSS_MODELS])
    def test_batch_loss_matches_reference(self, row, mode, n, batch_size, dtype):
        """One-row steps; batches of 32 and a last one of 12; one step of 300 rows over
        three blocks: epoch_loss equals the reference's, parts add the same sums, a second
        read is None."""
        device_checks.check_batch_loss("cupy", row, dtype, n, batch_size, mode)

    @pytest.mark.parametrize("track_noise", [False, True])
    def test_batch_loss_several_tiles_per_block(self, monkeypatch, track_noise):
        """At most 2 blocks: a step's 300 rows are 100 tiles of 3 rows in two blocks (with
        track_noise, through the tracked step's kernel)."""
        from fastgd.kernels import device_tables

        monkeypatch.setattr(device_tables, "MAX_BLOCKS", 2)
        device_checks.check_batch_loss("cupy", ((5, 6, 3), "softmax", "relu"), "float64", N,
                                       mode="bgd", track_noise=track_noise)

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_batch_loss_agrees_with_numba_cuda(self, dtype):
        """cupy and numba-cuda (same launch shape and decomposition) report the same
        epoch losses to rounding."""
        reason = fg.backends.describe().get("numba-cuda")
        if reason is not None:
            pytest.skip(f"numba-cuda unavailable: {reason}")
        row = ((5, 6, 3), "softmax", "tanh")
        X, y = make_problem(row[0], row[1], N, np.dtype(dtype))
        model = device_checks.model_of(*row)
        losses = []
        for backend in ("cupy", "numba-cuda"):
            run = fg.prepare(model, X, y, batch_size=32, backend=backend, dtype=dtype,
                             lr=0.1, momentum=0.9)
            got = []
            for epoch in range(2):
                run.run_epoch(epoch)
                got.append(run.engine.epoch_loss())
            losses.append(got)
        tol = {"float64": dict(rtol=1e-12), "float32": device_checks.LOSS_TOL["float32"]}
        np.testing.assert_allclose(losses[0], losses[1], **tol[dtype])
