"""``fastgd backends``: every backend, available or why not."""

from __future__ import annotations


def cmd_backends(args, interrupted=lambda: False) -> int:
    """``fastgd backends``: each backend, ``available`` or the reason it is not."""
    from .. import backends

    for name, reason in backends.describe().items():
        print(f"{name:12} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0
