"""Every GPU kernel instance compiles for sm_90 (an H100) without a GPU, and what it costs
fits the hardware and the design.

Instances come from the kernel modules' own registries, so a new kernel is checked without
editing this file:

* Numba-CUDA: the fields of ``kernels/cuda/dense.py``'s ``build(loss, activation, dtype)``
  and every module-level kernel of ``kernels/cuda/*.py`` (``permutation_kernel``,
  ``grad_sq``), compiled by ``numba.cuda.compile_ptx(cc=(9, 0))`` with signatures built
  from their parameter names (:data:`ARG_TYPES`), then ``ptxas -arch=sm_90 -v``;
* CUDA C: ``kernels/cupy_module.py``'s ``KERNELS`` / ``TEMPLATED`` / ``PER_DTYPE`` /
  ``PLAIN`` through NVRTC (``source()``, ``compile_options()`` and the template
  instantiations of ``name_expressions()``), whose log holds ptxas's ``-v`` report.

Per instance: no local memory (stack frame, spill stores, spill loads all 0 bytes);
registers x the block size the backend launches with <= 65,536; static shared memory <=
48 KiB and static + dynamic <= the per-block limit; float32 instances compute in float64
only what :data:`F64_ALLOWED_OPCODES` / :data:`F64_ALLOWED_SITES` allow (the assert lists
the offending PTX instructions with their source lines).

The matrix: every loss x activation (``kernels/codes.py``) in float32; in float64 (the
same kernels with another type: resource checks only, and a Numba compile costs 1-3 s) the
diagonal that covers every loss and every activation once. ``FASTGD_CUDA_COMPILE_FULL=1``
checks float64 for every pair too. Each instance compiles once a process (CUDA C: one
NVRTC module per ``(dtype, loss, activation)``, as ``cupy_module.build`` makes), all of
them in the first test (NVRTC and ptxas on threads beside Numba's compiles): about 1.5-2
minutes on a 2-core machine. The PTX carries line info (``lineinfo=True`` / ``-lineinfo``:
no change to the code, only ``.loc`` lines) so float64 findings name their source line.

Skips when numba-cuda, NVVM (``libnvvm``), ptxas or NVRTC is missing (each part alone).
Helpers: ``tests/cuda_resources.py`` (unit tests: ``tests/test_cuda_resources.py``).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import os
import pkgutil
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cuda_resources as cr
import numba
import numpy as np
import pytest
from numba import float32, float64, int32, int64, uint64

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- sm_90 limits
REGISTERS_PER_BLOCK = 65536
REGISTERS_PER_THREAD = 255
REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
STATIC_SHARED = 48 * 1024  # static __shared__ arrays, any GPU
SHARED_PER_BLOCK = 48 * 1024  # static + dynamic, unless the kernel opts in
SHARED_OPT_IN = 227 * 1024  # with cudaFuncAttributeMaxDynamicSharedMemorySize (sm_90)

# ----------------------------------------------------------------------------- launches
#: Backend -> the file whose ``THREADS`` (block size) and opt-in to more than 48 KiB of
#: shared memory (a ``MAX_DYNAMIC_SHARED_SIZE_BYTES`` attribute) apply to its kernels.
BACKEND_FILES = {"numba-cuda": "fastgd/backends/numba_cuda.py",
                 "cupy": "fastgd/backends/cupy_backend.py"}
#: ``(backend, kernel) -> threads`` for a kernel launched with another block size than its
#: backend's ``THREADS`` (none today: every launch uses ``self.threads``).
BLOCK_THREADS: dict[tuple[str, str], int] = {}
#: ``(backend, kernel) -> bytes``: the most dynamic shared memory a kernel that declares an
#: ``extern`` shared array is launched with, where not ``device_tables.DYNAMIC_MAX`` (the
#: tile's activations and deltas, and the parameters when they fit,
#: ``device_tables.launch_shape``).
DYNAMIC_SHARED: dict[tuple[str, str], int] = {}

# ----------------------------------------------------------------------------- float64
#: float64 instructions a float32 kernel may hold anywhere, by opcode (regular expression
#: on the whole opcode) -> why: the design keeps the loss and the gradient-norm sums in
#: float64 accumulators (``kernels/cuda/dense.py``, ``kernels/cu/dense.cu``).
F64_ALLOWED_OPCODES = {
    r"add(\.rn)?\.f64": "adding into a float64 accumulator (row losses, |g_i|^2, their "
                        "block reductions)",
    r"fma\.rn\.f64": "a product added into a float64 accumulator (acc += v * v for the "
                    "norms, total * weight for the batch loss)",
    r"cvt(\.rn)?\.f64\.(f32|[su](8|16|32|64))": "widening a float32 value or an integer "
                                                "count for an accumulator (exact)",
}
#: A ``mul.f64`` whose two factors are one register: the square of a widened value (the
#: norms' ``g * g``), allowed with the accumulators.
F64_SQUARE = re.compile(r"^mul(\.rn)?\.f64\s+%\w+,\s*(%\w+),\s*\2\s*;")
#: Functions whose float64 work is the design's, wherever it is inlined -> why. A site
#: matches by its function (NVRTC's innermost inlined function, or the function around the
#: line) or by a name called in its statement (Numba-CUDA locates an inlined call at the
#: kernel's statement that calls it). An instruction inside a ``.func`` (libdevice's
#: ``pow``) has the site of its call.
F64_ALLOWED_SITES = {
    "scalars": "the optimizer's per-step scalars (bias corrections beta**t, their "
               "reciprocals and square roots) in float64, once per thread, rounded to "
               "the dtype (kernels/cuda/optim.py)",
    "step_scalars": "the same per-step scalars (kernels/numba_optim.py, optim.cuh)",
    "add_batch_loss": "one thread a step: the float64 batch loss, weight scale * rows",
    "add_noise_step": "one thread a step: the gradient-noise estimates (kernels/noise.py)",
    "step_estimates": "the gradient-noise estimates (kernels/noise.py), float64 by design",
    "block_sum": "a float64 sum's block reduction and its once-per-thread scaling",
    "tree_sum": "the same block reduction (the norms' sum times rows^2, once per thread)",
    "finish_step": "the last block's once-per-step work in CUDA C: the per-step scalars, the "
                   "batch-loss weight (its per-parameter update, update_element, is checked)",
}

DTYPES = ("float32", "float64")


# ----------------------------------------------------------------------------- instances
@dataclass(frozen=True)
class Instance:
    """One compiled kernel: backend, kernel name, dtype (``None``: the kernel has no
    dtype), loss and activation (``None``: the same code for every pair)."""

    backend: str
    kernel: str
    dtype: str | None = None
    loss: str | None = None
    activation: str | None = None

    @property
    def id(self) -> str:
        """``numba-cuda:step:float32:mse-relu``, shorter where the kernel has no dtype or
        pair."""
        parts = [self.backend, self.kernel, self.dtype or ""]
        parts.append(f"{self.loss}-{self.activation}" if self.loss else "")
        return ":".join(p for p in parts if p)


def _pairs(dtype: str) -> list[tuple[str, str]]:
    """The (loss, activation) pairs checked in ``dtype``: all of them in float32 (and with
    ``FASTGD_CUDA_COMPILE_FULL=1``), else a diagonal covering each loss and activation."""
    from fastgd.kernels.codes import ACTIVATION_CODES, LOSS_CODES

    losses, acts = list(LOSS_CODES), list(ACTIVATION_CODES)
    if dtype == "float32" or os.environ.get("FASTGD_CUDA_COMPILE_FULL") == "1":
        return list(itertools.product(losses, acts))
    n = max(len(losses), len(acts))
    return [(losses[i % len(losses)], acts[i % len(acts)]) for i in range(n)]


def _arg_types(T) -> dict:
    """Numba type of each kernel parameter name, for parameters of dtype ``T`` (what the
    numba-cuda backend passes: C-contiguous device arrays and NumPy scalars)."""
    return {
        "X": T[:, ::1], "Y": T[:, ::1], "theta": T[::1], "state": T[:, ::1],
        "partial": T[:, ::1], "scale": T, "perm": uint64[::1], "lay": int64[:, ::1],
        "counter": int32[::1], "t0": int64[::1], "hyper": float64[::1],
        "lrs": float64[::1], "loss_blocks": float64[::1], "sq_blocks": float64[::1],
        "losses": float64[::1], "noise": float64[::1], "out": float64[::1],
        "code": int64, "s": int64, "start": int64, "rows": int64, "tile": int64,
        "n": int64, "n_blocks": int64, "weight": float64, "wsh": int64,
    }


#: Per-kernel exceptions to :func:`_arg_types` (``kernel -> {parameter: numba type}``).
ARG_TYPES = {"permutation_kernel": {"out": int64[::1]}}


def numba_signature(kernel: str, py_func, dtype: str | None) -> tuple:
    """The signature a kernel is compiled with, from its parameters' names; ``KeyError``
    naming a parameter :func:`_arg_types` does not know."""
    types = {**_arg_types(numba.from_dtype(np.dtype(dtype or "float64"))),
             **ARG_TYPES.get(kernel, {})}
    params = inspect.signature(py_func).parameters
    missing = [p for p in params if p not in types]
    if missing:
        raise KeyError(f"{kernel}: no type for parameter(s) {missing}: add them to "
                       "_arg_types / ARG_TYPES in tests/test_cuda_compile.py")
    return tuple(types[p] for p in params)


def _takes_dtype(kernel: str, py_func) -> bool:
    """Whether a kernel's signature depends on the dtype."""
    one, other = _arg_types(float32), _arg_types(float64)
    return any(p not in ARG_TYPES.get(kernel, {}) and one.get(p) != other.get(p)
               for p in inspect.signature(py_func).parameters)


