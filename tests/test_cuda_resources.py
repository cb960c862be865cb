"""``tests/cuda_resources.py`` on captured ptxas / NVRTC text and small PTX modules (no GPU;
the two tests that run ptxas or NVRTC skip without them)."""

from __future__ import annotations

import cuda_resources as cr
import pytest

# ptxas -arch=sm_90 -v on a Numba-CUDA kernel's PTX (CUDA 13.0; the mangled name shortened)
PTXAS_CLI = """\
ptxas info    : 184 bytes gmem
ptxas info    : Compiling entry function '_ZN6fastgd4stepB2v1E5ArrayIfLi2E' for 'sm_90'
ptxas info    : Function properties for _ZN6fastgd4stepB2v1E5ArrayIfLi2E
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 8464 bytes smem
ptxas info    : Compile time = 505.174 ms
ptxas info    : Function properties for __internal_accurate_pow
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""

# NVRTC's log with -Xptxas -v (cuda-bindings 13.5), and a made-up spilling kernel last
NVRTC_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z7grad_sqIfEvPKT_xxPd' for 'sm_90'
ptxas info    : Function properties for _Z7grad_sqIfEvPKT_xxPd
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 28 registers, used 1 barriers, 8192 bytes smem
ptxas info    : Compile time = 8.490 ms
ptxas info    : Compiling entry function 'permutation_kernel' for 'sm_90'
ptxas info    : Function properties for permutation_kernel
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
ptxas info    : Compiling entry function 'spills' for 'sm_90'
ptxas info    : Function properties for spills
ptxas         .     40 bytes stack frame, 36 bytes spill stores, 28 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 384 bytes cmem[0]
"""


def test_parse_ptxas_cli_report():
    """The entry's registers, barriers and static shared memory; a ``.func``'s frame only."""
    usage = cr.parse_ptxas_verbose(PTXAS_CLI)
    step = usage["_ZN6fastgd4stepB2v1E5ArrayIfLi2E"]
    assert (step.registers, step.barriers, step.smem) == (96, 1, 8464)
    assert not step.local_memory
    assert usage["__internal_accurate_pow"] == cr.Usage()


def test_parse_nvrtc_log():
    """NVRTC's prefixed frame lines; no ``smem`` is 0 bytes; spills and frames are read."""
    usage = cr.parse_ptxas_verbose(NVRTC_LOG)
    assert usage["_Z7grad_sqIfEvPKT_xxPd"].smem == 8192
    assert usage["permutation_kernel"] == cr.Usage(registers=32, barriers=0)
    spills = usage["spills"]
    assert (spills.stack, spills.spill_stores, spills.spill_loads) == (40, 36, 28)
    assert spills.local_memory and spills.registers == 255


def test_short_name():
    """Itanium-mangled names to plain ones; other names unchanged."""
    assert cr.short_name("_Z12step_scalarsIfEviPKddxPT_") == "step_scalars"
    assert cr.short_name("_ZN6fastgd7kernels4stepB2v1E5ArrayIfLi2E") == "step"
    assert cr.short_name("permutation_kernel") == "permutation_kernel"


def _b8(name: str) -> str:
    return ".b8 " + ",".join(str(b) for b in name.encode() + b"\0")


def _module(py: str, cu: str) -> str:
    """A PTX module in the shape NVVM / NVRTC write: a prototype, shared arrays, an entry
    with ``.loc`` lines (one NVRTC-style with ``function_name``), a call over several lines,
    the called ``.func``, the ``.file`` table and the ``.debug_str`` names."""
    return f"""\
.version 8.8
.target sm_90
.address_size 64

.func  (.param .b64 func_retval0) helper
(
\t.param .b64 helper_param_0
)
;
.visible .shared .align 8 .b8 tree[8192];
.extern .shared .align 16 .b8 dyn[];

.visible .entry kern(
\t.param .u64 kern_param_0
)
{{
\t.reg .f64 \t%fd<9>;
\t.loc\t1 4 0
\tld.shared.f64 \t%fd1, [dyn];
\tcvt.f64.f32 \t%fd2, %f1;
\tmul.f64 \t%fd3, %fd2, 0d3FF0000000000000;
\tmul.f64 \t%fd4, %fd2, %fd2;
\t.loc\t2 3 5, function_name $L__info_string0, inlined_at 2 9 5
\tdiv.rn.f64 \t%fd5, %fd4, %fd3;
\t@%p1 bra \t$L__BB0_2;
\t{{ // callseq 0
\t.param .b64 param0;
\tst.param.f64 \t[param0+0], %fd5;
\t.param .b64 retval0;
\tcall.uni (retval0),
\thelper,
\t(
\tparam0
\t);
\tld.param.f64 \t%fd6, [retval0+0];
\t}} // callseq 0
\tst.global.f64 \t[%rd1], %fd6;
\tret;
}}
.func  (.param .b64 func_retval0) helper(
\t.param .b64 helper_param_0
)
{{
\t.reg .f64 \t%fd<3>;
\tld.param.f64 \t%fd1, [helper_param_0];
\tsqrt.rn.f64 \t%fd2, %fd1;
\tst.param.f64 \t[func_retval0+0], %fd2;
\tret;
}}
\t.file\t1 "{py}"
\t.file\t2 "{cu}"
\t.section\t.debug_str
\t{{
$L__info_string0:
{_b8("_Z12step_scalarsIfEvi")}

\t}}
"""


