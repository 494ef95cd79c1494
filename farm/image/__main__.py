"""``python -m farm.image build``."""

import sys

from farm.image.cli import main

sys.exit(main())
