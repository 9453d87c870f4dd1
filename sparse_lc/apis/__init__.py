"""What a user calls: a ready model (bundled, from a config, a checkpoint, or both) and
segmentation of image files."""
from .files import SegmentRecord, collect_inputs
from .inference import DISPATCH_PIXELS, auto_batch, segment_array, segment_files, segment_same_size
from .loading import BUNDLED_CHECKPOINT, SAMPLES_DIR, CalibrationWarning, class_names_and_palette, load_model
from .sliding_window import TiledResult, Tiling, segment_tiled

__all__ = ["BUNDLED_CHECKPOINT", "DISPATCH_PIXELS", "SAMPLES_DIR", "CalibrationWarning", "SegmentRecord",
           "TiledResult", "Tiling", "auto_batch", "class_names_and_palette", "collect_inputs", "load_model",
           "segment_array", "segment_files", "segment_same_size", "segment_tiled"]
