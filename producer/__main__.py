"""``python -m producer submit|tail|collect|status`` (the same as ``batch-runner ...``)."""

import sys

from producer.cli import main

if __name__ == "__main__":
    sys.exit(main())
