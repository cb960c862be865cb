"""``fastgd compare`` (alias ``demo``): backends x modes x batch sizes."""

from __future__ import annotations

from .runner import run_studies


def cmd_compare(args, interrupted=lambda: False) -> int:
    """``fastgd compare``: the built-in study or one study of ``--model``/``--data``."""
    return run_studies(args, "compare", interrupted)
