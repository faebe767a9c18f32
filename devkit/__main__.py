"""``python -m devkit``: the same as ``handoff-dev``."""

import sys

from devkit.cli import main

sys.exit(main())
