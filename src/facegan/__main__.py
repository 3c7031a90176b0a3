"""`python -m facegan`, as the `facegan` script (and what `torchrun -m facegan` starts on each rank)."""

import sys

from facegan.cli import main

if __name__ == "__main__":
    sys.exit(main())
