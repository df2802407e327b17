"""``python -m aita`` is the ``aita`` command."""

import sys

from aita.cli import main

sys.exit(main())
