"""``python -m kit.demo``: the whole demo shop in one command (see run.py)."""

import sys

from .run import main

sys.exit(main())
