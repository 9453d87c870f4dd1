"""Ctrl-C at a clean point: a first SIGINT asks a loop to stop after its current step, a
second one interrupts at once.

Stopping between steps means nothing is cut in half: no batch half received from a
DataLoader worker (whose file-descriptor handshake would print a traceback from the worker),
no step half applied, and the loop can save where it stopped.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


class StopRequest:
    """Set by the first Ctrl-C inside :func:`stop_requests`; the loop reads ``requested``."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def stop_requests(enabled: bool = True, message: str = "") -> Iterator[StopRequest]:
    """Within the block, the first Ctrl-C sets ``requested`` (and prints ``message``) instead of
    raising; a second Ctrl-C raises KeyboardInterrupt as usual.

    Not enabled (``enabled=False``, a thread other than the main one, or a SIGINT handler the
    program installed itself), the block runs with Ctrl-C untouched and ``requested`` stays False.
    """
    stop = StopRequest()
    usable = (enabled and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not usable:
        yield stop
        return

    def ask_to_stop(signum, frame) -> None:
        stop.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C raises at once
        if message:
            tqdm.write(message, file=sys.stderr)

    signal.signal(signal.SIGINT, ask_to_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