def _module_kernels() -> dict[str, object]:
    """Every module-level Numba-CUDA kernel of ``fastgd.kernels.cuda`` (``name -> kernel``)."""
    import importlib

    from numba.cuda.dispatcher import CUDADispatcher

    import fastgd.kernels.cuda as package

    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device"):
                found.setdefault(name, obj)
    return found


def numba_instances() -> tuple[list[Instance], dict]:
    """Numba-CUDA instances and ``{instance: kernel}``: ``dense.build``'s fields per dtype
    and pair (one that is the same object in every build, or whose signature has no dtype,
    counts once), then the module-level kernels not among them."""
    from fastgd.kernels.cuda import dense

    out: dict[Instance, object] = {}
    for dtype in DTYPES:
        builds = {pair: dense.build(*pair, dtype) for pair in _pairs(dtype)}
        for pair, kernels in builds.items():
            for name, fn in kernels._asdict().items():
                shared = all(getattr(b, name) is fn for b in builds.values())
                typed = dtype if _takes_dtype(name, fn.py_func) else None
                inst = Instance("numba-cuda", name, typed, *((None, None) if shared else pair))
                out.setdefault(inst, fn)
    for name, fn in _module_kernels().items():
        for dtype in DTYPES if _takes_dtype(name, fn.py_func) else (None,):
            if not any(k is fn and i.dtype == dtype for i, k in out.items()):
                out[Instance("numba-cuda", name, dtype)] = fn
    return list(out), out


