"""tools/: every script runs for real, in a subprocess as a user runs it, on tiny settings
(train.py also under torchrun), and no script can hide a module Python would import.

Python puts the folder of the script it runs first on ``sys.path``: ``tools/profile.py`` once
hid the standard library's ``profile`` (imported by ``torch.optim`` through ``cProfile``), and
``python tools/train.py`` failed before its first iteration."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

from conftest import REPO, write_tiny_config

TOOLS = os.path.join(REPO, "tools")
SCRIPTS = sorted(f for f in os.listdir(TOOLS) if f.endswith(".py"))
SAMPLE = os.path.join(REPO, "sparse_lc", "assets", "samples", "shapes_0.png")


def run(argv, cwd, timeout=300) -> subprocess.CompletedProcess:
    """``argv`` from ``cwd``, one thread per process (these machines are shared); fails the test
    on a non-zero exit code, showing the end of stderr."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{' '.join(map(str, argv))}: exit code {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


def module_names() -> set:
    """Every top-level module name a script could hide: the standard library's, the built-in
    ones, and those of every installed distribution (torch, cv2, yaml, ...)."""
    return (set(sys.stdlib_module_names) | set(sys.builtin_module_names) | set(metadata.packages_distributions())
            | {"sparse_lc", "kernels_bench"})


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names and packages_distributions: 3.10+")
def test_no_script_is_named_like_a_module():
    names = module_names()
    assert {"profile", "cProfile", "json", "torch", "numpy", "cv2", "yaml", "spconv", "PIL"} <= names  # it can fail
    clashes = [f"tools/{f}" for f in SCRIPTS if f[:-3] in names]
    assert not clashes, f"{clashes} would hide a module of that name from every script in tools/: rename"


def test_a_script_does_not_see_its_own_folder(tmp_path):
    """Defence in depth: even a file named like a module beside the scripts is never imported
    (here profile.py, the name that broke tools/train.py, and torch.py)."""
    folder = tmp_path / "tools"
    shutil.copytree(TOOLS, folder)
    for name in ("profile", "torch"):
        (folder / f"{name}.py").write_text(f"raise ImportError('tools/{name}.py was imported')\n")
    proc = subprocess.run([sys.executable, str(folder / "train.py"), str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr  # got as far as reading the config, with torch.optim imported
    assert "missing.yaml" in proc.stderr and "was imported" not in proc.stderr


def test_make_config_docs_writes_the_current_page(tmp_path):
    page = tmp_path / "configs.md"
    proc = run([sys.executable, os.path.join(TOOLS, "make_config_docs.py"), str(page)], tmp_path)
    assert proc.stdout.strip() == f"wrote {page}"
    with open(os.path.join(REPO, "docs", "configs.md"), encoding="utf-8") as f:
        assert page.read_text(encoding="utf-8") == f.read()


def check_demo(tmp_path, proc):
    assert "sparse and dense execution agree on shapes_0.png" in proc.stdout
    assert (tmp_path / "demo" / "shapes_5_stages.png").is_file()


def check_segment(tmp_path, proc):
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"shapes_0_label.png", "shapes_0_overlay.jpg",
                                                               "shapes_0_stages.png"}


def check_profile(tmp_path, proc):
    assert set(json.loads(proc.stdout)) >= {"dense_macs", "sparse_macs", "ratio", "stages"}


def check_train(tmp_path, proc):
    assert "done: 4 iterations" in proc.stdout and (tmp_path / "work" / "final.pth").is_file()


def check_test(tmp_path, proc):
    assert "mIoU" in proc.stdout and (tmp_path / "eval" / "eval.json").is_file()


def check_bench_gpu(tmp_path, proc):
    table = (tmp_path / "bench" / "table.md").read_text()
    assert table.count("| ResNet-18 OS8 |") == 2 and table.count("| IRNv2 OS8 |") == 1 and "tiled image" in table


# script -> (its arguments on tiny settings, given the test's folder and a trained run; what it must do)
RUNS = {
    "bench_gpu.py": (lambda tmp, tiny: ["--device", "cpu", "--quick", "--out", "bench"], check_bench_gpu),
    "demo.py": (lambda tmp, tiny: ["--out", "demo"], check_demo),
    "segment.py": (lambda tmp, tiny: [SAMPLE, "--out", "out", "--no-progress"], check_segment),
    "profile_macs.py": (lambda tmp, tiny: ["--input", SAMPLE, "--rho", "0.9", "--json"], check_profile),
    "train.py": (lambda tmp, tiny: [write_tiny_config(str(tmp / "tiny.yaml")), "--work-dir", "work", "--no-progress",
                                    "--device", "cpu"], check_train),
    "test.py": (lambda tmp, tiny: [tiny.config, tiny.checkpoint, "--out", "eval", "--no-progress"], check_test),
}


def test_every_script_has_a_run():
    assert set(SCRIPTS) == set(RUNS) | {"make_config_docs.py"}, "give each script in tools/ a tiny run in RUNS"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_every_script_runs(script, tmp_path, tiny_run):
    arguments, check = RUNS[script]
    proc = run([sys.executable, os.path.join(TOOLS, script), *arguments(tmp_path, tiny_run)], tmp_path)
    check(tmp_path, proc)


@pytest.mark.slow
def test_train_runs_under_torchrun(tmp_path):
    """The documented multi-GPU command line, with one process on the CPU (gloo)."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    config = write_tiny_config(str(tmp_path / "tiny.yaml"))
    proc = run([torchrun, "--standalone", "--nproc_per_node", "1", os.path.join(TOOLS, "train.py"), config,
                "--work-dir", "work", "--no-progress", "--device", "cpu"], tmp_path)
    check_train(tmp_path, proc)
    log = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "train" for r in log) == 2  # iterations 2 and 4 (log_interval 2)
