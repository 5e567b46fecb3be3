"""`python -m controller`: the same as `rigsite`."""

import sys

from controller.cli import main

sys.exit(main())
