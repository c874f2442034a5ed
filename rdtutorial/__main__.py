"""``python -m rdtutorial``: the command line (see :mod:`rdtutorial.cli`)."""

import sys

from .cli import main

sys.exit(main())
