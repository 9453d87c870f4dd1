"""Kernel-level benchmarks: one submanifold sparse conv (spconv, through sparse_lc) against the
dense conv on the full map, over channels, dilations, active shares and mask patterns.

Run ``python -m kernels_bench --help``. Everything it times is imported from ``sparse_lc``.
"""
