"""``python -m sparse_lc.cli`` == ``sparse-lc``."""
import sys

from .entry import main

sys.exit(main())
