"""Which backends a command runs on: names checked against the registry, the default."""

from __future__ import annotations


def check_backends(names) -> list[str]:
    """``names`` as a list, after checking that every one is a known backend (available or
    not); raises ``ValueError`` naming the first unknown one."""
    from .. import backends

    status = backends.describe()
    unknown = [b for b in names if b not in status]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; known: {', '.join(status)}")
    return list(names)


def default_backend() -> str:
    """numba-cpu when available, else the first available backend, else numpy."""
    from .. import backends

    avail = backends.available()
    return "numba-cpu" if "numba-cpu" in avail else (avail[0] if avail else "numpy")


def require_available(name: str | None) -> str:
    """``name`` (None: :func:`default_backend`), after checking that it is available; raises
    ``ValueError`` with the reason when it is not."""
    from .. import backends

    name = name or default_backend()
    check_backends([name])
    reason = backends.describe()[name]
    if reason is not None:
        raise ValueError(f"backend {name!r} is unavailable: {reason}")
    return name
