"""``python -m ktos``: the same as the ``ktos`` console script."""

from .cli import main

raise SystemExit(main())
