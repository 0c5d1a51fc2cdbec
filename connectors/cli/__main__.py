"""`python -m bytewax.speechmatics.connectors.cli`: the same as the `bytewax-speechmatics` command."""

import sys

from bytewax.speechmatics.connectors.cli import main

sys.exit(main())
