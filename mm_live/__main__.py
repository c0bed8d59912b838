"""``python -m mm_live`` is the ``mm-live`` command."""

import sys

from mm_live.cli import main

sys.exit(main())
