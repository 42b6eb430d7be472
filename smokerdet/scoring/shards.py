"""Split a predict run into shards, write resumable JSON Lines parts, merge them back.

Torch-free. A run over many photos is cut into ``N`` shards ``0/N`` .. ``N-1/N``: shard ``I``
is the ``I``-th contiguous slice of the expanded inputs (de-duplicated, folders walked in sorted
order, so the same command line gives the same list on every machine). Each shard's results
go to a *part*: a JSON Lines file whose first line is a header naming the shard, the inputs
(their count and SHA-256) and the model, followed by exactly the rows ``predict --json`` prints.
Because the slices are contiguous and in input order, merging the parts is concatenating their
rows in shard order, and the result is byte for byte what one process would have printed.

Appends are line-atomic: each batch of rows goes out in one ``write()`` followed by ``fsync``,
so a run killed at any moment leaves whole lines plus at most one torn last line, which
:func:`open_results` drops when resuming. Rows are written in input order, so the rows already
in a part are always a prefix of its slice, and resuming continues after them.

Example:
    >>> from smokerdet.scoring.shards import parse_shard, bounds
    >>> shard = parse_shard("1/3")
    >>> bounds(10, shard.index, shard.count)
    (3, 6)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smokerdet.distributed import bounds
from smokerdet.errors import ConfigError, SmokerdetError

PART_KIND = "smokerdet-predictions"
PART_VERSION = 1


class PartError(SmokerdetError):
    """A results part is unreadable, or does not belong with the run or the other parts."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str, flag: str = "--shard") -> Shard:
    """Parse ``I/N`` (shard ``I`` of ``N``, counted from 0).

    Raises:
        ConfigError: not two integers with ``0 <= I < N`` (exit code 2, names ``flag``).
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if m is None:
        raise ConfigError(
            f"{flag} must look like I/N (shard I of N, counted from 0), got {spec!r}",
            hint=f"e.g. {flag} 0/4 ... {flag} 3/4 for four jobs",
        )
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ConfigError(
            f"{flag} {spec}: the shard number must be between 0 and {max(0, count - 1)} "
            f"(shards are counted from 0), and there must be at least one shard",
            hint=f"e.g. {flag} 0/2 and {flag} 1/2 for two jobs",
        )
    return Shard(index, count)


def blocks(n: int, rank: int, size: int, block: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` blocks of ``block`` items that rank ``rank`` of ``size`` scores
    when ranks take turns (block ``b`` goes to rank ``b % size``).

    Taking turns lets one writer stream everyone's results in input order while holding only
    one round of blocks in memory.
    """
    return [(s, min(n, s + block)) for s in range(rank * block, n, size * block)]


def fingerprint_paths(paths: Sequence[str]) -> str:
    """SHA-256 of an ordered list of input paths (each JSON-quoted, one per line)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(json.dumps(p, ensure_ascii=True).encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class PartHeader:
    """The first line of a part: which shard of which inputs, scored by which model."""

    shard: str
    inputs: int
    inputs_sha256: str
    start: int
    stop: int
    model: dict[str, Any]
    kind: str = PART_KIND
    version: int = PART_VERSION

    @classmethod
    def create(cls, paths: Sequence[str], shard: Shard, model: dict[str, Any]) -> PartHeader:
        """The header of ``shard`` of ``paths`` (all the run's inputs, in input order)."""
        start, stop = bounds(len(paths), shard.index, shard.count)
        return cls(str(shard), len(paths), fingerprint_paths(paths), start, stop, dict(model))

    @property
    def rows(self) -> int:
        """How many rows the complete part holds."""
        return self.stop - self.start

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=True) + "\n"

    @classmethod
    def parse(cls, line: str, where: Path) -> PartHeader:
        try:
            d = json.loads(line)
            if d.get("kind") != PART_KIND:
                raise ValueError("no smokerdet header line")
            if d.get("version") != PART_VERSION:
                raise ValueError(f"format version {d.get('version')}, expected {PART_VERSION}")
            return cls(**d)
        except (ValueError, TypeError, AttributeError) as e:
            raise PartError(
                f"{where} is not a smokerdet results file ({e})",
                hint="results files are written by `smokerdet predict --output FILE`",
            ) from None


def _complete_lines(path: Path) -> Iterator[str]:
    """The complete lines of ``path``, streamed (a torn last line is left out).

    Raises:
        OSError, UnicodeDecodeError: the file cannot be read.
    """
    with path.open("rb") as f:
        for raw in f:  # splits on b"\n" only
            if not raw.endswith(b"\n"):
                return
            yield raw.decode("utf-8")


