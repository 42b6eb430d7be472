"""Proofs for results files: every append is on disk (fsynced) before the next one starts,
so a crash loses at most the batch being written, never rows already reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

from smokerdet.scoring.shards import PartHeader, Shard, open_results

MODEL = {"name": "tiny", "weights_sha256": "ab" * 32}


def test_every_results_append_is_fsynced_before_the_next(tmp_path, monkeypatch):
    paths = [f"{i}.jpg" for i in range(7)]
    out = tmp_path / "results.jsonl"
    header = PartHeader.create(paths, Shard(), MODEL)
    events: list[tuple[str, int]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(out):
            events.append(("write", len(data)))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(out):
            events.append(("fsync", 0))
        real_fsync(fd)

    writer, _, _ = open_results(out, header, paths, resume=False)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    batches = [paths[:3], paths[3:4], paths[4:]]
    with writer:
        for batch in batches:
            before = len(events)
            writer.append([json.dumps({"path": p}) + "\n" for p in batch])
            kinds = [kind for kind, _ in events[before:]]
            # the batch's bytes went out, then one fsync, before append returned
            assert kinds and kinds[-1] == "fsync" and "write" in kinds, events[before:]
            assert kinds.count("fsync") == 1
    assert [k for k, _ in events].count("fsync") == len(batches)
    assert Path(out).read_text().count("\n") == 1 + len(paths)
