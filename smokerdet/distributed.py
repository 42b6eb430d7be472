"""Runs under ``torchrun``: the process group, who writes, and the few collectives we need.

``torchrun --nproc_per_node N -m smokerdet train ...`` starts N copies of the command with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`session` reads them and
joins the process group (``gloo`` on CPU, ``nccl`` on CUDA). Without them every function here
is a cheap no-op for one process, so the stages call them unconditionally.

Failure handling: collectives time out after ``SMOKERDET_DIST_TIMEOUT`` seconds (default 600),
the SIGTERM torchrun sends to the survivors of a failed or interrupted run becomes a Ctrl-C (so
each rank stops through the same code path as a user's Ctrl-C), and an error that the main rank
has already reported ends the other ranks silently with the same exit code.

Example:
    >>> from smokerdet import distributed
    >>> with distributed.session("cpu") as world:  # one process: no process group
    ...     world.size, world.is_main
    (1, True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from smokerdet.errors import Interrupted, SmokerdetError


def bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """The ``[start, stop)`` of slice ``index`` of ``count`` over ``n`` items.

    Contiguous slices whose sizes differ by at most one; an empty slice when ``count > n``.
    """
    return n * index // count, n * (index + 1) // count


T = TypeVar("T")

TIMEOUT_ENV = "SMOKERDET_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
MIRROR_GRACE_S = 2.0

#: Whether this process has joined a process group (see :func:`joined_a_group`).
_joined = False


class DistributedError(SmokerdetError):
    """A rank lost contact with the others, or the process group cannot be joined."""


class _Mirrored(SystemExit):
    """An error the main rank reports; the other ranks end quietly with its exit code."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files and talks to the user (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank (a process group is in use)."""
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise DistributedError(
            f"{name}={raw!r} is not a number", hint="launch with torchrun"
        ) from None


def world_from_env() -> World:
    """The world torchrun describes in the environment; one process when it says nothing."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"RANK={rank} does not fit WORLD_SIZE={size}")
    return World(rank=rank, local_rank=_env_int("LOCAL_RANK", 0), size=size)


def current() -> World:
    """The world of the running :func:`session`; one process outside one."""
    if world_from_env().size == 1:  # no torch import for one process (ONNX-only predict)
        return World()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return world_from_env()
    return World()


def timeout() -> timedelta:
    """How long a collective waits for a silent rank before the run fails."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return timedelta(seconds=max(1.0, seconds))


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def session(device: str = "cpu") -> Iterator[World]:
    """Join the process group torchrun asks for, for the duration of one command.

    The one place a command joins it; the ranks other than the main one log only errors
    meanwhile (the main rank talks to the user).

    Args:
        device: the resolved device; ``cuda`` selects ``nccl``, anything else ``gloo`` (the
            rows of predict travel between CPUs). Each rank uses the GPU of its local rank.

    Yields:
        This process's :class:`World` (one process when not launched by torchrun, or when a
        process group is already joined by the caller).

    Raises:
        DistributedError: the group cannot be joined, or a rank lost the others.
    """
    world = world_from_env()
    if not world.distributed:
        yield world
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        yield world
        return
    import torch

    if torch.cuda.is_available():  # each rank on its own GPU, whatever the backend
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    backend = "nccl" if device.startswith("cuda") else "gloo"
    try:
        dist.init_process_group(backend, timeout=timeout())
    except (RuntimeError, ValueError) as e:
        raise DistributedError(
            f"rank {world.rank} cannot join the process group ({backend}): {e}",
            hint="launch with torchrun, and check --master-addr/--rdzv-endpoint and firewalls",
        ) from None
    global _joined
    _joined = True
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    log = logging.getLogger("smokerdet")
    level = log.level
    if not world.is_main:
        log.setLevel(logging.ERROR)
    try:
        yield world
    except Interrupted as e:
        if not world.is_main:  # rank 0 says what was kept and how to go on
            raise _Mirrored(e.exit_code) from None
        raise
    except KeyboardInterrupt:
        if not world.is_main:
            raise _Mirrored(Interrupted.exit_code) from None
        raise
    except SmokerdetError as e:
        if not world.is_main:
            e.message = f"rank {world.rank}: {e.message}"
            e.args = (e.message,)
        raise
    except (dist.DistError, RuntimeError) as e:
        raise lost_ranks(world, e) from None
    finally:
        _flush_output()  # a SIGTERM from now on kills at once
        log.setLevel(level)
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def joined_a_group() -> bool:
    """Whether this process joined a process group at some point of its life.

    Such a process should end with :func:`hard_exit`: DistributedDataParallel in this torch
    keeps references to the gloo process group that ``destroy_process_group`` cannot drop, so
    gloo's threads outlive it and, when the interpreter then shuts down, abort the process
    now and then (SIGABRT, "terminate called without an active exception") after the command
    has succeeded; torchrun then stops the other ranks. ``bench/ddp_exit.py`` counts it.
    """
    return _joined


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def hard_exit(code: object) -> NoReturn:
    """End the process now with ``code`` (as ``sys.exit`` reads it), skipping the interpreter's
    shutdown, for a process that :func:`joined_a_group`. Output is flushed first; files and
    locks were already closed by the command, and the OS releases the rest."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    _flush_output()
    os._exit(status)


def reason(e: BaseException) -> str:
    """The gist of a collective's error: its first sentence, without the source location."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0]


