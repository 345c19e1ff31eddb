"""``python -m fgn_arrays``: the ``fgn-arrays`` command line (see :mod:`fgn_arrays.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
