"""What the command line runs: each function takes a config or a model, never parses arguments."""
from .demo import DemoRow, confidence_quantiles, run_demo
from .evaluation import EvalResult, evaluate
from .macs import DenseMacs, count_macs
from .plots import plot_rho_sweep, save_eval_report
from .training import TrainingDiverged, TrainSummary, train

__all__ = ["DemoRow", "DenseMacs", "EvalResult", "TrainSummary", "TrainingDiverged", "confidence_quantiles",
           "count_macs", "evaluate", "plot_rho_sweep", "run_demo", "save_eval_report", "train"]
