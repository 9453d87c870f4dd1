"""Feature containers: a dense map (optionally masked) and spconv sparse rows, same interface."""
from . import mac_counter
from .dense import DenseFeatures
from .features import Features, batch_norm_rows, check_submanifold_conv, concat, run_sequential
from .mac_counter import MacCounter, MacRecord
from .sparse import ActiveSet, SparseFeatures, debug_checks, pair_counts, rulebook_key, set_debug_checks, spconv_algo

__all__ = ["ActiveSet", "DenseFeatures", "mac_counter", "Features", "MacCounter", "MacRecord", "SparseFeatures",
           "batch_norm_rows", "check_submanifold_conv", "concat", "debug_checks", "pair_counts", "rulebook_key",
           "run_sequential", "set_debug_checks", "spconv_algo"]
