"""``python -m lastlayer ...``: the same command line as the ``lastlayer`` script."""

import sys

from .models.cli import main

sys.exit(main())
