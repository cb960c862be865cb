"""The entry point: parse the arguments, run the command, turn errors into exit statuses."""

from __future__ import annotations

import sys
import warnings

from .cmd_backends import cmd_backends
from .cmd_batch_size import cmd_batch_size
from .cmd_compare import cmd_compare
from .cmd_fit import cmd_fit
from .cmd_sweep import cmd_sweep
from .interrupt import Interrupt, StudyInterrupted
from .parsing import build_parser

HANDLERS = {"compare": cmd_compare, "sweep": cmd_sweep, "fit": cmd_fit,
            "backends": cmd_backends, "batch-size": cmd_batch_size}
STUDIES = ("compare", "sweep", "batch-size")  # Ctrl-C stops these at once, not after the epoch


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text += f": {exc.filename}"
    return text


def main(argv=None) -> int:
    """Entry point of the ``fastgd`` console script and ``python -m fastgd``; returns the
    exit status (0 ok, 1 diverged or out of memory, 2 usage or input error, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["compare", *argv]
    with Interrupt() as interrupt, warnings.catch_warnings():
        # a Ctrl-C is reported once, here, not as the training loop's RuntimeWarning
        warnings.filterwarnings("ignore", message="training interrupted",
                                category=RuntimeWarning)
        try:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version, usage errors (already printed)
                return int(exc.code or 0) if not isinstance(exc.code, str) else 2
            args.argv = argv
            interrupt.hard = args.command in STUDIES
            return HANDLERS[args.command](args, interrupt)
        except (KeyboardInterrupt, StudyInterrupted):
            newline = "\n" if sys.stderr.isatty() else ""
            print(f"{newline}fastgd: interrupted", file=sys.stderr)
            return 130
        except MemoryError as exc:
            print(f"fastgd: error: out of memory: {_one_line(exc)}", file=sys.stderr)
            return 1
        except (ValueError, TypeError, OSError, ImportError) as exc:
            print(f"fastgd: error: {_one_line(exc)}", file=sys.stderr)
            return 2
