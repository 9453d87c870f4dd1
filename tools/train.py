#!/usr/bin/env python
"""``python tools/train.py CONFIG [options]`` == ``sparse-lc train CONFIG [options]``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N tools/train.py CONFIG``.
"""
import sys

from sparse_lc.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
