"""Deterministic crash injection at named points of a write: a test hook, off unless asked for.

The writers of model folders and resume states call :func:`point` between the steps of each
write (temp file opened, data written, fsynced, renamed). With no ``SMOKERDET_FAULT`` in the
environment a point does nothing but look the variable up, so the hook costs nothing in use.

Environment:
    SMOKERDET_FAULT: ``PATTERN:N``: the process kills itself with SIGKILL (no cleanup, no
        ``finally``, exactly like ``kill -9``) the N-th time it reaches a point whose name
        matches the ``fnmatch`` pattern PATTERN, e.g. ``model.json/synced:1``.
    SMOKERDET_FAULT_LOG: a file; just before the kill, ``NAME N`` is appended to it, so a test
        can check the kill landed where it aimed.
    SMOKERDET_FAULT_TRACE: a file; every point reached is appended to it, one name a line,
        so a test can learn what a run does, in order, and aim its kills.

Points: ``FILE/opened``, ``FILE/written``, ``FILE/synced``, ``FILE/renamed`` for each file
written through :func:`smokerdet._io.atomic_write_bytes` (``FILE`` is its name, e.g.
``model.safetensors``, ``model.json``, ``state-0002.safetensors``, ``state.json``), and
``save_model/previous-kept`` once the old weights are set aside as ``model.prev.safetensors``.

Example:
    >>> from smokerdet.faults import point
    >>> point("model.json/synced")  # no SMOKERDET_FAULT set: nothing happens
"""

from __future__ import annotations

import fnmatch
import os
import signal

_hits = 0  # points reached so far that match the pattern, in this process


def point(name: str) -> None:
    """A named point of a write; kills the process here if ``SMOKERDET_FAULT`` says so."""
    spec = os.environ.get("SMOKERDET_FAULT")
    trace = os.environ.get("SMOKERDET_FAULT_TRACE")
    if trace:
        _append(trace, name)
    if not spec:
        return
    pattern, _, count = spec.rpartition(":")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    global _hits
    _hits += 1
    if _hits == int(count):
        log = os.environ.get("SMOKERDET_FAULT_LOG")
        if log:
            _append(log, f"{name} {_hits}")
        os.kill(os.getpid(), signal.SIGKILL)


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
