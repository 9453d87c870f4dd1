"""Evaluation: metrics from a confusion matrix, temperature fitting, threshold search, operating points."""
from .eval_loop import EvalCounts, EvalResult, evaluate
from .metrics import boundary_mask, confusion_matrix, metrics_from_confusion
from .operating_point import (
    CalibrationReport,
    OperatingPoint,
    apply_operating_point,
    calibrate,
    find_operating_point,
    operating_point_path,
    read_operating_point,
    save_operating_point,
)
from .temperature import Reliability, fit_temperature, fit_temperatures, reliability_of
from .thresholds import DEFAULT_GRID, ThresholdPoint, choose_thresholds, explore_thresholds, pareto_front

__all__ = ["DEFAULT_GRID", "CalibrationReport", "EvalCounts", "EvalResult", "OperatingPoint", "Reliability",
           "ThresholdPoint", "apply_operating_point", "boundary_mask", "calibrate", "choose_thresholds",
           "confusion_matrix", "evaluate", "explore_thresholds", "find_operating_point", "fit_temperature",
           "fit_temperatures", "metrics_from_confusion", "operating_point_path", "pareto_front",
           "read_operating_point", "reliability_of", "save_operating_point"]
