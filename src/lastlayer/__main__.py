"""``python -m lastlayer ...``: the same command line as the ``lastlayer`` script."""

import sys

from .models.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports the main module
    sys.exit(main())
