"""``python -m tools.cli``: the ``batch-runner`` command from a checkout."""

import sys

from tools.cli.main import main

sys.exit(main())
