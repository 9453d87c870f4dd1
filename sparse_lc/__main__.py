"""``python -m sparse_lc`` == ``sparse-lc``."""
import sys

from .cli import main

sys.exit(main())
