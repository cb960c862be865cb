"""The ``fastgd`` command: measure gradient descent from the shell.

Commands (``fastgd`` alone runs ``compare``):

- ``compare``: backends x modes x batch sizes on one data set, or with no ``--model`` /
  ``--data`` the built-in study (a linear regression and an MLP on digits); prints Markdown
  tables and writes ``<study>.md/.json/.csv/.png`` into an output folder. ``demo`` is an
  alias, kept for old instructions.
- ``sweep``: MBGD at batch sizes 1, 2, 4, ... on one backend, up to ``--max-batch`` or what
  ``--memory-budget`` allows.
- ``fit``: one training run, one line per epoch and a summary (or ``--json``).
- ``backends``: every backend, available or why not.

User mistakes (bad options, data specs, files) print one ``fastgd: error: ...`` line and
exit with status 2; a diverged ``fit`` exits 1; Ctrl-C exits 130.

Modules: :mod:`.dispatch` (``main``), :mod:`.parsing` (the argument parser),
:mod:`.argtypes` (option values), :mod:`.modelspec` (``--model``), :mod:`.training` (data,
validation split, optimizer options), :mod:`.studies` and :mod:`.runner` (``compare`` and
``sweep``), :mod:`.progress` (the tqdm bar), :mod:`.interrupt` (Ctrl-C), :mod:`.reports`
(files and stdout), :mod:`.backend_choice`, and one ``cmd_*`` module per command.
"""

from .argtypes import parse_bytes
from .cmd_backends import cmd_backends
from .cmd_compare import cmd_compare
from .cmd_fit import cmd_fit
from .cmd_sweep import cmd_sweep
from .dispatch import main
from .interrupt import StudyInterrupted
from .modelspec import ModelSpec, build_model, parse_model
from .parsing import build_parser
from .progress import ProgressBar
from .studies import BUILTIN, Study
from .training import load_data

__all__ = [
    "BUILTIN", "ModelSpec", "ProgressBar", "Study", "StudyInterrupted", "build_model",
    "build_parser", "cmd_backends", "cmd_compare", "cmd_fit", "cmd_sweep", "load_data",
    "main", "parse_bytes", "parse_model",
]
