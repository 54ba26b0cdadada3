"""``python -m specdec_fast``: the ``specdec-fast`` command."""
import sys

from specdec_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
