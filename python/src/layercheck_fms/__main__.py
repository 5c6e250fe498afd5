"""`python -m layercheck_fms`: see cli.py."""

import sys

from .cli import main

sys.exit(main())