def cupy_instances() -> list[Instance]:
    """CUDA C instances: ``TEMPLATED`` kernels per dtype and pair, ``PER_DTYPE`` per dtype,
    ``PLAIN`` once."""
    from fastgd.kernels import cupy_module as cm

    out = []
    for dtype in DTYPES:
        for kernel in cm.KERNELS:
            if kernel in cm.TEMPLATED:
                out += [Instance("cupy", kernel, dtype, *p) for p in _pairs(dtype)]
            elif kernel in cm.PER_DTYPE:
                out.append(Instance("cupy", kernel, dtype))
            elif dtype == DTYPES[0]:
                out.append(Instance("cupy", kernel))
    return out


def _enumerate():
    """``(instances, {numba instance: kernel}, errors)``; a registry that fails to load is
    an error (reported by :func:`test_registries_enumerate`), not a collection error."""
    errors = []

    def guarded(get, empty):
        try:
            return get()
        except Exception as exc:  # noqa: BLE001 - reported by a test, with the error
            errors.append(f"{get.__name__}: {type(exc).__name__}: {exc}")
            return empty

    numba_found, kernels = guarded(numba_instances, ([], {}))
    return numba_found + guarded(cupy_instances, []), kernels, errors


INSTANCES, NUMBA_KERNELS, ENUMERATION_ERRORS = _enumerate()
PARAMS = [pytest.param(i, id=i.id) for i in INSTANCES]
F32_PARAMS = [pytest.param(i, id=i.id) for i in INSTANCES if i.dtype == "float32"]