PY_SOURCE = '''\
def build():
    def kern(x, out):
        """A kernel."""
        y = scale(x[0],
                  2.0)
        out[0] = y
'''

CU_SOURCE = """\
template <typename T>
__device__ inline void step_scalars(int code, T* s) {
    s[0] = (T)(1.0 / code);
}
// a comment (with parentheses
template <typename T>
__global__ void __launch_bounds__(128) kern(T* s) {
    if (s)
        step_scalars<T>(1,
                        s);
}
"""


@pytest.fixture
def module(tmp_path):
    py, cu = tmp_path / "kern.py", tmp_path / "kern.cu"
    py.write_text(PY_SOURCE)
    cu.write_text(CU_SOURCE)
    return _module(str(py), str(cu)), str(py), str(cu)


def test_ptx_functions_entries_callees(module):
    """Definitions only (the prototype is left out); the entry calls ``helper``; the entry
    names the ``extern`` shared array, ``helper`` does not."""
    ptx = module[0]
    functions = cr.ptx_functions(ptx)
    assert list(functions) == ["kern", "helper"]
    assert functions["helper"].rstrip().endswith("}")
    assert cr.entries(ptx) == ["kern"]
    assert cr.callees(functions, "kern") == ["helper"]
    assert cr.dynamic_shared(ptx, functions["kern"])
    assert not cr.dynamic_shared(ptx, functions["helper"])


def test_f64_instructions_and_their_sites(module):
    """Moves, loads and stores are left out; a ``.loc`` without ``function_name`` in a Python
    file names the ``def`` around it, NVRTC's names the inlined function; the callee's
    instructions carry the call's site; the multi-line call is one instruction."""
    ptx, py, cu = module
    found = cr.f64_instructions(ptx, "kern")
    assert [i.opcode for i in found] == ["cvt.f64.f32", "mul.f64", "mul.f64", "div.rn.f64",
                                         "sqrt.rn.f64"]
    assert found[0].site == cr.Site(py, 4, "kern")
    assert found[0].site.called() == {"scale"}
    assert found[3].site == cr.Site(cu, 3, "step_scalars")
    assert (found[4].callee, found[4].site) == ("helper", found[3].site)
    call = [i for i in cr.instructions(ptx, "kern") if i.opcode.startswith("call")]
    assert call and "helper" in call[0].text and call[0].text.endswith(";")
    assert "kern.py:4 in kern: `y = scale(x[0], 2.0)`" == found[0].site.describe()


def test_c_functions_and_statements(module):
    """C/C++: the function around a line (``__launch_bounds__`` and comments aside) and a
    statement over lines (with its ``if``); a line after a closing brace is in no
    function."""
    _, py, cu = module
    assert cr.enclosing_function(cu, 3) == "step_scalars"
    assert cr.enclosing_function(cu, 10) == "kern"
    assert cr.enclosing_function(cu, 5) == ""
    assert cr.statement(cu, 10) == "if (s) step_scalars<T>(1, s);"
    assert cr.Site(cu, 10).called() == {"step_scalars"}
    assert cr.statement(py, 5) == "y = scale(x[0], 2.0)"
    assert cr.Site().describe() == "<no line info>"


def test_is_f64():
    """An opcode with a float64 type part, not one that merely contains "f64"."""
    assert cr.is_f64("fma.rn.f64") and cr.is_f64("cvt.rn.f32.f64")
    assert not cr.is_f64("mov.b64") and not cr.is_f64("add.f32")


TINY_PTX = """\
.version 8.0
.target sm_90
.address_size 64

.visible .entry tiny(
\t.param .u64 tiny_param_0
)
{
\t.reg .b64 \t%rd<3>;
\tld.param.u64 \t%rd1, [tiny_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tst.global.u64 \t[%rd2], %rd1;
\tret;
}
"""


def test_run_ptxas_on_tiny_kernel():
    """ptxas's real report parses: the kernel uses registers and no local memory."""
    ptxas = cr.find_ptxas()
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) is not installed")
    usage = cr.parse_ptxas_verbose(cr.run_ptxas(TINY_PTX, ptxas))["tiny"]
    assert usage.registers and usage.registers > 0 and not usage.local_memory


def test_nvrtc_compile_with_name_expressions():
    """NVRTC's PTX holds the instantiated template; its log holds ptxas's report."""
    if cr.nvrtc_module() is None:
        pytest.skip("NVRTC (cuda-bindings + nvidia-cuda-nvrtc) is not installed")
    src = "template <typename T> __global__ void twice(T* x) { x[threadIdx.x] *= T(2); }"
    result = cr.nvrtc_compile(src, ["-std=c++17"], ["twice<float>"])
    lowered = result.lowered["twice<float>"]
    assert cr.entries(result.ptx) == [lowered]
    assert cr.parse_ptxas_verbose(result.log)[lowered].registers
    assert not cr.f64_instructions(result.ptx, lowered)
    with pytest.raises(RuntimeError, match="NVRTC compile failed"):
        cr.nvrtc_compile("__global__ void broken( {", [], [])
