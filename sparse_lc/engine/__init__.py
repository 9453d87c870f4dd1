"""What the command line runs: each function takes a model and data, never parses arguments."""
from .demo import DemoRow, confidence_quantiles, run_demo

__all__ = ["DemoRow", "confidence_quantiles", "run_demo"]
