"""`python -m flotilla.nodes.cli`: the `flotilla` command."""

import sys

from flotilla.nodes.cli import main

if __name__ == "__main__":  # imported (as tests that walk every module do), it runs nothing
    sys.exit(main())
