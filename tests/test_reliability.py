"""Every user mistake ends in one clear line, and nothing a user owns is overwritten or lost.

Each test is a row of docs/reliability.md, run from the command line as a user would
(``python -m sparse_lc ...`` in a subprocess): it checks the documented exit code and that no
output holds a Python traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import List

import cv2
import numpy as np
import pytest
import torch

from sparse_lc.data import read_image
from sparse_lc.data.io import to_uint8

TINY = ["model.backbone=tiny", "model.num_classes=6", "model.head_channels=8", "model.rho=0.5",
        "data.num_workers=0", "data.synthetic.num_train=8", "data.synthetic.num_val=2",
        "data.synthetic.size=[32,32]", "train.crop_size=[32,32]", "train.batch_size=2",
        "train.iters=6", "train.warmup_iters=3", "train.checkpoint_interval=3", "train.log_interval=2",
        "train.optimizer=adamw", "eval.rhos=[0.5,1.0]"]


def sets(overrides: List[str]) -> List[str]:
    return [a for o in overrides for a in ("--set", o)]


def cli(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``sparse-lc ARGS``; the result, after checking that no output holds a traceback."""
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line the command printed on stderr (notes and warnings aside)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")
             and ": warning: " not in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def write_image(path, array) -> str:
    assert cv2.imwrite(str(path), array)
    return str(path)


def folder_dataset(root, label_of=lambda split, n: 0):
    """Four 32x32 images per split in mmsegmentation's folder layout."""
    for split in ("train", "val"):
        (root / "img_dir" / split).mkdir(parents=True)
        (root / "ann_dir" / split).mkdir(parents=True)
        for n in range(4):
            write_image(root / "img_dir" / split / f"{n}.png", np.full((32, 32, 3), 40 * n, np.uint8))
            write_image(root / "ann_dir" / split / f"{n}.png", np.full((32, 32), label_of(split, n), np.uint8))
    return ["data.type=folder", f"data.root={root}", "data.classes=[a,b,c,d,e,f]"]


