"""Run the test server as a process: ``python -m testservers.inference --help``."""

import sys

from testservers.inference.cli import main

sys.exit(main())
