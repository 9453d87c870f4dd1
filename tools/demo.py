#!/usr/bin/env python
"""``python tools/demo.py [options]`` == ``sparse-lc demo [options]``."""
import sys

from sparse_lc.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("demo", __file__))