def _row(line: str, where: Path, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
        str(row["path"])
        return row
    except (ValueError, TypeError, KeyError):
        raise PartError(f"{where}, line {number}: not a result row") from None


def _scan(path: Path, flag: str) -> tuple[PartHeader, int]:
    """A part's header and how many complete rows follow it, checking each row."""
    try:
        lines = _complete_lines(path)
        first = next(lines, None)
        if first is None:
            raise PartError(f"{path} is empty or holds only a torn line")
        header = PartHeader.parse(first, path)
        n = 0
        for n, line in enumerate(lines, start=1):
            _row(line, path, n + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise PartError(f"{flag}: cannot read {path}: {e}") from None
    return header, n


def read_part(path: Path) -> tuple[PartHeader, list[str]]:
    """A part's header and its complete row lines (a torn last line is left out).

    Raises:
        PartError: unreadable, no header, or a damaged row before the last line.
    """
    header, _ = _scan(path, "read")
    return header, list(_complete_lines(path))[1:]


@dataclass
class MergedParts:
    """Checked parts of one run; iterating gives their row lines in input order."""

    total: int
    paths: list[Path]

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            lines = _complete_lines(path)
            next(lines)  # the header
            yield from lines


def merge_parts(paths: Sequence[Path], flag: str = "--merge") -> MergedParts:
    """Check that ``paths`` are the complete parts of one run, and join them in input order.

    Reads each part once to check it, and again (streaming) when iterated, so memory does
    not grow with the number of rows.

    Raises:
        ConfigError: no parts given.
        PartError: parts of different inputs or models, a shard missing or given twice, or a
            part that is not complete (its run was interrupted: resume it first).
    """
    if not paths:
        raise ConfigError(f"{flag} needs the part files to join")
    parts = [(*_scan(Path(p), flag), Path(p)) for p in paths]
    first, _, first_path = parts[0]
    count = parse_shard(first.shard, flag).count
    by_index: dict[int, Path] = {}
    for header, n_rows, path in parts:
        for key in ("inputs", "inputs_sha256", "model"):
            if getattr(header, key) != getattr(first, key):
                what = "models" if key == "model" else "inputs"
                raise PartError(
                    f"{path} and {first_path} were made from different {what} ({key} differs)",
                    hint=f"{flag} only joins the parts of one run (same PATHs, same --model)",
                )
        shard = parse_shard(header.shard, flag)
        if shard.count != count:
            raise PartError(f"{path} is shard {header.shard}, {first_path} is of {count} shards")
        if shard.index in by_index:
            raise PartError(f"shard {header.shard} is given twice: {by_index[shard.index]}, {path}")
        if n_rows != header.rows:
            raise PartError(
                f"{path} is incomplete: {n_rows} of {header.rows} rows",
                hint="finish it with the same command plus --resume, then merge",
            )
        by_index[shard.index] = path
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise PartError(
            f"{flag} is missing shard{'s' if len(missing) > 1 else ''} "
            + ", ".join(f"{i}/{count}" for i in missing),
            hint="pass every part of the run",
        )
    return MergedParts(first.inputs, [by_index[i] for i in range(count)])


class ResultsWriter:
    """Appends whole lines to a results file: one ``write()`` and one ``fsync`` per batch."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def append(self, lines: Sequence[str]) -> None:
        """Write ``lines`` (each ending in ``\\n``) at the end of the file, durably."""
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it in one go; the loop guards short writes
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_results(
    path: Path,
    header: PartHeader,
    expected: Sequence[str],
    *,
    resume: bool,
    flag: str = "--output",
) -> tuple[ResultsWriter, int, int]:
    """Open a part for appending; with ``resume``, keep the rows already in it.

    Args:
        path: the results file.
        header: this run's header; a resumed file must carry the same one.
        expected: the paths of this part's rows, in order.
        resume: continue an existing file (a missing file starts fresh).
        flag: the option that named ``path``, for messages.

    Returns:
        The writer, how many of ``expected`` are already done (a prefix), and how many of
        those are error rows.

    Raises:
        ConfigError: the file exists and ``resume`` is off.
        PartError: the file belongs to other inputs, another shard or another model, or
            its rows are not this run's.
    """
    done = failed = keep = 0
    if path.exists() and not resume:
        raise ConfigError(
            f"{flag} {path} already exists",
            hint="pass --resume to continue it, or remove it to start again",
        )
    if resume and path.exists():
        try:
            lines = _complete_lines(path)
            first = next(lines, None)
            if first is not None:
                if PartHeader.parse(first, path) != header:
                    raise PartError(
                        f"{flag} {path} holds results of other inputs, another --shard or "
                        "another model",
                        hint="resume with the same PATHs, --shard and --model, or use another file",
                    )
                keep = len(first.encode("utf-8"))
                for i, line in enumerate(lines):
                    row = _row(line, path, i + 2)
                    if i >= len(expected) or row["path"] != expected[i]:
                        raise PartError(
                            f"{flag} {path}, line {i + 2}: not the row this run expects"
                        )
                    failed += row.get("error") is not None
                    keep += len(line.encode("utf-8"))
                    done = i + 1
        except (OSError, UnicodeDecodeError) as e:
            raise PartError(f"cannot read {flag} {path}: {e}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(fd, keep)  # drops a torn last line (or a torn header)
        os.lseek(fd, keep, os.SEEK_SET)
    except OSError as e:
        raise PartError(f"cannot write {flag} {path}: {e.strerror or e}") from None
    writer = ResultsWriter(path, fd)
    if keep == 0:
        writer.append([header.line()])
    return writer, done, failed


__all__ = [
    "MergedParts",
    "PartError",
    "PartHeader",
    "ResultsWriter",
    "Shard",
    "blocks",
    "bounds",
    "fingerprint_paths",
    "merge_parts",
    "open_results",
    "parse_shard",
    "read_part",
]
