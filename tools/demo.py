#!/usr/bin/env python
"""``python tools/demo.py [options]`` == ``sparse-lc demo [options]``."""
import sys

from sparse_lc.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
