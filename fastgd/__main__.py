"""``python -m fastgd``: the command line."""

from .cli import main

raise SystemExit(main())
