"""`python -m svl ...` is the same as the `svl` script."""

import sys

from svl.cli import main

if __name__ == "__main__":
    sys.exit(main())
