"""Run the test server as a process: ``python -m tools.testserver --help``."""

import sys

from tools.testserver.cli import main

sys.exit(main())
