"""Argument types: option text to checked values (``argparse`` ``type=`` callables), and
:func:`parse_bytes` for memory sizes."""

from __future__ import annotations

import argparse
import ast
import math
import re

from ..compare import MODES

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """A memory size: ``512M``, ``2G``, ``1.5GiB``, ``64k``, ``1000000`` (K/M/G/T are powers
    of 1024; a trailing ``B`` or ``iB`` is optional). Raises ``ValueError``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.I)
    if not m:
        raise ValueError(f"expected a memory size like 512M or 2G, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"expected a memory size > 0, got {text!r}")
    return value


def bytes_arg(text: str) -> int:
    """A ``--memory-budget`` value (see :func:`parse_bytes`)."""
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def target_arg(text: str):
    """A ``--target`` value: an integer column index, else a column name or a path."""
    try:
        return int(text)
    except ValueError:
        return text


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _float(text: str, lo: float, inclusive: bool, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < lo or (v == lo and not inclusive):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _float(text, 0.0, False, "a number > 0")


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    return _float(text, 0.0, True, "a number >= 0")


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    v = _float(text, 0.0, True, "a fraction in [0, 1)")
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return v


def finite_float(text: str) -> float:
    """Any finite number."""
    return _float(text, -math.inf, True, "a finite number")


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers, duplicates dropped, order kept."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got "
                                         f"{text!r}")
    return tuple(dict.fromkeys(positive_int(t) for t in items))


def modes(text: str) -> tuple[str, ...]:
    """A comma-separated subset of the modes (bgd, sgd, mbgd)."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [m for m in items if m not in MODES]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"modes are a comma-separated subset of "
                                         f"{','.join(MODES)}; got {text!r}")
    return tuple(dict.fromkeys(items))


def names(text: str) -> tuple[str, ...]:
    """Comma-separated names, duplicates dropped, order kept."""
    items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


def optimizer_spec(text: str) -> tuple[str, dict]:
    """An ``--optimizer`` value: a name (``sgd``, ``adam``, ``adamw``, ``rmsprop``,
    ``adagrad``), optionally called with ``torch.optim`` keyword settings written as Python
    literals, e.g. ``adam(betas=(0.9, 0.99), amsgrad=True)``. Returns ``(name, settings)``;
    nothing is evaluated but literals."""
    from ..optim import OPTIMIZERS

    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Call) and not node.args:
            name, settings = node.func, {k.arg: ast.literal_eval(k.value)
                                         for k in node.keywords}
        else:
            name, settings = node, {}
        if not isinstance(name, ast.Name) or None in settings:
            raise ValueError
    except (SyntaxError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"expected NAME or NAME(key=value, ...) with literal values, e.g. "
            f"'adam(betas=(0.9, 0.99))'; got {text!r}") from None
    if name.id.lower() not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"unknown optimizer {name.id!r}; use one of "
                                         f"{', '.join(OPTIMIZERS)}")
    return name.id.lower(), settings


def float_list(text: str) -> tuple[float, ...]:
    """Comma-separated non-negative numbers, duplicates dropped, order kept."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return tuple(dict.fromkeys(nonnegative_float(t) for t in items))
