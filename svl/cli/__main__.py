"""`python -m svl.cli ...` is the same as the `svl` script."""

import sys

from svl.cli import main

sys.exit(main())
