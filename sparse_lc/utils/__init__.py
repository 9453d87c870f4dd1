"""Small helpers with no dependency on the rest of sparse_lc: timing sections, model modes,
image normalisation."""
from .images import prepare_images
from .modes import eval_mode
from .timing import SectionTimer, section

__all__ = ["SectionTimer", "eval_mode", "prepare_images", "section"]
