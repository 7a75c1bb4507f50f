"""``python -m cli``: the ``batch-runner`` command from a checkout."""

import sys

from cli.main import main

sys.exit(main())
