"""docs/extending.md, run as a user would: its files written to a folder outside the package,
its commands run there. A backbone registered from user code passes the contract and trains."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "extending.md")


def code_blocks(text: str):
    """(language, code) of every fenced block of the page, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_the_extending_page_runs_as_written(tmp_path):
    page = open(DOC, encoding="utf-8").read()
    blocks = code_blocks(page)
    files = {}
    for _, code in blocks:
        first = code.splitlines()[0]
        if first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = code
    assert set(files) == {"my_backbone.py", "check_my_backbone.py", "my_net.yaml", "my_convnext.py",
                          "check_my_convnext.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    commands = [line for language, code in blocks if language == "bash" for line in code.splitlines() if line.strip()]
    assert commands[0] == "python check_my_backbone.py" and any(c.startswith("sparse-lc train") for c in commands)
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    env.pop("PYTHONPATH", None)  # the user's folder is found as a user would find it, not through ours
    outputs = {}
    for command in commands:
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
        outputs[command.split(" --")[0]] = proc
    contract = r"sparse == dense: 14 checks passed, largest relative difference \d\.\de-1\d"
    assert re.search(contract, outputs["python check_my_backbone.py"].stdout)
    convnext = outputs["python check_my_convnext.py"].stdout.splitlines()
    assert re.fullmatch(contract, convnext[0]), convnext
    [refusal] = [code.strip() for language, code in blocks if language == "text"]
    assert convnext[1:] == [refusal]  # the page shows the refusal as the library words it
    assert re.search(r"^  my_net\s+0\.\d\dM", outputs["sparse-lc list my_net.yaml"].stdout, flags=re.M)
    train = outputs["sparse-lc train my_net.yaml"]
    assert "done: 6 iterations" in train.stdout
    assert f"sparse-lc train: custom_imports: imported my_backbone from {tmp_path / 'my_backbone.py'}" in train.stderr
    run = tmp_path / "work_dirs" / "my_net"
    assert (run / "final.pth").is_file() and (run / "eval.json").is_file()
    assert (run / "config.yaml").read_text().startswith(f"# custom_imports imported my_backbone from {tmp_path}")


def test_a_missing_custom_import_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("custom_imports: [my_backbon]\nmodel: {backbone: my_net}\n")
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "train", "bad.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("sparse-lc train: error: custom_imports: no module named 'my_backbon' (put it on "
                                   "PYTHONPATH, in the current folder or beside the config file)")


def test_an_error_inside_a_custom_import_names_it(tmp_path):
    (tmp_path / "broken.py").write_text("import numpy\nraise RuntimeError('half written')\n")
    (tmp_path / "c.yaml").write_text("custom_imports: [broken]\n")
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "list", "c.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "custom_imports: importing 'broken' failed: RuntimeError: half written" in proc.stderr
    assert "Traceback" not in proc.stderr
