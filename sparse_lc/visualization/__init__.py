"""Pictures (label overlays, stage maps), plots (rho sweeps, reliability, Pareto fronts), result
files and plain-text tables."""
from .pictures import STAGE_COLOURS_BGR, colorize, draw_stage_map, overlay
from .plots import plot_pareto, plot_reliability, plot_rho_sweep
from .reports import save_calibration_report, save_eval_report, save_reliability_diagrams
from .tables import bench_table, calibration_table, eval_table, profile_table, segment_table

__all__ = ["STAGE_COLOURS_BGR", "bench_table", "calibration_table", "colorize", "draw_stage_map", "eval_table",
           "overlay", "plot_pareto", "plot_reliability", "plot_rho_sweep", "profile_table", "save_calibration_report",
           "save_eval_report", "save_reliability_diagrams", "segment_table"]
