#!/usr/bin/env python
"""``python tools/test.py CONFIG CKPT [options]`` == ``sparse-lc eval CONFIG CKPT [options]``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N tools/test.py CONFIG CKPT``.
"""
import sys

from sparse_lc.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("eval", __file__))
