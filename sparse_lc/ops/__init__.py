"""Feature containers: a dense map (optionally masked) and spconv sparse rows, same interface."""
from . import mac_counter
from .active_set import ActiveSet, debug_checks, set_debug_checks
from .dense import DenseFeatures
from .features import (
    ACTIVATIONS,
    Features,
    batch_norm_rows,
    check_submanifold_conv,
    concat,
    norm_kind,
    register_activation,
    run_sequential,
)
from .mac_counter import MacCounter, MacRecord
from .probe import DOCS, ProbeFeatures, Step, check_steps
from .sparse import SparseFeatures, pair_counts
from .spconv_backend import rulebook_key, spconv_algo

__all__ = ["ACTIVATIONS", "ActiveSet", "DOCS", "DenseFeatures", "mac_counter", "Features", "MacCounter", "MacRecord",
           "ProbeFeatures", "SparseFeatures", "Step", "batch_norm_rows", "check_steps", "check_submanifold_conv",
           "concat", "debug_checks", "norm_kind", "pair_counts", "register_activation", "rulebook_key",
           "run_sequential", "set_debug_checks", "spconv_algo"]
