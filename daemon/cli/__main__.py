"""`python -m daemon.cli`: the `stylefold` command of this checkout."""

import sys

from daemon.cli import main

sys.exit(main())
