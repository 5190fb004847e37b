"""`python -m flotilla.nodes.cli`: the `flotilla` command."""

import sys

from flotilla.nodes.cli import main

sys.exit(main())
