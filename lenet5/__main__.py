"""``python -m lenet5``: see ``lenet5.cli``."""

import sys

from lenet5.cli import main

if __name__ == "__main__":
    sys.exit(main())
