"""What the command line runs: each function takes a config or a model, never parses arguments."""
from .bench import BenchReport, bench
from .calibrate import CalibrationReport, calibrate
from .evaluation import EvalResult, evaluate
from .macs import DenseMacs, count_macs
from .plots import plot_rho_sweep, save_calibration_report, save_eval_report
from .profile import ProfileReport, profile_macs
from .segment import SegmentRecord, segment_files
from .training import TrainingDiverged, TrainSummary, train

__all__ = ["BenchReport", "CalibrationReport", "DenseMacs", "bench", "calibrate", "save_calibration_report", "EvalResult", "ProfileReport", "SegmentRecord", "TrainSummary", "TrainingDiverged",
           "count_macs", "evaluate", "plot_rho_sweep", "profile_macs", "save_eval_report", "segment_files",
           "train"]
