"""``python -m medvision.cli`` is the ``medvision`` command (tests start the node so)."""

import sys

from medvision.cli import main

sys.exit(main())
