#!/usr/bin/env python
"""``python tools/train.py CONFIG [options]`` == ``sparse-lc train CONFIG [options]``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N tools/train.py CONFIG``.
"""
import sys

from sparse_lc.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("train", __file__))
