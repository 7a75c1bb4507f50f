"""Run the test server as a process: ``python -m tools.testservers.inference --help``."""

import sys

from tools.testservers.inference.cli import main

sys.exit(main())
