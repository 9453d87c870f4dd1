"""Walk a dataset and report every problem with its file: ``sparse-lc check-data CONFIG``, and
the check every training, evaluation and calibration run makes before its first step.

:func:`check_dataset` reads every pair (on threads: label files in parallel, images decoded
one at a time, as the decoders' stderr is captured for the whole process) and reports missing
pairs, unreadable files, size mismatches and label values outside ``[0, K)`` and 255.
:func:`require_valid_data` runs it before work starts and raises one :class:`DataError`
listing every problem. A pair found valid is remembered by its files' sizes and modification
times (:class:`CheckCache`), so the next run checks only what changed.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..checkpoint import atomic_write
from .dataset import SegDataset
from .folder import FolderDataset
from .io import DataError, read_image
from .transforms import IGNORE_INDEX


@dataclass
class DataProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class CheckCache:
    """Pairs of files found valid, by path, with the size and modification time of both files
    and the class count they were checked against; kept as JSON at ``path``."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.entries: Dict[str, list] = json.load(f)
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def _stamp(pair: Sequence[str], num_classes: int) -> Optional[list]:
        try:
            stats = [os.stat(p) for p in pair]
        except OSError:
            return None
        return [num_classes] + [v for st in stats for v in (st.st_size, st.st_mtime_ns)]

    def valid(self, pair: Sequence[str], num_classes: int) -> bool:
        stamp = self._stamp(pair, num_classes)
        return stamp is not None and self.entries.get("|".join(pair)) == stamp

    def remember(self, pair: Sequence[str], num_classes: int) -> None:
        stamp = self._stamp(pair, num_classes)
        if stamp is not None:
            self.entries["|".join(pair)] = stamp

    def save(self) -> None:
        text = json.dumps(self.entries)
        try:
            atomic_write(self.path, lambda f: f.write(text.encode()))
        except OSError:  # a cache that cannot be written only costs time
            pass


def default_cache_path() -> str:
    """``$XDG_CACHE_HOME/sparse_lc/data_check.json`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sparse_lc", "data_check.json")


def check_dataset(dataset: SegDataset, num_classes: int, progress: bool = True,
                  cache: Optional[CheckCache] = None, workers: Optional[int] = None) -> List[DataProblem]:
    """Missing pairs, unreadable files, image/label size mismatches and label values outside
    ``[0, num_classes)`` and the ignore value 255, in the order of the sample list. Pairs in
    ``cache`` (unchanged since they were found valid) are not read again; valid pairs are added."""
    problems: List[DataProblem] = []
    if isinstance(dataset, FolderDataset):
        problems += _labels_without_image(dataset)
    todo = [i for i in range(len(dataset))
            if not (cache and dataset.samples and cache.valid(dataset.samples[i], num_classes))]
    bar = tqdm(total=len(todo), desc="check data", unit="img", disable=not progress or not todo)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for index, found in zip(todo, pool.map(lambda i: _check_sample(dataset, i, num_classes), todo)):
            bar.update(1)
            problems += found
            if cache is not None and not found and dataset.samples:
                cache.remember(dataset.samples[index], num_classes)
    bar.close()
    return problems


def require_valid_data(datasets: Sequence[SegDataset], num_classes: int, progress: bool = True,
                       cache_path: Optional[str] = None) -> None:
    """Check every file of ``datasets`` before any work (generated datasets need none); raise one
    DataError listing every problem. Results are cached (:func:`default_cache_path`)."""
    with_files = [d for d in datasets if d is not None and d.samples]
    if not with_files:
        return
    cache = CheckCache(cache_path or default_cache_path())
    problems = [p for d in with_files for p in check_dataset(d, num_classes, progress, cache)]
    cache.save()
    if problems:
        files = len({p.path for p in problems})
        raise DataError(f"the data check found {len(problems)} problem(s) in {files} file(s); nothing was "
                        f"started (fix them, or pass --skip-data-check)", details=[str(p) for p in problems])


def _check_sample(dataset: SegDataset, index: int, num_classes: int) -> List[DataProblem]:
    problems: List[DataProblem] = []
    if not dataset.samples:  # generated data: no files, check the arrays
        label_path = dataset.name(index)
        image, label = dataset.load(index)
    else:
        image_path, label_path = dataset.samples[index]
        missing = [p for p in (image_path, label_path) if not os.path.isfile(p)]
        if len(missing) == 2:
            return [DataProblem(p, "missing (both halves of the pair)") for p in missing]
        if missing:
            other = label_path if missing[0] == image_path else image_path
            return [DataProblem(missing[0], f"missing (the other half of the pair is {other})")]
        image = _try(read_image, image_path, problems)
        label = _try(lambda _: dataset.load_label(index), label_path, problems)
        if image is None or label is None:
            return problems
    if image.shape[:2] != label.shape:
        problems.append(DataProblem(label_path, f"size {label.shape[1]}x{label.shape[0]} differs from "
                                                f"its image's {image.shape[1]}x{image.shape[0]}"))
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        problems.append(DataProblem(label_path, f"label values {bad.tolist()} outside "
                                                f"[0, {num_classes}) and {IGNORE_INDEX}"))
    return problems


def _try(read, path: str, problems: List[DataProblem]):
    """``read(path)``, or None with the problem recorded."""
    try:
        return read(path)
    except DataError as e:
        problems.append(DataProblem(path, str(e).split(": ", 1)[-1]))
        return None


def _labels_without_image(dataset: FolderDataset) -> List[DataProblem]:
    label_dir = dataset.label_dir
    paired = {os.path.basename(label) for _, label in dataset.samples}
    if not os.path.isdir(label_dir):
        return [DataProblem(label_dir, "label folder missing")]
    return [DataProblem(os.path.join(label_dir, f), "label without an image")
            for f in sorted(os.listdir(label_dir)) if f.endswith(".png") and f not in paired]
