"""Compile GPU kernels without a GPU and read what they cost: ptxas's register, spill and
shared-memory report, and the float64 instructions of their PTX.

Used by ``tests/test_cuda_compile.py``; unit-tested on captured text in
``tests/test_cuda_resources.py``. Nothing here needs a GPU or imports a kernel module:

* :func:`find_ptxas` / :func:`run_ptxas`: ``ptxas -arch=sm_90 -v`` on a PTX text;
* :func:`nvrtc_compile`: a CUDA C++ program through NVRTC (``cuda.bindings.nvrtc``) for
  ``sm_90`` with ``-Xptxas -v``: its PTX, its log (with ptxas's report) and the lowered
  (mangled) names of its name expressions;
* :func:`parse_ptxas_verbose`: ptxas's ``-v`` report -> :class:`Usage` per function;
* :func:`ptx_functions`, :func:`callees`, :func:`dynamic_shared`: a PTX module's function
  bodies, which functions an entry calls, whether it uses ``extern`` (dynamic) shared memory;
* :func:`f64_instructions`: an entry's float64 instructions (its callees' too, attributed
  to the call), each with its source site (``.loc``: file, line, the function NVRTC says
  it was inlined from) so a report can point at the line to fix.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ARCH = "sm_90"


# ----------------------------------------------------------------------------- ptxas
@dataclass(frozen=True)
class Usage:
    """What ptxas reports for one function (``None``: not reported, e.g. the registers of
    a ``.func`` compiled into its callers)."""

    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    registers: int | None = None
    smem: int = 0
    barriers: int | None = None

    @property
    def local_memory(self) -> bool:
        """Whether the function uses local memory (a stack frame or spills)."""
        return bool(self.stack or self.spill_stores or self.spill_loads)


_COMPILING = re.compile(r"Compiling entry function '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_BARRIERS = re.compile(r"used (\d+) barriers")


def parse_ptxas_verbose(text: str) -> dict[str, Usage]:
    """``{function: Usage}`` from ptxas's ``-v`` report (the ``ptxas`` program's or the one
    NVRTC writes to its log for ``-Xptxas -v``).

    A ``Function properties for F`` line opens ``F``'s frame line; a ``Used N registers``
    line belongs to the entry named by the last ``Compiling entry function`` line.
    """
    found: dict[str, dict] = {}
    props = entry = None
    for line in text.splitlines():
        if m := _COMPILING.search(line):
            entry = m.group(1)
            found.setdefault(entry, {})
        elif m := _PROPERTIES.search(line):
            props = m.group(1)
            found.setdefault(props, {})
        elif (m := _FRAME.search(line)) and props is not None:
            found[props].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                                spill_loads=int(m.group(3)))
            props = None
        elif (m := _USED.search(line)) and entry is not None:
            smem, bars = _SMEM.search(line), _BARRIERS.search(line)
            found[entry].update(registers=int(m.group(1)),
                                smem=int(smem.group(1)) if smem else 0,
                                barriers=int(bars.group(1)) if bars else None)
    return {name: Usage(**fields) for name, fields in found.items()}


def find_ptxas() -> str | None:
    """The ``ptxas`` program: on ``PATH``, else under ``$CUDA_HOME``/``$CUDA_PATH`` or
    ``/usr/local/cuda``; ``None`` when there is none."""
    found = shutil.which("ptxas")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "ptxas").is_file():
            return str(Path(root) / "bin" / "ptxas")
    return None


def run_ptxas(ptx: str, ptxas: str, arch: str = ARCH) -> str:
    """ptxas's ``-v`` report on ``ptx`` assembled for ``arch`` (the cubin is discarded);
    ``RuntimeError`` with ptxas's output when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "kernel.ptx", Path(tmp) / "kernel.cubin"
        src.write_text(ptx)
        done = subprocess.run([ptxas, f"-arch={arch}", "-v", str(src), "-o", str(out)],
                              capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    if done.returncode:
        raise RuntimeError(f"ptxas failed ({done.returncode}):\n{log}")
    return log


# ----------------------------------------------------------------------------- NVRTC
@dataclass(frozen=True)
class NvrtcResult:
    """One NVRTC compile: the PTX, the log (ptxas's report with ``-Xptxas -v``) and
    ``{name expression: lowered name}``."""

    ptx: str
    log: str
    lowered: dict[str, str]


def nvrtc_module():
    """``cuda.bindings.nvrtc`` when it and the NVRTC library load, else ``None``."""
    try:
        from cuda.bindings import nvrtc

        err, _major, _minor = nvrtc.nvrtcVersion()
    except Exception:  # noqa: BLE001 - missing wheel or library: the caller skips
        return None
    return nvrtc if err == nvrtc.nvrtcResult.NVRTC_SUCCESS else None


def _ok(nvrtc, result, what: str):
    err, *rest = result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC {what}: {err}")
    return rest[0] if len(rest) == 1 else rest


def _text(nvrtc, prog, size_fn, get_fn) -> str:
    size = _ok(nvrtc, size_fn(prog), size_fn.__name__)
    buf = b" " * size
    _ok(nvrtc, get_fn(prog, buf), get_fn.__name__)
    return buf.rstrip(b"\0").decode()


def nvrtc_compile(source: str, options, name_expressions=(), arch: str = ARCH,
                  name: str = "fastgd.cu") -> NvrtcResult:
    """Compile ``source`` with NVRTC for ``arch`` (plus ``-Xptxas -v -lineinfo``) after
    adding ``name_expressions`` (each instantiates a template kernel); ``RuntimeError``
    with the log on a compile error."""
    nvrtc = nvrtc_module()
    if nvrtc is None:
        raise RuntimeError("NVRTC is not available")
    prog = _ok(nvrtc, nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []),
               "nvrtcCreateProgram")
    try:
        for expr in name_expressions:
            _ok(nvrtc, nvrtc.nvrtcAddNameExpression(prog, expr.encode()), expr)
        opts = [*options, f"-arch={arch}", "-Xptxas", "-v", "-lineinfo"]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        log = _text(nvrtc, prog, nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC compile failed ({err}):\n{log}")
        ptx = _text(nvrtc, prog, nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        lowered = {e: _ok(nvrtc, nvrtc.nvrtcGetLoweredName(prog, e.encode()), e).decode()
                   for e in name_expressions}
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return NvrtcResult(ptx, log, lowered)


# ----------------------------------------------------------------------------- PTX
_HEADER = re.compile(r"^(?:\.(?:visible|weak|extern)\s+)*\.(entry|func)\s+"
                     r"(?:\([^)]*\)\s*)?([\w$]+)")


def entries(ptx: str) -> list[str]:
    """The names of the kernels (``.entry``) defined in ``ptx``."""
    return [m.group(2) for m in map(_HEADER.match, ptx.splitlines())
            if m and m.group(1) == "entry"]


def ptx_functions(ptx: str) -> dict[str, str]:
    """``{name: text}`` of every ``.entry`` and ``.func`` defined in ``ptx`` (header to
    closing brace; prototypes without a body are left out)."""
    out: dict[str, str] = {}
    name, lines, opened = None, [], False
    for line in ptx.splitlines():
        if name is None:
            if m := _HEADER.match(line):
                name, lines, opened = m.group(2), [line], False
            continue
        lines.append(line)
        if not opened and line.startswith("{"):
            opened = True
        elif not opened and line.rstrip().endswith(";"):
            name = None  # a prototype
        elif opened and line.startswith("}"):
            out[name] = "\n".join(lines)
            name = None
    return out


_CALL = re.compile(r"\bcall(?:\.uni)?\s+(?:\([^)]*\)\s*,\s*)?([\w$]+)")


def callees(functions: dict[str, str], entry: str) -> list[str]:
    """The ``.func`` names ``entry`` calls, directly or not, in first-call order."""
    seen: list[str] = []
    todo = [entry]
    while todo:
        for callee in _CALL.findall(functions.get(todo.pop(), "")):
            if callee in functions and callee not in seen and callee != entry:
                seen.append(callee)
                todo.append(callee)
    return seen


_EXTERN_SHARED = re.compile(r"^\s*\.extern\s+\.shared\b[^;]*?([\w$]+)\s*\[\s*\]", re.M)


def dynamic_shared(ptx: str, body: str) -> bool:
    """Whether ``body`` (a function of ``ptx``) uses an ``extern`` (dynamically sized)
    shared array."""
    return any(re.search(rf"\b{re.escape(sym)}\b", body) for sym in _EXTERN_SHARED.findall(ptx))


@cache
def _source_lines(path: str) -> tuple[str, ...]:
    """A source file's lines (none when unreadable)."""
    try:
        return tuple(Path(path).read_text().splitlines())
    except (OSError, ValueError):
        return ()


@cache
def _python_functions(path: str) -> tuple[tuple[int, int, str], ...]:
    """``(first line, last line, name)`` of every function defined in a Python file."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return ()
    return tuple((n.lineno, n.end_lineno or n.lineno, n.name) for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


_C_SKIP = {"if", "for", "while", "switch", "return", "sizeof", "defined", "decltype"}
_C_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*(?:<[^<>()]*>)?\s*\(")


def _c_function(lines: tuple[str, ...], line: int) -> str:
    """The C/C++ function whose body holds ``line``: the nearest line above it that starts
    in column 0 (comments, preprocessor and ``template <..>`` lines aside) names it, unless
    that line closes a body (``}``: ``line`` is outside every function)."""
    for text in reversed(lines[:line]):
        if not text or text[0].isspace() or text.startswith(("//", "#", "template")):
            continue
        if text.startswith("}"):
            return ""
        names = [n for n in _C_CALL.findall(text)
                 if n not in _C_SKIP and not (n.startswith("__") and n.endswith("__"))]
        return names[0] if names else ""
    return ""


def enclosing_function(path: str, line: int) -> str:
    """The innermost function around ``line`` of a Python (``def``) or C/C++ source
    (``""``: none found)."""
    if path.endswith(".py"):
        spans = [s for s in _python_functions(path) if s[0] <= line <= s[1]]
        return min(spans, key=lambda s: s[1] - s[0])[2] if spans else ""
    return _c_function(_source_lines(path), line)


@cache
def _python_statements(path: str) -> tuple[tuple[int, int], ...]:
    """``(first, last line)`` of every statement of a Python file (a compound statement:
    its header only)."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return ()
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            body = getattr(node, "body", None)
            end = body[0].lineno - 1 if body and isinstance(body, list) else node.end_lineno
            spans.append((node.lineno, max(node.lineno, end or node.lineno)))
    return tuple(spans)


def _c_statement(lines: tuple[str, ...], line: int) -> tuple[int, int]:
    """1-based ``(first, last line)`` of the C statement around ``line``: lines joined while
    parentheses are open, a statement starting after a line that ends in ``;``/``{``/``}``."""

    def code(i):
        return lines[i - 1].split("//")[0].rstrip()

    first = line
    while first > 1 and code(first - 1) and not code(first - 1).endswith((";", "{", "}")):
        first -= 1
    depth, last = 0, first
    for last in range(first, len(lines) + 1):
        depth += code(last).count("(") - code(last).count(")")
        if last >= line and depth <= 0:
            break
    return first, last


def statement(path: str, line: int) -> str:
    """The source text of the statement that ``line`` starts or continues, joined on one
    line (``""`` when unreadable)."""
    lines = _source_lines(path)
    if not 0 < line <= len(lines):
        return ""
    if path.endswith(".py"):
        spans = [s for s in _python_statements(path) if s[0] <= line <= s[1]]
        first, last = min(spans, key=lambda s: s[1] - s[0]) if spans else (line, line)
    else:
        first, last = _c_statement(lines, line)
    return " ".join(t.strip() for t in lines[first - 1:last])


@dataclass(frozen=True)
class Site:
    """Where an instruction comes from: ``file:line`` and its function: the innermost one
    NVRTC names in the ``.loc``, else, in a Python file, the ``def`` around the line
    (Numba-CUDA locates a call inlined into a kernel at the kernel's line that calls it).
    """

    file: str = ""
    line: int = 0
    function: str = ""

    def called(self) -> set[str]:
        """The names called in the statement at the site (``c = scalars(a, t[0])`` ->
        ``scalars``; a statement over several lines is read whole)."""
        names = set(_C_CALL.findall(statement(self.file, self.line))) if self.file else set()
        return names - _C_SKIP

    def source(self) -> str:
        """The source line's text, stripped (``""`` when unreadable)."""
        lines = _source_lines(self.file)
        return lines[self.line - 1].strip() if 0 < self.line <= len(lines) else ""

    def describe(self) -> str:
        """``dense.py:375 in f: `text```, or ``<no line info>``."""
        if not self.file or not self.line:
            return "<no line info>"
        where = f"{Path(self.file).name}:{self.line}"
        where += f" in {self.function}" if self.function else ""
        text = statement(self.file, self.line) or self.source()
        return f"{where}: `{text if len(text) <= 100 else text[:97] + '...'}`"


@dataclass(frozen=True)
class Instruction:
    """One PTX instruction: its opcode (``fma.rn.f64``), its text, where it comes from and
    the ``.func`` it sits in (``""``: in the entry itself)."""

    opcode: str
    text: str
    site: Site
    callee: str = ""


_FILE = re.compile(r'^\s*\.file\s+(\d+)\s+"([^"]+)"', re.M)
_LOC = re.compile(r"^\s*\.loc\s+(\d+)\s+(\d+)\s+\d+(?:\s*,\s*function_name\s+([\w$]+))?")
_INFO = re.compile(r"^([\w$]+):\s*\n((?:\s*\.b8\s+[\d,\s]+\n)+)", re.M)
_OPCODE = re.compile(r"^\s*(?:@!?%\w+\s+)?([a-z][\w.]*)\s")


def short_name(mangled: str) -> str:
    """The plain name of an Itanium-mangled function (``_Z12step_scalarsIfEvi`` ->
    ``step_scalars``; a nested ``_ZN..E`` name's last part); other names as given."""
    if m := re.match(r"_Z(\d+)", mangled):
        return mangled[m.end():m.end() + int(m.group(1))]
    if mangled.startswith("_ZN"):
        parts, rest = [], mangled[3:]
        while m := re.match(r"(\d+)", rest):
            parts.append(rest[m.end():m.end() + int(m.group(1))])
            rest = rest[m.end() + int(m.group(1)):]
        return parts[-1] if parts else mangled
    return mangled


def _info_strings(ptx: str) -> dict[str, str]:
    """``{$L__info_stringN: function name}`` from the PTX's ``.debug_str`` section."""
    out = {}
    for label, data in _INFO.findall(ptx):
        raw = bytes(int(b) for b in re.findall(r"\d+", data.replace(".b8", "")))
        out[label] = short_name(raw.split(b"\0")[0].decode(errors="replace"))
    return out


def _statements(body: str):
    """The lines of a PTX body, an instruction written over several lines (a ``call``)
    joined into one."""
    pending = ""
    for line in body.splitlines():
        if pending:
            pending += " " + line.strip()
        elif _OPCODE.match(line) and not line.lstrip().startswith("."):
            pending = line.strip()
        else:
            yield line
            continue
        if pending.split("//")[0].rstrip().endswith(";"):
            yield pending
            pending = ""


def _instructions(body: str, files: dict[str, str], names: dict[str, str], callee=""):
    site = Site()
    for line in _statements(body):
        if m := _LOC.match(line):
            path, line_no = files.get(m.group(1), ""), int(m.group(2))
            site = Site(path, line_no,
                        names.get(m.group(3) or "", "") or enclosing_function(path, line_no))
        elif (m := _OPCODE.match(line)) and not line.lstrip().startswith("."):
            yield Instruction(m.group(1), line.strip(), site, callee)


def instructions(ptx: str, entry: str) -> list[Instruction]:
    """Every instruction of ``entry`` in ``ptx``, then those of the ``.func``\\ s it calls
    (each attributed to the site of the entry's first call to it)."""
    functions = ptx_functions(ptx)
    files = dict(_FILE.findall(ptx))
    names = _info_strings(ptx)
    own = list(_instructions(functions[entry], files, names))
    call_site = {}
    for ins in own:
        if ins.opcode.startswith("call") and (m := _CALL.search(ins.text)):
            call_site.setdefault(m.group(1), ins.site)
    out = own
    for callee in callees(functions, entry):
        site = call_site.get(callee, Site())
        out += [Instruction(i.opcode, i.text, site, callee)
                for i in _instructions(functions[callee], {}, {}, callee)]
    return out


#: Opcodes that move float64 values without computing on them.
MOVES = ("ld", "st", "mov", "selp", "shfl", "prmt")


def is_f64(opcode: str) -> bool:
    """Whether an opcode has a float64 operand type (``add.rn.f64``, ``cvt.f64.f32``)."""
    return "f64" in opcode.split(".")


def f64_instructions(ptx: str, entry: str) -> list[Instruction]:
    """``entry``'s float64 instructions that compute or convert (moves, loads, stores and
    selects left out), its callees' included (see :func:`instructions`)."""
    return [i for i in instructions(ptx, entry)
            if is_f64(i.opcode) and i.opcode.split(".")[0] not in MOVES]
