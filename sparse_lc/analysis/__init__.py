"""Analysis: MACs (per run, dense, per layer and stage), speed against the dense run, synthetic hard masks."""
from .macs import DenseMacs, LayerProfile, ProfileReport, StageProfile, count_macs, layer_stages, profile_macs
from .mask_patterns import PATTERNS, nested_masks
from .speed import BenchReport, StageTime, bench, peak_memory, peak_rss

__all__ = ["PATTERNS", "BenchReport", "DenseMacs", "LayerProfile", "ProfileReport", "StageProfile", "StageTime",
           "bench", "count_macs", "layer_stages", "nested_masks", "peak_memory", "peak_rss",
           "profile_macs"]