# ----------------------------------------------------------------------------- compiling
@dataclass(frozen=True)
class Compiled:
    """One instance compiled: its PTX module, the entry's name, and ptxas's report."""

    ptx: str
    entry: str
    usage: dict[str, cr.Usage]

    def entry_usage(self) -> cr.Usage:
        """The kernel's own ptxas report."""
        return self.usage[self.entry]

    def callees(self) -> list[str]:
        """The ``.func``\\ s the kernel calls."""
        return cr.callees(cr.ptx_functions(self.ptx), self.entry)


class Skip(Exception):
    """A toolkit piece is missing: the tests of the instance skip with this reason."""


class CompileError(Exception):
    """A kernel does not compile (kept, and raised by every test of the instance)."""


def _attempt(fn, *args):
    """``fn(*args)``, or the :class:`Skip` / :class:`CompileError` it ended with."""
    try:
        return fn(*args)
    except (Skip, CompileError) as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - kept as the instance's result
        return CompileError(f"{type(exc).__name__}: {exc}")


def _unwrap(result, what: str):
    if isinstance(result, Skip):
        pytest.skip(str(result))
    if isinstance(result, CompileError):
        raise CompileError(f"{what} does not compile for sm_90: {result}")
    return result


_results: dict[Instance, object] = {}  # Compiled, Skip or CompileError
_programs: dict[tuple, object] = {}  # (dtype, pair) -> (NvrtcResult, usage), or an error


def compiled(inst: Instance) -> Compiled:
    """The instance compiled (once a process; :func:`compile_all` does many at once);
    skips where a toolkit piece is missing, raises :class:`CompileError` otherwise."""
    if inst not in _results:
        _results[inst] = _attempt(_compile_numba if inst.backend == "numba-cuda"
                                  else _compile_cupy, inst)
    return _unwrap(_results[inst], inst.id)


def compile_all(instances) -> None:
    """Compile ``instances`` into the cache, CUDA C programs and ptxas runs on a thread
    pool (NVRTC and the ptxas process leave the GIL) while this thread runs Numba's
    compiles."""
    todo = [i for i in dict.fromkeys(instances) if i not in _results]
    programs = {program_key(i) for i in todo if i.backend == "cupy"} - set(_programs)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        pending = {key: pool.submit(_attempt, _nvrtc_program, *key) for key in programs}
        assembling = {}
        for inst in todo:
            if inst.backend == "numba-cuda":
                ptx = _attempt(numba_ptx, inst)
                assembling[inst] = (pool.submit(_attempt, assemble, ptx)
                                    if isinstance(ptx, str) else ptx)
        _programs.update({key: job.result() for key, job in pending.items()})
        for inst in todo:
            job = assembling.get(inst)
            _results[inst] = (_attempt(_compile_cupy, inst) if job is None
                              else job if isinstance(job, Exception) else job.result())


class _Sm90:
    compute_capability = (9, 0)


def _verify_with_log(original):
    """NVVM's verifier raising with its log (numba-cuda drops it: "ERROR_INVALID_IR")."""

    def verify(self):
        try:
            original(self)
        except Exception as exc:
            raise RuntimeError(f"{exc}: {self.get_log()}") from exc

    return verify


