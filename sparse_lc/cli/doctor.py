"""``sparse-lc doctor``: check an install (versions, devices, spconv, sparse == dense, speed)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import platform
import sys
import time
from importlib import metadata
from typing import List, Optional, Tuple

SUMMARY = "check the install: versions, devices, spconv, sparse == dense, speed"
DESCRIPTION = ("The command to run when an install misbehaves (spconv builds are per CUDA version; a mismatch is "
               "spconv's most common problem). Prints the versions of Python, torch, spconv and cumm, whether CUDA "
               "is available, the spconv algorithm chosen per device, then on each device a sparse-vs-dense check "
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
    _warn_cuda_mismatch(torch.version.cuda)
    if spconv_ok:
        for device in devices:
            _check_device(torch.device(device), args.seconds, failures)
    return _verdict(failures)


def _versions() -> List[Tuple[str, str]]:
    from .. import __version__

    rows = [("sparse-lc", __version__), ("python", f"{platform.python_version()} ({sys.executable})")]
    for name in ("torch", _spconv_distribution() or "spconv", "cumm-cu120", "numpy", "opencv-python"):
        rows.append((name, _distribution_version(name)))
    return rows


@functools.lru_cache(maxsize=None)
def _spconv_distribution() -> Optional[str]:
    """The installed spconv package (``spconv-cu120``, ``spconv`` for the CPU-only build, ...)."""
    names = sorted({d.metadata["Name"] for d in metadata.distributions()
                    if (d.metadata["Name"] or "").lower().startswith("spconv")})
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
        print(f"{'spconv':<12} does not load ({type(e).__name__}: {e}); install the spconv-cuXXX package that "
              f"matches your CUDA (spconv-cu120 also runs on the CPU)")
        return False
    print(f"{'algorithm':<12} spconv {algos['cpu']} on cpu (the only one that runs there), "
          f"{algos['cuda']} on cuda")
    return True


def _warn_cuda_mismatch(torch_cuda: Optional[str]) -> None:
    """A note when spconv was built for another major CUDA version than torch."""
    package = _spconv_distribution() or ""
    if torch_cuda is None or "-cu" not in package:
        return
    spconv_major = package.split("-cu")[1][:2]
    if spconv_major != torch_cuda.split(".")[0]:
        print(f"{'note':<12} {package} is built for CUDA {spconv_major}.x, torch for CUDA {torch_cuda}: "
              f"install the spconv-cuXXX that matches torch")


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