# ---------------------------------------------------------------- 1, 2: config values
@pytest.mark.slow
def test_row01_scientific_notation_is_a_number(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  lr: 5e-4\n  weight_decay: 1E-5\n")
    proc = cli("train", "run.yaml", "--no-progress", *sets(TINY + ["train.lr=1e-3"]), "--work-dir", "w",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stored = (tmp_path / "w" / "config.yaml").read_text()
    assert "lr: 0.001" in stored and "weight_decay: 1.0e-05" in stored


@pytest.mark.parametrize("override, expected", [
    ("train.iters=abc", "--set train.iters: expected a whole number >= 1, got 'abc'"),
    ("train.iters=20.5", "--set train.iters: expected a whole number >= 1, got 20.5"),
    ("train.iters=0", "--set train.iters: expected a whole number >= 1, got 0"),
    ("train.iters=-5", "--set train.iters: expected a whole number >= 1, got -5"),
    ("train.batch_size=0", "--set train.batch_size: expected a whole number >= 1, got 0"),
    ("train.checkpoint_interval=0", "--set train.checkpoint_interval: expected a whole number >= 1, got 0"),
    ("train.crop_size=64", "--set train.crop_size: expected [H, W], two whole numbers >= 8, got 64"),
    ("model.num_classes=two", "--set model.num_classes: expected a whole number >= 1 and <= 255, got 'two'"),
    ("train.lr=fast", "--set train.lr: expected a number > 0, got 'fast'"),
    ("data.classes=a,b", "--set data.classes: expected null or a list of distinct class names, e.g. [road, car], "
                         "got 'a,b'"),
])
def test_row02_a_bad_value_is_one_line(tmp_path, override, expected):
    proc = cli("train", os.devnull, *sets(TINY + [override]), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 2
    assert error_line(proc) == f"sparse-lc train: error: {expected}"
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- 3: random weights
@pytest.mark.slow
def test_row03_segment_refuses_random_weights(tmp_path):
    image = write_image(tmp_path / "photo.png", np.zeros((16, 16, 3), np.uint8))
    proc = cli("segment", image, "--config", "configs/lc_resnet18_os8_voc.yaml", "--out", str(tmp_path / "o"),
               cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert proc.returncode == 2 and "without --checkpoint would run random weights" in error_line(proc)
    assert not (tmp_path / "o").exists()
    allowed = cli("segment", image, "--config", "configs/lc_tiny.yaml", "--random-weights", "--out",
                  str(tmp_path / "o"), "--no-progress", cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert allowed.returncode == 0 and "note: no --checkpoint: random weights" in allowed.stderr


# ---------------------------------------------------------------- 4: data checked first
@pytest.mark.parametrize("bad_split", ["train", "val"])
def test_row04_a_bad_label_stops_before_anything_is_written(tmp_path, bad_split):
    data = folder_dataset(tmp_path / "data", lambda split, n: 9 if (split, n) == (bad_split, 2) else 1)
    proc = cli("train", os.devnull, *sets(TINY + data), "--work-dir", str(tmp_path / "w"), "--no-progress")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == ("sparse-lc train: error: the data check found 1 problem(s) in 1 file(s); nothing was started "
                        "(fix them, or pass --skip-data-check)")
    assert lines[1].endswith(f"ann_dir/{bad_split}/2.png: label values [9] outside [0, 6) and 255")
    assert not (tmp_path / "w").exists()


def test_row04_valid_files_are_remembered(tmp_path, monkeypatch):
    from sparse_lc import load_config
    from sparse_lc.data import build_dataset
    from sparse_lc.data import check as check_module

    cfg = load_config(overrides=TINY + folder_dataset(tmp_path / "data"))
    datasets = [build_dataset(cfg, train=True), build_dataset(cfg, train=False)]
    reads = []
    real = check_module._check_sample
    monkeypatch.setattr(check_module, "_check_sample", lambda d, i, k: reads.append(i) or real(d, i, k))
    cache = str(tmp_path / "cache.json")
    check_module.require_valid_data(datasets, 6, progress=False, cache_path=cache)
    assert len(reads) == 8
    check_module.require_valid_data(datasets, 6, progress=False, cache_path=cache)
    assert len(reads) == 8  # nothing read again
    time.sleep(0.01)
    write_image(tmp_path / "data" / "ann_dir" / "val" / "1.png", np.full((32, 32), 2, np.uint8))
    check_module.require_valid_data(datasets, 6, progress=False, cache_path=cache)
    assert len(reads) == 9  # only the changed pair


# ---------------------------------------------------------------- 5: 16-bit images
@pytest.mark.slow
def test_row05_a_low_range_16_bit_image_is_not_black(tmp_path):
    frame = (np.arange(64 * 64).reshape(64, 64) % 236).astype(np.uint16)  # a microscope frame: 0-235 of 65535
    path = write_image(tmp_path / "frame.png", frame)
    picture = read_image(path)  # the dataset reader and segment read alike
    assert picture.max() == 255 and picture.mean() > 100  # stretched from [0, 235], not divided by 257
    assert np.array_equal(picture[0, :236, 0] if picture.shape[1] >= 236 else picture[0, :, 0],
                          to_uint8(frame)[0, :picture.shape[1]])
    full = write_image(tmp_path / "full.png", np.full((8, 8), 65535, np.uint16))
    assert read_image(full).max() == 255
    assert to_uint8(np.array([[257 * 100, 65535]], np.uint16)).tolist() == [[100, 255]]  # full range: / 257
    proc = cli("segment", path, "--out", str(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 0
    overlay = cv2.imread(str(tmp_path / "o" / "frame_overlay.jpg"))
    assert overlay.mean() > 40  # not black


# ---------------------------------------------------------------- 6, 7, 8, 9: work dirs
def test_row06_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    for name in ("final.pth", "log.jsonl", "eval.json"):
        (work / name).write_text("mine")
    before = {name: digest(work / name) for name in ("final.pth", "log.jsonl", "eval.json")}
    proc = cli("train", os.devnull, *sets(TINY), "--work-dir", str(work), "--no-progress")
    assert proc.returncode == 2
    assert error_line(proc) == (f"sparse-lc train: error: work_dir {work} already holds a run (final.pth, log.jsonl, "
                                f"eval.json): pass --resume to continue it, or choose another --work-dir")
    assert before == {name: digest(work / name) for name in before}


def _start_training(tmp_path, work, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sparse_lc", "train", os.devnull, "--work-dir", str(work),
                             "--no-progress", *sets(TINY + list(extra))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def _wait_for(path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_row07_a_second_run_into_the_same_folder_stops_at_once(tmp_path):
    work = tmp_path / "w"
    first = _start_training(tmp_path, work, "train.iters=3000", "train.warmup_iters=3",
                            "train.checkpoint_interval=20")
    try:
        _wait_for(work / "latest.pth", first)
        second = cli("train", os.devnull, *sets(TINY + ["train.iters=3000", "train.warmup_iters=3",
                                                        "train.checkpoint_interval=20"]),
                     "--work-dir", str(work), "--resume", "--no-progress")
        assert second.returncode == 2
        assert error_line(second) == (f"sparse-lc train: error: work_dir {work} is in use by another run (process "
                                      f"{first.pid}): wait for it to end, or choose another --work-dir")
    finally:
        first.send_signal(signal.SIGKILL)  # killed: the OS releases the lock
        first.wait()
    from sparse_lc.checkpoint import load_checkpoint

    saved = load_checkpoint(str(work / "latest.pth"))["iteration"]
    third = cli("train", os.devnull, *sets(TINY + ["train.iters=3000", "train.warmup_iters=3",
                                                   "train.checkpoint_interval=20", f"train.iters={saved + 4}"]),
                "--work-dir", str(work), "--resume", "--no-progress")
    assert third.returncode == 0, third.stderr  # the killed run's lock was released by the OS
    iterations = [r["iter"] for r in map(json.loads, (work / "log.jsonl").read_text().splitlines())
                  if r["type"] == "train"]
    assert iterations == sorted(set(iterations)) and iterations[-1] == saved + 4, "no iteration is logged twice"


@pytest.mark.slow
def test_row08_resume_after_a_kill_during_the_final_evaluation(tmp_path):
    """A real process killed (SIGKILL) after final.pth, during the final evaluation: --resume
    completes the evaluation, and logs it once."""
    work = tmp_path / "w"
    slow_eval = ["data.synthetic.num_val=100", "data.synthetic.size=[48,48]", "eval.rhos=[0.5,0.9,0.99,1.0]"]
    first = _start_training(tmp_path, work, *slow_eval)
    _wait_for(work / "final.pth", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (work / "eval.json").exists()
    proc = cli("train", os.devnull, *sets(TINY + slow_eval), "--work-dir", str(work), "--resume", "--no-progress")
    assert proc.returncode == 0 and "done: 6 iterations" in proc.stdout
    assert (work / "eval.json").is_file() and (work / "rho_sweep.png").is_file()
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["type"] == "eval"] == [6] * 4
    again = cli("train", os.devnull, *sets(TINY + slow_eval), "--work-dir", str(work), "--resume", "--no-progress")
    assert again.returncode == 0 and "is complete" in again.stdout and "nothing to do" in again.stdout


@pytest.mark.slow
def test_row08_resume_after_a_crash_between_the_last_checkpoint_and_final(tmp_path):
    """The state a crash after the last latest.pth leaves (no final.pth, no evaluation):
    --resume writes both (in-process; the test above kills a real process)."""
    from sparse_lc import load_config
    from sparse_lc.checkpoint import load_checkpoint
    from sparse_lc.training import train

    work = tmp_path / "w"
    cfg = load_config(overrides=TINY + [f"work_dir={work}"])
    train(cfg, progress=False)
    for name in ("final.pth", "eval.json", "rho_sweep.png"):
        os.remove(work / name)
    log = [line for line in (work / "log.jsonl").read_text().splitlines() if json.loads(line)["type"] == "train"]
    (work / "log.jsonl").write_text("\n".join(log) + "\n")
    summary = train(cfg, resume=True, progress=False)
    assert summary.completed == ["final.pth", "eval.json"]
    assert (work / "eval.json").is_file() and (work / "rho_sweep.png").is_file()
    final, latest = (load_checkpoint(str(work / name)) for name in ("final.pth", "latest.pth"))
    assert final["iteration"] == latest["iteration"] == 6
    assert all(torch.equal(final["model"][k], latest["model"][k]) for k in latest["model"])
    assert train(cfg, resume=True, progress=False).completed == []


@pytest.mark.slow
def test_row09_ctrl_c_says_where_to_continue(tmp_path):
    work = tmp_path / "w"
    proc = _start_training(tmp_path, work, "train.iters=3000", "train.warmup_iters=3", "train.checkpoint_interval=10",
                           "data.num_workers=2")
    _wait_for(work / "latest.pth", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err  # the loop stops between iterations: no worker is cut off mid-batch
    assert "stopping after this iteration, with a checkpoint (Ctrl-C again: at once)" in err
    stopped = re.fullmatch(r"sparse-lc train: interrupted at iteration (\d+) of 3000; continue with --resume "
                           r"\(from the checkpoint of iteration (\d+)\)", err.strip().splitlines()[-1])
    assert stopped and stopped[1] == stopped[2], err  # saved where it stopped, not at the last interval
    from sparse_lc.checkpoint import load_checkpoint

    assert load_checkpoint(str(work / "latest.pth"))["iteration"] == int(stopped[1])


def test_first_ctrl_c_asks_a_loop_to_stop_and_a_second_one_interrupts():
    from sparse_lc.utils.interrupts import stop_requests

    with stop_requests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with stop_requests(enabled=False) as stop, pytest.raises(KeyboardInterrupt):  # as under DDP
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert not stop.requested


# ---------------------------------------------------------------- 10, 11, 12: segment's files
@pytest.mark.slow
def test_row10_segment_never_writes_over_a_users_file(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "cat.png", np.full((24, 24, 3), 90, np.uint8))
    mine = write_image(folder / "cat_label.png", np.full((24, 24, 3), 7, np.uint8))
    before = digest(mine)
    proc = cli("segment", str(folder), "--out", str(folder), "--no-progress")
    assert proc.returncode == 1
    assert (f"{folder}/cat.png: would overwrite an input of this run ({folder}/cat_label.png); choose another "
            f"--out") in proc.stderr
    assert digest(mine) == before
    assert (folder / "cat_label_label.png").is_file()  # the user's cat_label.png is an input like any other
    alone = cli("segment", str(folder / "cat.png"), "--out", str(folder), "--no-progress")
    assert alone.returncode == 1 and (f"{folder}/cat.png: skipped: {folder}/cat_label.png is a file not written by "
                                      f"sparse-lc segment (--overwrite replaces it)") in alone.stderr
    assert digest(mine) == before
    forced = cli("segment", str(folder / "cat.png"), "--out", str(folder), "--overwrite", "--no-progress")
    assert forced.returncode == 0 and digest(mine) != before


@pytest.mark.slow
def test_row11_segmenting_a_folder_into_itself_twice_gives_the_same_result(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_image(folder / "a.png", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    write_image(folder / "a.jpg", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    first = cli("segment", str(folder), "--out", str(folder), "--json", "--no-progress")
    assert first.returncode == 0, first.stderr
    outputs = sorted(p.name for p in folder.iterdir() if p.name not in ("a.png", "a.jpg"))
    hashes = {name: digest(folder / name) for name in outputs}
    second = cli("segment", str(folder), "--out", str(folder), "--json", "--no-progress")
    assert second.returncode == 0, second.stderr
    assert [r["path"] for r in json.loads(second.stdout)] == [r["path"] for r in json.loads(first.stdout)]
    assert sorted(p.name for p in folder.iterdir() if p.name not in ("a.png", "a.jpg")) == outputs
    assert {name: digest(folder / name) for name in outputs} == hashes


@pytest.mark.slow
@pytest.mark.parametrize("case", ["out_is_a_file", "out_under_a_file", "max_side", "empty_folder"])
def test_row12_segment_argument_problems_are_one_line(tmp_path, case):
    image = write_image(tmp_path / "x.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("mine")
    args = {"out_is_a_file": [image, "--out", str(tmp_path / "file.txt")],
            "out_under_a_file": [image, "--out", str(tmp_path / "file.txt" / "sub")],
            "max_side": [image, "--max-side", "-5"],
            "empty_folder": [str(tmp_path / "empty")]}[case]
    proc = cli("segment", *args, "--no-progress")
    expected = {
        "out_is_a_file": f"sparse-lc segment: error: --out {tmp_path}/file.txt: exists and is not a folder; name a "
                         f"folder",
        "out_under_a_file": f"sparse-lc segment: error: --out {tmp_path}/file.txt/sub: cannot create the folder "
                            f"(Not a directory)",
        "max_side": "sparse-lc segment: error: argument --max-side: expected a whole number >= 0 (0: full resolution), "
                    "got '-5' (see sparse-lc segment --help)",
        "empty_folder": f"sparse-lc segment: error: {tmp_path}/empty: no image files to segment (looked for .jpg, "
                        f".jpeg, .png, .bmp, .tif, .tiff)"}[case]
    assert proc.returncode == 2 and error_line(proc) == expected
    assert (tmp_path / "file.txt").read_text() == "mine"


# ---------------------------------------------------------------- 13, 14: profile, bench, decoders
@pytest.mark.slow
def test_row13_profile_takes_folders(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for n in range(2):
        write_image(folder / f"{n}.png", np.full((32, 48, 3), 60 * n, np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = cli("profile", "--input", str(folder), "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["stages"][0]["name"] == "stage1"
    assert f"{folder}/broken.png: cannot decode image" in proc.stderr and "1 of 3 input(s) failed" in proc.stderr
    assert "libpng" not in proc.stderr.replace("(libpng error", "")


@pytest.mark.parametrize("args, expected", [
    (["profile", "--size", "0", "0"], "argument --size: expected a whole number >= 1, got '0'"),
    (["bench", "--reps", "0"], "argument --reps: expected a whole number >= 1, got '0'"),
    (["bench", "--threads", "0"], "argument --threads: expected a whole number >= 1, got '0'"),
    (["bench", "--hard-share", "0.2", "1.5"], "argument --hard-share: expected a share in [0, 1], got '1.5'"),
])
def test_row13_profile_and_bench_values_are_checked(args, expected):
    proc = cli(*args)
    assert proc.returncode == 2
    assert error_line(proc) == f"sparse-lc {args[0]}: error: {expected} (see sparse-lc {args[0]} --help)"


@pytest.mark.slow
def test_row13_output_piped_into_head_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m sparse_lc profile --size 64 64 --layers | head -2", shell=True,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2
    assert proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_row14_decoder_messages_stay_out_of_the_terminal(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = write_image(folder / "good.png", np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    data = open(good, "rb").read()
    (folder / "truncated.png").write_bytes(data[:len(data) // 2])
    proc = cli("segment", str(folder), "--out", str(tmp_path / "o"))  # with the progress bar
    assert proc.returncode == 1
    problem = [line for line in proc.stderr.splitlines() if "truncated.png:" in line]
    assert problem == [f"{folder}/truncated.png: cannot decode image: not an image, or a format OpenCV cannot read "
                       f"(libpng error: Read Error)"]
    assert not any(line.startswith("libpng") for line in proc.stderr.splitlines())


# ---------------------------------------------------------------- 15: warm-up
@pytest.mark.slow
def test_row15_warm_up_costs_one_pass_per_run(tmp_path, monkeypatch):
    import sparse_lc
    from sparse_lc.apis import class_names_and_palette, segment_files

    model, cfg = sparse_lc.load_model()
    for n, size in enumerate([(30, 40), (50, 20), (64, 64), (30, 40)]):
        write_image(tmp_path / f"{n}.png", np.full((*size, 3), 100, np.uint8))
    passes = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: passes.append(1) or forward(self, *a, **k))
    _, palette = class_names_and_palette(cfg)
    records = segment_files(model, [str(tmp_path)], str(tmp_path / "o"), palette, progress=False)
    assert all(r.ok for r in records) and len(records) == 4
    assert len(passes) == 4 + 1 + 1  # 4 images, 1 warm-up pass, 1 probe of the dense model's MACs per pixel
    passes.clear()
    segment_files(model, [str(tmp_path)], str(tmp_path / "o2"), palette, progress=False, warmup=False)
    assert len(passes) == 4 + 1
    proc = cli("segment", str(tmp_path), "--out", str(tmp_path / "o3"), "--json")  # and from the command line
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 4
