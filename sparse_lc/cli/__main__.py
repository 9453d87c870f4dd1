"""``python -m sparse_lc.cli`` == ``sparse-lc``."""
import sys

from .main import main

sys.exit(main())
