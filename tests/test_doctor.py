"""``sparse-lc doctor`` on installs other than this machine's, with stub distributions and
drivers: every spconv / cumm / OpenCV build is named, the CUDA note says what is known, and it
warns only where a build cannot work."""
from __future__ import annotations

import subprocess
import types

import pytest

from sparse_lc.cli import doctor, main

# the GPU machine of issue 17: Python 3.12, torch 2.11+cu130, spconv-cu126, headless OpenCV
GPU_MACHINE = {"torch": "2.11.0+cu130", "spconv-cu126": "2.3.8", "cumm-cu126": "0.7.11", "numpy": "2.3.1",
               "opencv-python-headless": "4.12.0.88", "PyYAML": "6.0.2"}


def install(monkeypatch, distributions, driver=None):
    """Make doctor see ``distributions`` ({name: version}) and a driver for CUDA ``driver``."""
    dists = [types.SimpleNamespace(metadata={"Name": name}, version=version) for name, version in distributions.items()]

    def version(name):
        for dist in dists:
            if doctor._normalised(dist.metadata["Name"]) == doctor._normalised(name):
                return dist.version
        raise doctor.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(doctor, "metadata", types.SimpleNamespace(
        distributions=lambda: dists, version=version, PackageNotFoundError=doctor.metadata.PackageNotFoundError))
    monkeypatch.setattr(doctor, "_driver_cuda_version", lambda: driver)


def test_the_gpu_machines_builds_are_named(monkeypatch):
    install(monkeypatch, GPU_MACHINE)
    rows = dict(doctor._versions())
    assert rows["spconv-cu126"] == "2.3.8" and rows["cumm-cu126"] == "0.7.11"
    assert rows["opencv-python-headless"] == "4.12.0.88" and rows["torch"] == "2.11.0+cu130"
    assert "not installed" not in rows.values()
    assert "spconv-cu120" not in rows and "cumm-cu120" not in rows and "opencv-python" not in rows


@pytest.mark.parametrize("name", ["spconv", "spconv-cu118", "Spconv_Cu120", "spconv.cu126"])
def test_any_spconv_build_is_found(monkeypatch, name):
    install(monkeypatch, {name: "2.3.6", "spconvx": "1.0", "my-spconv-cu120": "1.0"})
    assert doctor._spconv_distribution() == doctor._normalised(name)
    assert [n for n, _ in doctor._versions() if "spconv" in n] == [doctor._normalised(name)]


@pytest.mark.parametrize("name", ["opencv-python", "opencv-python-headless", "opencv-contrib-python",
                                  "opencv_contrib_python_headless"])
def test_any_opencv_build_is_found(monkeypatch, name):
    install(monkeypatch, {name: "4.10.0.84", "opencv-python-rolling": "5.0"})
    assert [(n, v) for n, v in doctor._versions() if "opencv" in n] == [(doctor._normalised(name), "4.10.0.84")]


def test_missing_builds_say_not_installed(monkeypatch):
    install(monkeypatch, {"torch": "2.13.0+cpu"})
    rows = dict(doctor._versions())
    assert rows["spconv"] == rows["cumm"] == rows["opencv-python"] == rows["numpy"] == "not installed"


def cuda_report(monkeypatch, capsys, distributions, driver, torch_cuda):
    install(monkeypatch, distributions, driver)
    doctor._report_cuda(torch_cuda)
    return capsys.readouterr().out


def test_spconv_cu126_beside_torch_cu130_is_a_note_not_a_warning(monkeypatch, capsys):
    out = cuda_report(monkeypatch, capsys, GPU_MACHINE, (13, 0), "13.0")
    assert "driver       CUDA 13.0" in out
    assert "note         spconv-cu126 (CUDA 12.x) beside torch for CUDA 13.0: spconv-cu12x wheels run beside torch " \
           "for CUDA 12.x or 13.x (measured: spconv-cu126 2.3.8, torch 2.11+cu130, H200)" in out
    assert "warning" not in out and "install the spconv-cuXXX that matches torch" not in out


@pytest.mark.parametrize("driver", [(12, 0), (12, 8), (13, 1)])
def test_a_driver_of_the_same_or_a_newer_major_is_enough(monkeypatch, capsys, driver):
    out = cuda_report(monkeypatch, capsys, GPU_MACHINE, driver, "12.8")
    assert "warning" not in out and f"CUDA {driver[0]}.{driver[1]}" in out


def test_a_build_newer_than_the_driver_is_a_warning(monkeypatch, capsys):
    out = cuda_report(monkeypatch, capsys, {"spconv-cu120": "2.3.6", "torch": "2.4.0+cu118"}, (11, 8), "11.8")
    assert "warning      spconv-cu120 needs a driver for CUDA 12, this one supports CUDA 11.8: update the driver, " \
           "or install the spconv-cuXXX of your driver's CUDA (docs/install.md)" in out
    assert "note" not in out


def test_two_spconv_builds_are_a_warning(monkeypatch, capsys):
    out = cuda_report(monkeypatch, capsys, {"spconv-cu120": "2.3.6", "spconv-cu126": "2.3.8"}, None, None)
    assert "warning      2 spconv builds installed (spconv-cu120, spconv-cu126): they share one spconv module" in out


@pytest.mark.parametrize("torch_cuda", [None, "13.0"])  # a CPU build of torch, or a CUDA build without a GPU
def test_a_cpu_machine_says_it_has_no_driver(monkeypatch, capsys, torch_cuda):
    out = cuda_report(monkeypatch, capsys, {"spconv-cu126": "2.3.8"}, None, torch_cuda)
    assert out.startswith("driver       none found (no NVIDIA driver")
    assert "note" not in out and "warning" not in out


def test_the_driver_version_comes_from_libcuda(monkeypatch):
    class FakeLibcuda:
        def cuDriverGetVersion(self, pointer):  # noqa: N802  (the CUDA driver API's name)
            pointer._obj.value = 12040
            return 0

    monkeypatch.setattr(doctor.ctypes, "CDLL", lambda name: FakeLibcuda())
    assert doctor._driver_cuda_version() == (12, 4)


def test_without_libcuda_the_driver_version_comes_from_nvidia_smi(monkeypatch):
    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    header = "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: 13.0     |"
    monkeypatch.setattr(doctor.ctypes, "CDLL", no_library)
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, header, ""))
    assert doctor._driver_cuda_version() == (13, 0)

    def missing(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(doctor.subprocess, "run", missing)
    assert doctor._driver_cuda_version() is None


def test_a_spconv_that_does_not_load_fails_the_verdict(monkeypatch, capsys):
    import sparse_lc.ops

    def broken(device):
        raise ImportError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(sparse_lc.ops, "spconv_algo", broken)
    assert main(["doctor", "--seconds", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "spconv       does not load (ImportError: libcuda.so.1: cannot open shared object file); reinstall it" in out
    assert out.strip().splitlines()[-1].startswith("verdict: 1 check(s) FAILED: spconv does not load")
    assert "check cpu" not in out  # no device check without spconv


def test_doctor_prints_the_stub_installs_names(monkeypatch, capsys):
    install(monkeypatch, GPU_MACHINE, driver=(13, 0))
    monkeypatch.setattr(doctor, "_check_device", lambda device, seconds, failures: None)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for line in ("spconv-cu126 2.3.8", "cumm-cu126   0.7.11", "opencv-python-headless 4.12.0.88",
                 "driver       CUDA 13.0"):
        assert line in out, (line, out)
    assert "not installed" not in out
