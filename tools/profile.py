#!/usr/bin/env python
"""``python tools/profile.py [options]`` == ``sparse-lc profile [options]``."""
import sys

from sparse_lc.cli import main

if __name__ == "__main__":
    sys.exit(main(["profile", *sys.argv[1:]]))
