"""Section timing: events at the section boundaries on CUDA (checked here with fake events, so
without a GPU), nothing that waits for the device inside a timed pass, sections that add up
to the total."""
from __future__ import annotations

import time

import pytest
import torch

from sparse_lc.analysis import bench
from sparse_lc.analysis.speed import SECTIONS, SPCONV
from sparse_lc.utils import SectionTimer

from conftest import make_cascade, random_images


class FakeEvent:
    """A CUDA event that reads the host clock when recorded (``elapsed_time`` in ms)."""

    def __init__(self, enable_timing: bool = False):
        assert enable_timing
        self.at = None

    def record(self, stream=None) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: "FakeEvent") -> float:
        assert self.at is not None and end.at is not None, "an event read before it was recorded"
        return 1e3 * (end.at - self.at)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda.Event -> FakeEvent; torch.cuda.synchronize counted (a list of the moments)."""
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(time.perf_counter()))
    return syncs


def test_cuda_timer_records_events_and_synchronises_once_after_the_pass(fake_cuda, tiny_model):
    images = random_images(batch=2, height=48, width=64)
    with torch.no_grad():
        tiny_model(images, rho=0.9)
        with SectionTimer(torch.device("cuda"), SECTIONS) as timer:
            tiny_model(images, rho=0.9)
            inside = len(fake_cuda)
    assert inside == 0 and len(fake_cuda) == 1  # never inside the pass; once when the timer closes
    assert set(timer.seconds) == set(SECTIONS)  # spconv, not asked for, not timed
    assert 0 < sum(timer.seconds.values()) <= timer.total


def test_nested_section_is_timed_only_when_asked_for(fake_cuda, tiny_model):
    images = random_images(batch=2, height=48, width=64)
    with torch.no_grad(), SectionTimer(torch.device("cuda"), (SPCONV,)) as timer:
        tiny_model(images, rho=0.9)
    assert set(timer.seconds) == {SPCONV} and 0 < timer.seconds[SPCONV] < timer.total


def test_sections_add_up_to_the_pass_on_the_cpu():
    """The four sections cover the forward pass: what they leave out is a few lines of Python."""
    model = make_cascade(backbone="resnet18").fused()
    images = random_images(batch=1, height=96, width=128)
    with torch.no_grad():
        model(images, rho=0.9)
        shares = []
        for _ in range(3):  # best of three: a preemption between two sections is not the code's
            with SectionTimer(None, SECTIONS) as timer:
                model(images, rho=0.9)
            shares.append(sum(timer.seconds.values()) / timer.total)
    assert 0.95 < max(shares) <= 1.0, shares


def test_bench_reports_sections_that_add_up(fake_cuda):
    """bench on the CPU: per-section medians close to the total's, spconv time from its own passes."""
    model = make_cascade(backbone="resnet18").fused()
    report = bench(model, (96, 128), hard_shares=(0.3, 0.15), warmup=1, reps=3)
    for kind in ("sparse", "dense"):
        total = report.sparse_s if kind == "sparse" else report.dense_s
        parts = sum(s.sparse_s if kind == "sparse" else s.dense_s for s in report.stages)
        assert abs(parts - total) < 0.1 * total, (kind, parts, total)
    assert 0 < report.stage23["spconv_s"] < report.stage23["sparse_s"]
    assert fake_cuda == []  # a CPU run never synchronises a GPU
