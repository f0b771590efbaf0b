"""`python -m bot` is the same as the `dialobot` console script."""

from bot.cli import main

raise SystemExit(main())
