#!/usr/bin/env python
"""``python tools/segment.py INPUT ... [options]`` == ``sparse-lc segment INPUT ... [options]``."""
import sys

from sparse_lc.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("segment", __file__))
