"""`python -m labkit`: the `labkit` command (labkit.cli) without its console script, e.g. in a notebook
kernel's env."""

import sys

from labkit.cli import main

sys.exit(main())
