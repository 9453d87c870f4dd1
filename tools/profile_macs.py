#!/usr/bin/env python
"""``python tools/profile_macs.py [options]`` == ``sparse-lc profile [options]`` (not ``profile.py``:
that name would hide the standard library's ``profile`` module from every script in tools/)."""
import sys

from sparse_lc.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("profile", __file__))
