"""``python -m pgxjob``: the same command line as the ``pgxjob`` console script."""

from __future__ import annotations

import sys

from pgxjob.cli import main

if __name__ == "__main__":
    sys.exit(main())
