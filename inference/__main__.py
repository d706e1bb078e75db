"""`python -m inference` runs the offline CLI."""

import sys

from inference.cli import main

sys.exit(main())
