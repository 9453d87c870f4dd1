"""Fuzzing the edges: broken files of every kind in one folder, and every config key set to a
value of the wrong type. Each ends in one line naming the thing; the rest of the work goes on."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import yaml

from sparse_lc.cli import main
from sparse_lc.config import KEYS
from sparse_lc.schema import Invalid

FORMATS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def broken_folder(folder):
    """One good image and every kind of bad input; returns {name: expected reason}."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(folder / "good.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    expected = {}
    for suffix in FORMATS:  # every supported format, cut in half
        whole = folder / f"whole{suffix}"
        assert cv2.imwrite(str(whole), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
        data = whole.read_bytes()
        whole.unlink()
        (folder / f"truncated{suffix}").write_bytes(data[:len(data) // 2])
        expected[f"truncated{suffix}"] = ("cannot decode image", "truncated or corrupt image")
    (folder / "random.jpg").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expected["random.jpg"] = ("cannot decode image",)
    (folder / "empty.png").write_bytes(b"")
    expected["empty.png"] = ("an empty file",)
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))
    expected["huge.png"] = ("its header claims 100000x100000 pixels, more than OpenCV reads",)
    os.symlink(folder / "loop.png", folder / "loop.png")
    expected["loop.png"] = ("a broken or looping symbolic link",)
    (folder / "folder.png").mkdir()  # a folder with an image's name, inside the folder: not an input
    return expected


@pytest.mark.slow
def test_segment_reports_every_broken_input_in_one_line_and_processes_the_rest(tmp_path):
    expected = broken_folder(tmp_path / "in")
    (tmp_path / "x.png").mkdir()  # a folder named like an image, given as an input: an empty folder
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "segment", str(tmp_path / "in"), str(tmp_path / "x.png"),
                           str(tmp_path / "in" / "loop.png"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "out" / "good_label.png").is_file()
    lines = [line for line in proc.stderr.splitlines() if line.startswith(str(tmp_path))]
    by_name = {}
    for line in lines:
        path, reason = line.split(": ", 1)
        by_name.setdefault(os.path.basename(path), []).append(reason)
    for name, reasons in expected.items():
        assert name in by_name, (name, proc.stderr)
        assert any(r.startswith(reasons) for r in by_name[name]), (name, by_name[name])
    assert by_name["x.png"] == ["no image files in this folder (.jpg, .jpeg, .png, .bmp, .tif, .tiff)"]
    total = len(expected) + 2 + 1  # the broken files, x.png, loop.png given twice... and good.png
    assert proc.stderr.strip().splitlines()[-1] == f"{len(lines)} of {total} input(s) failed"
    assert not any(line.startswith(("libpng", "[ERROR", "Premature", "TIFF")) for line in proc.stderr.splitlines())


def _wrong_value(check):
    """A value of the wrong type for ``check`` (the first candidate it refuses)."""
    for candidate in ("zzz", 7, -3, 2.5, True, [1, "a"], {"a": 1}, [[300, 0, 0]]):
        try:
            check(candidate)
        except Invalid:
            return candidate
    raise AssertionError(f"{check.expected}: every candidate passes")


@pytest.mark.parametrize("key", KEYS, ids=[k.name for k in KEYS])
def test_every_config_key_refuses_a_wrong_type_in_one_line(key, capfd):
    value = _wrong_value(key.check)
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    assert main(["check-data", os.devnull, "--set", f"{key.name}={text}"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"sparse-lc check-data: error: --set {key.name}: expected "), err


def test_a_config_file_of_random_bytes_is_one_line(tmp_path, capfd):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    assert main(["check-data", str(garbage)]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"sparse-lc check-data: error: {garbage}: not "), err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["check-data", str(tmp_path / "list.yaml")]) == 2
    assert "a config must be a mapping of keys, got list" in capfd.readouterr().err
    (tmp_path / "deep.yaml").write_text("model:\n  num_classes:\n    nested: 1\n")
    assert main(["check-data", str(tmp_path / "deep.yaml")]) == 2
    assert "deep.yaml: model.num_classes: expected a whole number >= 1 and <= 255, got {'nested': 1}" in \
        capfd.readouterr().err
