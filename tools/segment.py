#!/usr/bin/env python
"""``python tools/segment.py [options]`` == ``sparse-lc segment [options]``."""
import sys

from sparse_lc.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
