"""Result files of an evaluation or a calibration: the JSON numbers and the plots beside them."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import List, Optional, Sequence

import torch

from ..checkpoint import atomic_write
from ..evaluation import CalibrationReport, EvalResult, Reliability
from ..rho import Rho, format_rho, rho_pair
from .plots import plot_pareto, plot_reliability, plot_rho_sweep


def save_reliability_diagrams(result: EvalResult, folder: str, prefix: str = "reliability") -> List[str]:
    """``{prefix}_s{k}.png`` for each stage of ``result``; returns the paths written."""
    paths = []
    for k in range(3):
        before, after = (Reliability(data=torch.tensor(result.reliability[c][k], dtype=torch.float64))
                         for c in ("uncalibrated", "calibrated"))
        if before.ece() is None:
            continue
        paths.append(os.path.join(folder, f"{prefix}_s{k + 1}.png"))
        plot_reliability(before, after, paths[-1], f"stage {k + 1} at rho {format_rho(result.rho)}",
                         result.temperatures[k])
    return paths


def save_eval_report(results: Sequence[EvalResult], folder: str, title: str = "",
                     reliability_rho: Optional[Rho] = None) -> List[str]:
    """Write ``eval.json`` (one object per rho), for several rho ``rho_sweep.png``, and the
    reliability diagrams of each stage at one rho (:func:`reliability_result`) into
    ``folder``; returns the paths. ``eval.json`` is written last and atomically: when it is
    there, the pictures are too."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, "eval.json")]
    if len(results) > 1:
        paths.append(os.path.join(folder, "rho_sweep.png"))
        plot_rho_sweep(results, paths[1], title)
    paths += save_reliability_diagrams(reliability_result(results, reliability_rho), folder)
    _write_json(paths[0], [r.to_json() for r in results])
    return paths


def reliability_result(results: Sequence[EvalResult], rho: Optional[Rho] = None) -> EvalResult:
    """The result whose reliability diagrams are drawn: the one at ``rho`` (the model's own
    threshold) if it was evaluated, else the first at which every stage classified pixels
    (rho = 0 leaves stages 2 and 3 none), else the first."""
    for r in results:
        if rho is not None and rho_pair(r.rho) == rho_pair(rho):
            return r
    every_stage = [r for r in results if all(n > 0 for n in _classified(r))]
    return (every_stage or list(results))[0]


def _classified(result: EvalResult) -> List[float]:
    """Pixels each stage classified (the reliability bins' counts)."""
    return [sum(row[0] for row in stage) for stage in result.reliability["uncalibrated"]]


def save_calibration_report(report: CalibrationReport, folder: str, title: str = "") -> List[str]:
    """Write ``thresholds.json`` (every explored pair, the front, the choice), ``pareto.png`` and
    ``reliability_s{k}.png`` (calibration pixels, before and after) into ``folder``; the JSON
    last and atomically."""
    os.makedirs(folder, exist_ok=True)
    point = report.operating_point
    paths = [os.path.join(folder, name) for name in ("thresholds.json", "pareto.png")]
    plot_pareto(report.points, report.front, report.chosen, point.reference_miou, point.criterion,
                paths[1], f"{title}: {point.criterion}" if title else "")
    for k, (before, after) in enumerate(zip(report.reliability_before, report.reliability_after)):
        if before.ece() is not None:
            paths.append(os.path.join(folder, f"reliability_s{k + 1}.png"))
            plot_reliability(before, after, paths[-1], f"stage {k + 1}, {point.split} split",
                             point.temperatures[k])
    _write_json(paths[0], {"operating_point": asdict(point), "chosen": report.chosen.to_json(),
                           "front": [p.to_json() for p in report.front],
                           "points": [p.to_json() for p in report.points]})
    return paths


def _write_json(path: str, data) -> None:
    text = json.dumps(data, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))