def numba_ptx(inst: Instance) -> str:
    """PTX of a Numba-CUDA instance for sm_90 (with line info), compiled with the kernel's
    own options; device functions ask the current device for its compute capability, so a
    stand-in answers (no GPU here)."""
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    if cr.find_ptxas() is None:
        raise Skip("ptxas (CUDA toolkit) is not installed")
    fn = NUMBA_KERNELS[inst]
    sig = numba_signature(inst.kernel, fn.py_func, inst.dtype)
    opts = fn.targetoptions
    with mock.patch.object(dispatcher, "get_current_device", lambda: _Sm90()), \
            mock.patch.object(nvvm.CompilationUnit, "verify",
                              _verify_with_log(nvvm.CompilationUnit.verify)):
        try:
            return cuda.compile_ptx(fn.py_func, sig, cc=(9, 0), lineinfo=True,
                                    fastmath=opts.get("fastmath", False),
                                    launch_bounds=opts.get("launch_bounds"))[0]
        except Exception as exc:
            if _nvvm_missing(exc):
                raise Skip(f"NVVM is not usable here: {exc}") from exc
            raise


def _nvvm_missing(exc: Exception) -> bool:
    """Whether a compile error says libNVVM or libdevice is missing (not a kernel's error)."""
    text = str(exc).lower()
    return (type(exc).__name__ in ("NvvmSupportError", "DynamicLibNotFoundError")
            or "libnvvm is not available" in text or "libdevice" in text)


def assemble(ptx: str) -> Compiled:
    """A one-kernel PTX module through ``ptxas -arch=sm_90 -v``."""
    (entry,) = cr.entries(ptx)
    return Compiled(ptx, entry, cr.parse_ptxas_verbose(cr.run_ptxas(ptx, cr.find_ptxas())))


def _compile_numba(inst: Instance) -> Compiled:
    return assemble(numba_ptx(inst))


def program_key(inst: Instance) -> tuple:
    """The CUDA C program an instance is compiled in: ``(dtype, (loss, activation))``, one
    per module the CuPy backend builds (a kernel without dtype or pair: the first's)."""
    dtype = inst.dtype or DTYPES[0]
    return dtype, (inst.loss, inst.activation) if inst.loss else _pairs(dtype)[0]


def _nvrtc_program(dtype: str, pair: tuple[str, str]):
    """``(NvrtcResult, ptxas report)`` of the module ``cupy_module.build`` compiles for
    ``(dtype, loss, activation)``, for sm_90."""
    from fastgd.kernels import cupy_module as cm

    if cr.nvrtc_module() is None:
        raise Skip("NVRTC (cuda-bindings + nvidia-cuda-nvrtc) is not installed")
    names = cm.name_expressions(dtype, *pair)
    exprs = [names[k] for k in cm.KERNELS if k not in cm.PLAIN]
    result = cr.nvrtc_compile(cm.source(), cm.compile_options(), exprs)
    return result, cr.parse_ptxas_verbose(result.log)


def _compile_cupy(inst: Instance) -> Compiled:
    from fastgd.kernels import cupy_module as cm

    key = program_key(inst)
    if key not in _programs:
        _programs[key] = _attempt(_nvrtc_program, *key)
    result, usage = _unwrap(_programs[key], f"the CUDA C module {key}")
    if inst.kernel in cm.PLAIN:
        entry = inst.kernel
    else:
        entry = result.lowered[cm.name_expressions(key[0], *key[1])[inst.kernel]]
    return Compiled(result.ptx, entry, usage)


@pytest.fixture(scope="module")
def warm(request):
    """Compile every instance this session's selected tests check, in parallel, once."""
    compile_all(item.callspec.params["inst"] for item in request.session.items
                if item.module is request.module and "inst" in getattr(
                    getattr(item, "callspec", None), "params", {}))


# ----------------------------------------------------------------------------- launch facts
def _backend_source(backend: str) -> str:
    return (ROOT / BACKEND_FILES[backend]).read_text()