def lost_ranks(world: World, e: BaseException, kept: str = "") -> DistributedError:
    """The error of a rank whose collective failed: another rank died, stopped or hung."""
    return DistributedError(
        f"rank {world.rank} of {world.size} lost the other ranks ({reason(e)})" + kept,
        hint="another rank failed or was stopped: see its message above; a rank silent for "
        f"longer than {TIMEOUT_ENV} seconds also ends the run",
    )


def threads_per_rank() -> int | None:
    """This machine's cores shared among its ranks (None for one process: the default).

    So that N ranks on one machine do not each start a thread per core.
    """
    world = current()
    if not world.distributed:
        return None
    local = _env_int("LOCAL_WORLD_SIZE", world.size)
    return max(1, (os.cpu_count() or 1) // max(1, local))


# ---------------------------------------------------------------------------------------------
# Collectives (no-ops for one process)


def barrier() -> None:
    """Wait until every rank gets here."""
    if current().distributed:
        import torch.distributed as dist

        dist.barrier()


def all_gather(value: T) -> list[T]:
    """Every rank's ``value`` (any picklable object, e.g. a list of any length), by rank."""
    if not current().distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's ``value`` on the main rank, by rank; None on the others."""
    world = current()
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(value, out, dst=0)
    return out


def broadcast(value: T) -> T:
    """The main rank's ``value`` on every rank."""
    if not current().distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64, so counts stay exact)."""
    if not current().distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":  # nccl reduces GPU tensors only
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main rank only; every rank gets its result, or ends with its error.

    For decisions all ranks must share and only one may make: a name with a timestamp, a check
    before the main rank writes. The main rank raises the error itself (and the CLI reports it);
    the others exit quietly with the same exit code.
    """
    world = current()
    if not world.distributed:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    error: BaseException | None = None
    if world.is_main:
        try:
            outcome = (True, fn())
        except SmokerdetError as e:
            outcome, error = (False, e.exit_code), e
        except BaseException as e:  # still tell the others, then fail here
            outcome, error = (False, 1), e
    ok, value = broadcast(outcome)
    if error is not None:
        raise error
    if not ok:
        # torchrun stops every rank once one exits non-zero: give the main rank time to say why.
        time.sleep(MIRROR_GRACE_S)
        raise _Mirrored(int(value))
    return value


__all__ = [
    "DistributedError",
    "World",
    "all_gather",
    "all_sum",
    "barrier",
    "broadcast",
    "current",
    "gather_to_main",
    "hard_exit",
    "joined_a_group",
    "lost_ranks",
    "on_main",
    "session",
    "threads_per_rank",
    "world_from_env",
]
