"""``python -m mlp`` runs the command line (see :mod:`mlp.cli`)."""

import sys

from .cli import main

sys.exit(main())