def block_threads(inst: Instance) -> int:
    """Threads per block ``inst`` is launched with: :data:`BLOCK_THREADS`, else its
    backend's ``THREADS`` (read from the source: importing the CuPy backend needs CuPy)."""
    if (inst.backend, inst.kernel) in BLOCK_THREADS:
        return BLOCK_THREADS[inst.backend, inst.kernel]
    for node in ast.parse(_backend_source(inst.backend)).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "THREADS"
                                                for t in node.targets):
            return int(ast.literal_eval(node.value))
    raise AssertionError(f"no THREADS = <int> in {BACKEND_FILES[inst.backend]}")


def dynamic_shared_bytes(inst: Instance, comp: Compiled) -> int:
    """The most dynamic shared memory ``inst`` is launched with: 0 without an ``extern``
    shared array, else :data:`DYNAMIC_SHARED` or ``device_tables.DYNAMIC_MAX``."""
    body = cr.ptx_functions(comp.ptx)[comp.entry]
    if not cr.dynamic_shared(comp.ptx, body):
        return 0
    if (inst.backend, inst.kernel) in DYNAMIC_SHARED:
        return DYNAMIC_SHARED[inst.backend, inst.kernel]
    from fastgd.kernels import device_tables

    return device_tables.DYNAMIC_MAX


def shared_limit(backend: str) -> int:
    """Static + dynamic shared memory a block of ``backend`` may use: 227 KiB where the
    backend raises the kernels' ``MAX_DYNAMIC_SHARED_SIZE_BYTES``, else 48 KiB."""
    opted = re.search(r"max_dynamic_shared_size_bytes", _backend_source(backend), re.I)
    return SHARED_OPT_IN if opted else SHARED_PER_BLOCK


# ----------------------------------------------------------------------------- float64 rules
def f64_allowed(ins: cr.Instruction) -> bool:
    """Whether a float64 instruction of a float32 kernel is the design's (see
    :data:`F64_ALLOWED_OPCODES`, :data:`F64_SQUARE`, :data:`F64_ALLOWED_SITES`)."""
    if any(re.fullmatch(p, ins.opcode) for p in F64_ALLOWED_OPCODES):
        return True
    if F64_SQUARE.match(ins.text):
        return True
    names = {ins.site.function} | ins.site.called()
    return bool(names & set(F64_ALLOWED_SITES))


