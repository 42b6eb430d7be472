"""Ctrl-C for the CLI: a ``KeyboardInterrupt`` where a command can handle it, never mid-step.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. When that is a
destructor (a DataLoader iterator's ``__del__`` joining its workers), Python cannot raise it:
it prints ``Exception ignored in ... __del__`` with a traceback and carries on, so the
interrupt is lost and the user sees internals; the same happens in an at-fork handler while a
worker process starts. Such an interrupt is caught by ``sys.unraisablehook`` and delivered
again a moment later. The handler here sees where the signal landed
and, in cleanup, delivers the interrupt a moment later instead; the same holds inside a step
that must be whole (one prediction row written to every output). In a forked DataLoader worker
it does nothing: the main process stops its workers itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: Functions a KeyboardInterrupt waits for (by name or qualified name): in ``__del__`` it is
#: swallowed; in ``_shutdown_workers`` it breaks a shutdown; in the multiprocessing iterator's
#: ``__init__`` it leaves a half-built iterator whose ``__del__`` then fails with a traceback
#: (torch); in ``emit_row`` it would leave a row in one output and not another.
DEFERRING_FUNCTIONS = frozenset(
    {"__del__", "_shutdown_workers", "_MultiProcessingDataLoaderIter.__init__", "emit_row"}
)
#: How long a deferred interrupt waits before it is tried again, in seconds.
RETRY_S = 0.05


def _must_wait(frame: FrameType | None) -> bool:
    while frame is not None:
        code = frame.f_code
        if {code.co_name, getattr(code, "co_qualname", "")} & DEFERRING_FUNCTIONS:
            return True
        frame = frame.f_back
    return False


class _Handler:
    """SIGINT: raise ``KeyboardInterrupt`` now, or, inside cleanup or a step, a little later."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.pending = False
        self.previous_hook: Any = sys.unraisablehook

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a forked worker: the main process shuts it down
            return
        if _must_wait(frame):
            self.pending = True
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)
            return
        self.pending = False
        raise KeyboardInterrupt

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.pending:
            self.on_sigint(signum, frame)

    def on_unraisable(self, unraisable: Any) -> None:
        """A KeyboardInterrupt Python could not raise (it landed in an at-fork handler, a
        destructor...): no traceback; the interrupt is delivered again a moment later."""
        if issubclass(unraisable.exc_type, KeyboardInterrupt) and os.getpid() == self.pid:
            self.pending = True
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)
            return
        self.previous_hook(unraisable)


@contextmanager
def interrupts(*, exiting: bool) -> Iterator[None]:
    """Run a command under the SIGINT handler above.

    Args:
        exiting: the process exits right after (the console script). Then SIGINT is ignored
            from the end of the command on: its work is done and its output written, and an
            interrupt during interpreter shutdown could only print a traceback. Otherwise
            (a test runner calling the app) the previous handlers come back.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:  # Windows, or a non-main thread: Python's default behaviour
        yield
        return
    handler = _Handler()
    handler.previous_hook = sys.unraisablehook
    sys.unraisablehook = handler.on_unraisable
    previous: dict[int, Any] = {
        signal.SIGINT: signal.signal(signal.SIGINT, handler.on_sigint),
        signal.SIGALRM: signal.signal(signal.SIGALRM, handler.on_alarm),
    }
    try:
        yield
    finally:
        handler.pending = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = handler.previous_hook
        if exiting:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            for signum, old in previous.items():
                signal.signal(signum, old)
