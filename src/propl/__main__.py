"""``python -m propl`` = the ``propl`` command (how the plugin starts training subprocesses)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