def f64_report(offending: list[cr.Instruction], examples: int = 3) -> str:
    """Offending instructions grouped by source site: counts per opcode, a few PTX lines."""
    by_site = defaultdict(list)
    for ins in offending:
        by_site[(ins.site, ins.callee)].append(ins)
    lines = []
    for (site, callee), group in by_site.items():
        counts = Counter(i.opcode for i in group)
        via = f" (inside {callee}, called there)" if callee else ""
        lines.append(f"  {site.describe()}{via}: "
                     + ", ".join(f"{n} x {op}" for op, n in counts.most_common()))
        lines += [f"      {i.text}" for i in group[:examples]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tests
def test_registries_enumerate():
    """Both kernel registries load and yield instances of every kernel they name."""
    assert not ENUMERATION_ERRORS, "\n".join(ENUMERATION_ERRORS)
    from fastgd.kernels import cupy_module as cm

    names = {(i.backend, i.kernel) for i in INSTANCES}
    assert {("cupy", k) for k in cm.KERNELS} <= names
    assert ("numba-cuda", "permutation_kernel") in names
    assert len({i.id for i in INSTANCES}) == len(INSTANCES)


@pytest.mark.parametrize("inst", PARAMS)
def test_no_local_memory(inst, warm):
    """No stack frame and no register spills, in the kernel or a function it calls."""
    comp = compiled(inst)
    bad = {name: comp.usage[name] for name in [comp.entry, *comp.callees()]
           if name in comp.usage and comp.usage[name].local_memory}
    assert not bad, f"{inst.id} uses local memory: " + "; ".join(
        f"{cr.short_name(n)}: {u.stack} bytes stack frame, {u.spill_stores} bytes spill "
        f"stores, {u.spill_loads} bytes spill loads" for n, u in bad.items())


def block_registers(registers: int, threads: int) -> int:
    """Registers a block of ``threads`` takes on sm_90: per warp, ``registers x 32`` rounded
    up to the allocation unit of 256."""
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    return per_warp * -(-threads // 32)


@pytest.mark.parametrize("inst", PARAMS)
def test_registers_fit_the_block(inst, warm):
    """Registers a thread x the threads a block the backend launches with (per warp,
    rounded to the allocation unit) <= 65,536."""
    usage, threads = compiled(inst).entry_usage(), block_threads(inst)
    assert usage.registers is not None, f"ptxas reported no registers for {inst.id}"
    assert usage.registers <= REGISTERS_PER_THREAD
    need = block_registers(usage.registers, threads)
    assert need <= REGISTERS_PER_BLOCK, (
        f"{inst.id}: {usage.registers} registers x {threads} threads = {need} (in warp "
        f"units) > {REGISTERS_PER_BLOCK} a block: the launch fails (use fewer registers, "
        "launch bounds, or fewer threads)")


@pytest.mark.parametrize("inst", PARAMS)
def test_shared_memory_fits_the_block(inst, warm):
    """Static shared memory <= 48 KiB; static + the largest dynamic size launched <= the
    per-block limit (48 KiB, 227 KiB where the backend opts in)."""
    comp = compiled(inst)
    static, dynamic = comp.entry_usage().smem, dynamic_shared_bytes(inst, comp)
    limit = shared_limit(inst.backend)
    assert static <= STATIC_SHARED, f"{inst.id}: {static} bytes static shared memory"
    why = "" if limit > SHARED_PER_BLOCK else (
        f"; {inst.backend} does not raise MAX_DYNAMIC_SHARED_SIZE_BYTES")
    assert static + dynamic <= limit, (
        f"{inst.id}: {static} bytes static + {dynamic} dynamic shared memory (the largest "
        f"launch) = {static + dynamic} > {limit} a block{why}: the launch fails")


@pytest.mark.parametrize("inst", F32_PARAMS)
def test_float32_computes_in_float32(inst, warm):
    """A float32 instance's float64 instructions are only the design's: its accumulators
    (:data:`F64_ALLOWED_OPCODES`, squares) and the once-per-step work of
    :data:`F64_ALLOWED_SITES`; the message lists the others by source line."""
    comp = compiled(inst)
    offending = [i for i in cr.f64_instructions(comp.ptx, comp.entry) if not f64_allowed(i)]
    assert not offending, (
        f"{inst.id} computes in float64 ({len(offending)} instructions outside "
        f"F64_ALLOWED_* of tests/test_cuda_compile.py):\n{f64_report(offending)}")


def test_f64_policy():
    """The allowed set on hand-made instructions: accumulator adds, widenings and squares
    pass anywhere, other float64 math only at a site of :data:`F64_ALLOWED_SITES`."""

    def ins(text, site=None):
        return cr.Instruction(text.split()[0], text, site or cr.Site())

    for ok in ("add.f64 %fd3, %fd2, %fd1;", "fma.rn.f64 %fd3, %fd2, %fd2, %fd1;",
               "cvt.f64.f32 %fd1, %f1;", "cvt.rn.f64.s64 %fd1, %rd1;",
               "mul.f64 %fd3, %fd2, %fd2;"):
        assert f64_allowed(ins(ok)), ok
    for bad in ("mul.f64 %fd3, %fd2, %fd1;", "div.rn.f64 %fd3, %fd2, %fd1;",
                "cvt.rn.f32.f64 %f1, %fd1;", "setp.gt.f64 %p1, %fd1, 0d0000000000000000;"):
        assert not f64_allowed(ins(bad)), bad
    assert f64_allowed(ins("div.rn.f64 %fd3, %fd2, %fd1;", cr.Site("x.cu", 1, "step_scalars")))
