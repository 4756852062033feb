"""`python -m facemark` (and `torchrun -m facemark train ...`) runs the CLI."""

from facemark.cli import main

raise SystemExit(main())
