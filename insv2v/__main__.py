"""`python -m insv2v ...`: the same as the `insv2v` command."""

import sys

from insv2v.cli import main

sys.exit(main())
