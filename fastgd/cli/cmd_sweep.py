"""``fastgd sweep``: MBGD at batch sizes 1, 2, 4, ... on one backend."""

from __future__ import annotations

from .runner import run_studies


def cmd_sweep(args, interrupted=lambda: False) -> int:
    """``fastgd sweep``: the batch-size study on one backend."""
    return run_studies(args, "sweep", interrupted)
