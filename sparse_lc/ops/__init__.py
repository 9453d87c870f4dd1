"""Feature containers: a dense map (optionally masked) and spconv sparse rows, same interface."""
from . import mac_counter
from .dense import DenseFeatures
from .features import Features, batch_norm_rows, check_submanifold_conv, concat, run_sequential
from .mac_counter import MacCounter, MacRecord
from .sparse import SparseFeatures, pair_counts, rulebook_key, spconv_algo

__all__ = ["DenseFeatures", "mac_counter", "Features", "MacCounter", "MacRecord", "SparseFeatures", "batch_norm_rows",
           "check_submanifold_conv", "concat", "pair_counts", "rulebook_key", "run_sequential", "spconv_algo"]
