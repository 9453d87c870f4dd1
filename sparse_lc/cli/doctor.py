"""``sparse-lc doctor``: check an install (versions, devices, spconv, sparse == dense, speed)."""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from typing import List, Optional, Tuple

SUMMARY = "check the install: versions, devices, spconv, sparse == dense, speed"
DESCRIPTION = ("The command to run when an install misbehaves (spconv builds are per CUDA version). Prints the "
               "versions of Python and torch and of every installed spconv, cumm and OpenCV build, whether CUDA is "
               "available, the driver's CUDA version (a warning only where the spconv build needs a newer one), the "
               "spconv algorithm chosen per device, then on each device a sparse-vs-dense check "
               "of the bundled model (max logit difference) and a one-second speed check, and a verdict. The exit "
               "code is 1 if a check fails.")

TOLERANCE = 1e-3  # max |logit difference| between the sparse and the dense run that still passes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=1.0, help="length of the speed check per device")


def run(args: argparse.Namespace) -> int:
    failures: List[str] = []
    for name, version in _versions():
        print(f"{name:<12} {version}")
    torch = _import("torch", failures)
    spconv_ok = torch is not None and _check_spconv(failures)
    if torch is None:
        return _verdict(failures)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cuda = f"yes: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no"
    print(f"{'CUDA':<12} {cuda} (torch built for CUDA {torch.version.cuda or 'none: a CPU build'})")
    _report_cuda(torch.version.cuda)
    if spconv_ok:
        for device in devices:
            _check_device(torch.device(device), args.seconds, failures)
    return _verdict(failures)


# Distribution families, as pip names them (PEP 503 normalised): spconv and cumm have one
# build per CUDA version (spconv-cu120, cumm-cu126, ...; plain ``spconv`` is the CPU-only
# build), OpenCV four interchangeable ones. Each provides the same import name.
FAMILIES = {"spconv": r"spconv(-cu\d+)?", "cumm": r"cumm(-cu\d+)?",
            "opencv-python": r"opencv(-contrib)?-python(-headless)?"}

# What is known about spconv builds beside torch (the note doctor prints on a CUDA machine).
SPCONV_CUDA_NOTE = ("spconv-cu12x wheels run beside torch for CUDA 12.x or 13.x (measured: spconv-cu126 2.3.8, "
                    "torch 2.11+cu130, H200); the checks below test this pair")


def _versions() -> List[Tuple[str, str]]:
    """``(name, version)`` rows: sparse-lc, Python, torch, every installed spconv, cumm and
    OpenCV distribution (or ``not installed``), numpy."""
    from .. import __version__

    rows = [("sparse-lc", __version__), ("python", f"{platform.python_version()} ({sys.executable})"),
            ("torch", _distribution_version("torch"))]
    for family in ("spconv", "cumm"):
        rows += _installed(family) or [(family, "not installed")]
    rows.append(("numpy", _distribution_version("numpy")))
    rows += _installed("opencv-python") or [("opencv-python", "not installed")]
    return rows


def _installed(family: str) -> List[Tuple[str, str]]:
    """``(name, version)`` of every installed distribution of ``family`` (see :data:`FAMILIES`), sorted."""
    pattern = re.compile(FAMILIES[family])
    found = {}
    for dist in metadata.distributions():
        name = _normalised(dist.metadata["Name"] or "")
        if pattern.fullmatch(name):
            found[name] = dist.version
    return sorted(found.items())


