"""``python -m meddx``: see `meddx.cli`."""

import sys

from meddx.cli import main

sys.exit(main())
