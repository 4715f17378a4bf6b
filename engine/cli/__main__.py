"""`python -m engine.cli`: the `triggers` command."""

from engine.cli import main

raise SystemExit(main())
