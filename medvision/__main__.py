"""``python -m medvision`` is the ``medvision`` command."""

import sys

from medvision.cli import main

sys.exit(main())
