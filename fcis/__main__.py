"""``python -m fcis ...``: the ``fcis`` command."""

import sys

from fcis.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
