"""The command line: help, version, demo, segment (good and bad inputs), profile."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import sparse_lc
from sparse_lc.cli import build_parser, main
from sparse_lc.data import read_label


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparse-lc {sparse_lc.__version__}"


def test_every_option_says_its_default_once_and_truthfully():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(subparsers.choices) == {"demo", "segment", "profile", "bench", "train", "eval", "calibrate",
                                       "check-data", "list", "doctor"}
    for name, sub in subparsers.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            text = formatter._get_help_string(action)
            assert text.count("default:") <= 1, (name, action.dest, text)
            assert not any(f"(default: {v})" in text for v in ("None", "False", "", "[]")), (name, action.dest, text)
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default:" in text, (name, action.dest, text)


# the least each command needs before it reads its options (positionals, a required choice)
REQUIRED = {"segment": ["a.png"], "profile": ["--size", "8", "8"], "train": ["c.yaml"], "eval": ["c.yaml", "m.pth"],
            "calibrate": ["c.yaml", "m.pth"], "check-data": ["c.yaml"]}


@pytest.mark.parametrize("command", ["demo", "segment", "profile", "bench", "train", "eval", "calibrate", "check-data",
                                     "list", "doctor"])
def test_an_unknown_option_is_reported_by_its_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, *REQUIRED.get(command, []), "--bogus=1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"sparse-lc {command}: error: unrecognized arguments: --bogus=1 "
                                       f"(see sparse-lc {command} --help)\n")


def test_check_data_takes_the_shared_no_progress_option(tmp_path, capsys):
    assert main(["check-data", os.devnull, "--set", "data.synthetic.num_train=3", "--set", "data.synthetic.num_val=2",
                 "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "checked 5 images: 0 problem(s)" and "check data" not in err


def test_demo_segments_the_bundled_samples(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("shapes_")]
    assert len(rows) == 6
    for row in rows:
        shares = [float(v.rstrip("%")) for v in row[3:6]]
        assert abs(sum(shares) - 100) < 0.2 and shares[0] > 50
        assert float(row[-1].rstrip("x")) > 2  # MACs saved against the dense run
    assert "max |logit difference| = " in out
    assert float(out.split("max |logit difference| = ")[1].split()[0]) < 1e-4
    assert len(list(tmp_path.glob("*_stages.png"))) == 6


def _write(path, array):
    assert cv2.imwrite(str(path), array)
    return str(path)


def test_segment_handles_any_photo_and_keeps_going(tmp_path, capsys):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = [
        _write(inputs / "rgb.jpg", rng.integers(0, 256, (45, 67, 3), dtype=np.uint8)),
        _write(inputs / "gray16.png", rng.integers(0, 65535, (30, 41), dtype=np.uint16)),
        _write(inputs / "bgra.png", rng.integers(0, 256, (20, 33, 4), dtype=np.uint8)),
        _write(inputs / "rgb16.tif", rng.integers(0, 65535, (25, 18, 3), dtype=np.uint16)),
        _write(inputs / "one.bmp", rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)),
        _write(inputs / "big.png", rng.integers(0, 256, (700, 1500, 3), dtype=np.uint8)),
    ]
    broken = inputs / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not really a jpeg")
    out = tmp_path / "out"
    code = main(["segment", str(inputs), str(tmp_path / "nope.png"), "--out", str(out), "--no-progress",
                 "--max-side", "512"])
    captured = capsys.readouterr()
    assert code == 1
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert any(line.startswith(str(broken)) and "cannot decode image" in line for line in err)
    assert any(line.startswith(str(tmp_path / "nope.png")) and "no such file" in line for line in err)
    assert "2 of 8 input(s) failed" in err[-1]
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        height, width = cv2.imread(path, cv2.IMREAD_UNCHANGED).shape[:2]
        label = read_label(str(out / f"{stem}_label.png"))
        assert label.shape == (height, width) and label.max() < 6
        assert Image.open(out / f"{stem}_label.png").mode == "P"
        assert cv2.imread(str(out / f"{stem}_overlay.jpg")).shape[:2] == (height, width)
        assert cv2.imread(str(out / f"{stem}_stages.png")).shape[:2] == (height, width)


def test_segment_never_overwrites_an_input(tmp_path, capsys):
    image = _write(tmp_path / "x.png", np.zeros((16, 16, 3), np.uint8))
    victim = _write(tmp_path / "x_label.png", np.full((16, 16, 3), 7, np.uint8))
    before = open(victim, "rb").read()
    assert main(["segment", image, victim, "--out", str(tmp_path), "--no-progress"]) == 1
    assert open(victim, "rb").read() == before
    assert "would overwrite an input" in capsys.readouterr().err


def test_segment_json_and_same_names(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        _write(tmp_path / folder / "img.png", np.full((24, 24, 3), 90, np.uint8))
    assert main(["segment", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o"),
                 "--json", "--no-progress"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in records] == [True, True]
    assert {os.path.basename(r["outputs"][0]) for r in records} == {"img_label.png", "img-2_label.png"}
    assert all(r["macs_dense"] > r["macs_cascade"] > 0 for r in records)


def test_bad_config_is_one_line_error(capsys, tmp_path):
    assert main(["profile", "--size", "32", "32", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.yaml: cannot read config" in err
    assert main(["profile", "--size", "32", "32", "--config", os.devnull, "--set", "model.backbone=resnet81"]) == 2
    assert "unknown backbone 'resnet81'" in capsys.readouterr().err


def test_segment_goes_on_after_a_failed_write(tmp_path, capsys, monkeypatch):
    from sparse_lc.apis import files

    write = files.write_picture

    def full_disk(path, picture):
        if "a_" in os.path.basename(path):
            raise OSError(28, "No space left on device")
        write(path, picture)

    monkeypatch.setattr(files, "write_picture", full_disk)
    for name in ("a", "b"):
        _write(tmp_path / f"{name}.png", np.full((16, 16, 3), 100, np.uint8))
    assert main(["segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "a.png: OSError: [Errno 28] No space left on device" in err and "1 of 2 input(s) failed" in err
    assert (tmp_path / "o" / "b_stages.png").is_file()


def test_segment_survives_a_blocked_output_and_reruns_into_its_own_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b"):
        _write(folder / f"{name}.png", np.full((16, 16, 3), 100, np.uint8))
    (folder / "dir.png").mkdir()                       # a folder with an image suffix is not an input
    (folder / "a_overlay.jpg").mkdir()                 # an output path taken by a folder
    assert main(["segment", str(folder), "--out", str(folder), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "a.png: skipped: " in err and "a_overlay.jpg is a folder not written by sparse-lc" in err
    assert "1 of 2 input(s) failed" in err
    assert (folder / "b_stages.png").is_file()         # the batch went on
    (folder / "a_overlay.jpg").rmdir()
    # again into the same folder: the earlier outputs are not taken for inputs
    assert main(["segment", str(folder), "--out", str(folder), "--no-progress", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(os.path.basename(r["path"]) for r in records) == ["a.png", "b.png"]


def test_exit_codes_of_the_entry_wrapper(monkeypatch, capsys):
    from sparse_lc.cli import list as list_command

    def raise_(error):
        def run(args):
            raise error
        return run

    for error, code, text in ((KeyboardInterrupt(), 130, "sparse-lc list: interrupted"),
                              (TypeError("bad\nthing"), 3, "sparse-lc list: internal error: TypeError: bad thing"),
                              (OSError("disk full"), 2, "sparse-lc list: error: disk full")):
        monkeypatch.setattr(list_command, "run", raise_(error))
        assert main(["list"]) == code
        err = capsys.readouterr().err.strip()
        assert err.startswith(text) and "\n" not in err and "Traceback" not in err


def test_output_closed_early_ends_quietly():
    """`sparse-lc list | head -1`: no BrokenPipeError traceback, exit 141 (128 + SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-m", "sparse_lc", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the first line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err, err