def _normalised(name: str) -> str:
    """A distribution name as pip compares them: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _spconv_distribution() -> Optional[str]:
    """The installed spconv distribution (``spconv-cu120``, ``spconv`` for the CPU-only build,
    ...); the first by name if there are several."""
    names = [name for name, _ in _installed("spconv")]
    return names[0] if names else None


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _import(name: str, failures: List[str]):
    try:
        return __import__(name)
    except Exception as e:  # noqa: BLE001  (a broken install fails in many ways; each is a finding)
        failures.append(f"import {name}: {type(e).__name__}: {e}")
        print(f"{'':<12} cannot import {name}: {type(e).__name__}: {e}")
        return None


def _check_spconv(failures: List[str]) -> bool:
    """spconv imports, and its algorithm per device is the one sparse_lc chooses."""
    import torch

    from ..ops import spconv_algo

    try:
        algos = {d: spconv_algo(torch.device(d)).name for d in ("cpu", "cuda")}
    except Exception as e:  # noqa: BLE001
        failures.append(f"spconv does not load: {type(e).__name__}: {e}")
        print(f"{'spconv':<12} does not load ({type(e).__name__}: {e}); reinstall it: spconv-cu120 (Python "
              f"<= 3.11) or spconv-cu126 (3.12+), both run on the CPU too; another CUDA: docs/install.md")
        return False
    print(f"{'algorithm':<12} spconv {algos['cpu']} on cpu (the only one that runs there), "
          f"{algos['cuda']} on cuda")
    return True


def _report_cuda(torch_cuda: Optional[str]) -> None:
    """The driver's CUDA version, what is known about the spconv build beside torch, and a
    warning only where it cannot work: two spconv builds installed at once, or a build for a
    newer CUDA major than the driver supports (CUDA's minor version compatibility makes any
    driver of the same major enough)."""
    driver = _driver_cuda_version()
    print(f"{'driver':<12} " + (f"CUDA {driver[0]}.{driver[1]}" if driver else
                               "none found (no NVIDIA driver: a CPU machine, or libcuda not on the library path)"))
    builds = [name for name, _ in _installed("spconv")]
    if len(builds) > 1:
        print(f"{'warning':<12} {len(builds)} spconv builds installed ({', '.join(builds)}): they share one "
              f"spconv module; pip uninstall all but one")
    major = _cuda_major_of(builds[0]) if builds else None
    if major is None:
        return
    if driver and major > driver[0]:
        print(f"{'warning':<12} {builds[0]} needs a driver for CUDA {major}, this one supports CUDA "
              f"{driver[0]}.{driver[1]}: update the driver, or install the spconv-cuXXX of your driver's CUDA "
              f"(docs/install.md)")
    elif torch_cuda is not None and driver:
        print(f"{'note':<12} {builds[0]} (CUDA {major}.x) beside torch for CUDA {torch_cuda}: {SPCONV_CUDA_NOTE}")


def _cuda_major_of(build: str) -> Optional[int]:
    """``spconv-cu126`` -> 12, ``spconv-cu118`` -> 11, ``spconv-cu102`` -> 10; None for the
    CPU-only ``spconv``."""
    match = re.fullmatch(r"spconv-cu(\d+)", build)
    return None if match is None else int(match.group(1)[:-1])


def _driver_cuda_version() -> Optional[Tuple[int, int]]:
    """The CUDA version the NVIDIA driver supports, ``(12, 4)``, from ``cuDriverGetVersion``
    in libcuda (no CUDA runtime or CUDA build of torch needed), else from ``nvidia-smi``; None
    where there is no driver."""
    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", ctypes.util.find_library("cuda")):
        try:
            cuda = ctypes.CDLL(library) if library else None
        except OSError:
            continue
        version = ctypes.c_int(0)
        if cuda is not None and cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
            return version.value // 1000, version.value % 1000 // 10
    return _nvidia_smi_cuda_version()


def _nvidia_smi_cuda_version() -> Optional[Tuple[int, int]]:
    """``CUDA Version: 12.4`` from the header of ``nvidia-smi``; None without it."""
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _check_device(device, seconds: float, failures: List[str]) -> None:
    """Sparse == dense on a bundled sample with the bundled model, then a timed loop. On CUDA the
    check runs with TF32 off (spconv computes in full float32; cuDNN would use TF32 under torch's
    defaults), and the difference under torch's own settings is printed beside it, as information."""

    from ..apis import SAMPLES_DIR, load_model
    from ..data import read_photo
    from ..testing import sparse_dense_gap
    from ..utils import prepare_images
    from ..utils.precision import tf32_disabled, tf32_enabled

    try:
        model, _ = load_model()
        model.to(device)
        image = read_photo(f"{SAMPLES_DIR}/shapes_0.png")
        batch = prepare_images(image, model.pixel_mean, model.pixel_std, "bgr").to(device)
        with tf32_disabled() if device.type == "cuda" else contextlib.nullcontext():
            difference, same_stages = sparse_dense_gap(model, batch)
        default_gap = sparse_dense_gap(model, batch)[0] if device.type == "cuda" and tf32_enabled() else None
    except Exception as e:  # noqa: BLE001
        failures.append(f"{device.type}: the bundled model does not run: {type(e).__name__}: {e}")
        print(f"{'check ' + device.type:<12} the bundled model does not run: {type(e).__name__}: {e}")
        return
    ok = difference <= TOLERANCE and same_stages
    if not ok:
        failures.append(f"{device.type}: sparse and dense runs differ (max |logit difference| {difference:.1e})")
    scope = " (TF32 off)" if device.type == "cuda" else ""
    print(f"{'check ' + device.type:<12} sparse vs dense on shapes_0.png{scope}: max |logit difference| = "
          f"{difference:.1e}, stage maps {'equal' if same_stages else 'DIFFER'}: {'ok' if ok else 'FAILED'}")
    if default_gap is not None:
        print(f"{'':<12} with torch's defaults (cuDNN in TF32, spconv in float32): {default_gap:.1e}, "
              f"information only (docs/install.md, TF32)")
    rates = {e: _images_per_second(model, batch, e, seconds / 2) for e in ("sparse", "dense")}
    print(f"{'speed ' + device.type:<12} cascade {rates['sparse']:.1f} images/s, dense {rates['dense']:.1f} "
          f"images/s ({rates['sparse'] / rates['dense']:.2f}x) on a 256x192 image")


def _images_per_second(model, batch, execution: str, seconds: float) -> float:
    """Forward passes per second, back to back: the device is waited for once, at the end (and
    the clock read between passes is the host's, which runs ahead of the device)."""
    import torch

    cuda = batch.device.type == "cuda"
    with torch.no_grad():
        model(batch, execution=execution)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or count == 0:
            model(batch, execution=execution)
            count += 1
        if cuda:
            torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def _verdict(failures: List[str]) -> int:
    if failures:
        print(f"verdict: {len(failures)} check(s) FAILED: " + "; ".join(failures))
        return 1
    print("verdict: all checks passed")
    return 0
