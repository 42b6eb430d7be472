"""Shard specs, slices, parts with headers, merging and resumable results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smokerdet.distributed import bounds
from smokerdet.errors import ConfigError
from smokerdet.scoring.shards import (
    PartError,
    PartHeader,
    Shard,
    blocks,
    merge_parts,
    open_results,
    parse_shard,
    read_part,
)

MODEL = {"name": "tiny", "weights_sha256": "ab" * 32}


def rows_for(paths: list[str]) -> list[str]:
    return [json.dumps({"path": p, "label": "smoking"}) + "\n" for p in paths]


def write_part(path: Path, paths: list[str], shard: Shard, model=MODEL, n_rows=None) -> None:
    header = PartHeader.create(paths, shard, model)
    mine = paths[header.start : header.stop]
    writer, done, failed = open_results(path, header, mine, resume=False)
    assert done == failed == 0
    with writer:
        writer.append(rows_for(mine)[:n_rows])


@pytest.mark.parametrize(
    "spec,expected", [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), (" 1 / 2 ", Shard(1, 2))]
)
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected
    assert str(expected) == spec.replace(" ", "")


@pytest.mark.parametrize("spec", ["3/2", "0/0", "a/b", "1", "-1/2", "2/2", ""])
def test_bad_shard_spec_is_a_usage_error_naming_the_flag(spec):
    with pytest.raises(ConfigError) as e:
        parse_shard(spec)
    assert "--shard" in str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("n,count", [(0, 3), (1, 4), (10, 3), (7, 7), (100, 8)])
def test_bounds_cover_every_item_once_in_order(n, count):
    slices = [bounds(n, i, count) for i in range(count)]
    flat = [j for start, stop in slices for j in range(start, stop)]
    assert flat == list(range(n))
    sizes = [stop - start for start, stop in slices]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n,size,block", [(0, 2, 4), (5, 3, 2), (17, 2, 4), (3, 5, 1)])
def test_blocks_taken_in_turns_cover_every_item_once(n, size, block):
    per_rank = [blocks(n, r, size, block) for r in range(size)]
    rounds = max(len(b) for b in per_rank)
    order = [j for k in range(rounds) for b in per_rank if k < len(b) for j in range(*b[k])]
    assert order == list(range(n))


def test_merge_joins_parts_in_input_order(tmp_path):
    paths = [f"img{i:02d}.jpg" for i in range(7)]
    parts = []
    for i in (2, 0, 1):  # given out of order
        write_part(tmp_path / f"p{i}.jsonl", paths, Shard(i, 3))
        parts.append(tmp_path / f"p{i}.jsonl")
    assert list(merge_parts(parts)) == rows_for(paths)


def test_more_shards_than_inputs_writes_empty_parts(tmp_path):
    paths = ["a.jpg"]
    parts = [tmp_path / f"p{i}.jsonl" for i in range(3)]
    for i, part in enumerate(parts):
        write_part(part, paths, Shard(i, 3))
    assert [len(read_part(p)[1]) for p in parts] == [0, 0, 1]
    assert list(merge_parts(parts)) == rows_for(paths)


def test_merge_refuses_parts_of_other_inputs_or_models(tmp_path):
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    write_part(tmp_path / "p0.jsonl", paths, Shard(0, 2))
    write_part(tmp_path / "other-inputs.jsonl", [*paths, "d.jpg"], Shard(1, 2))
    write_part(tmp_path / "other-model.jsonl", paths, Shard(1, 2), model={"name": "x"})
    for name, word in (("other-inputs", "inputs"), ("other-model", "models")):
        with pytest.raises(PartError, match=f"different {word}"):
            list(merge_parts([tmp_path / "p0.jsonl", tmp_path / f"{name}.jsonl"]))


def test_merge_refuses_missing_duplicate_and_incomplete_parts(tmp_path):
    paths = [f"{i}.jpg" for i in range(6)]
    write_part(tmp_path / "p0.jsonl", paths, Shard(0, 3))
    write_part(tmp_path / "p1.jsonl", paths, Shard(1, 3))
    write_part(tmp_path / "p2.jsonl", paths, Shard(2, 3), n_rows=1)
    p0, p1, p2 = (tmp_path / f"p{i}.jsonl" for i in range(3))
    with pytest.raises(PartError, match="missing shard 2/3"):
        list(merge_parts([p0, p1]))
    with pytest.raises(PartError, match="given twice"):
        list(merge_parts([p0, p0, p1]))
    with pytest.raises(PartError, match="incomplete: 1 of 2 rows") as e:
        list(merge_parts([p0, p1, p2]))
    assert "--resume" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="--merge"):
        list(merge_parts([]))


def test_merge_refuses_a_file_that_is_not_a_part(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(rows_for(["a.jpg"])[0])
    with pytest.raises(PartError, match="not a smokerdet results file"):
        list(merge_parts([plain]))


def test_resume_keeps_whole_lines_and_drops_a_torn_one(tmp_path):
    paths = [f"{i}.jpg" for i in range(5)]
    out = tmp_path / "results.jsonl"
    header = PartHeader.create(paths, Shard(), MODEL)
    writer, _, _ = open_results(out, header, paths, resume=False)
    with writer:
        writer.append(rows_for(paths[:2]))
    with out.open("a") as f:  # a kill in the middle of a line
        f.write(rows_for(paths[2:3])[0][:9])
    writer, done, _ = open_results(out, header, paths, resume=True)
    assert done == 2
    with writer:
        writer.append(rows_for(paths[done:]))
    assert out.read_text() == header.line() + "".join(rows_for(paths))


def test_resume_of_a_torn_header_or_missing_file_starts_fresh(tmp_path):
    paths = ["a.jpg"]
    header = PartHeader.create(paths, Shard(), MODEL)
    out = tmp_path / "r.jsonl"
    out.write_text(header.line()[:10])
    writer, done, _ = open_results(out, header, paths, resume=True)
    writer.close()
    assert done == 0 and out.read_text() == header.line()
    writer, done, _ = open_results(tmp_path / "new.jsonl", header, paths, resume=True)
    writer.close()
    assert done == 0


def test_existing_output_without_resume_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("precious\n")
    header = PartHeader.create(["a.jpg"], Shard(), MODEL)
    with pytest.raises(ConfigError, match="--output .* already exists") as e:
        open_results(out, header, ["a.jpg"], resume=False)
    assert "--resume" in (e.value.hint or "")
    assert out.read_text() == "precious\n"


def test_resume_refuses_another_runs_file(tmp_path):
    paths = ["a.jpg", "b.jpg"]
    out = tmp_path / "r.jsonl"
    write_part(out, paths, Shard())
    other = PartHeader.create(paths, Shard(), {"name": "other"})
    with pytest.raises(PartError, match="another --shard or another model"):
        open_results(out, other, paths, resume=True)
    header = PartHeader.create(paths, Shard(), MODEL)
    with pytest.raises(PartError, match="line 2: not the row"):
        open_results(out, header, ["b.jpg", "a.jpg"], resume=True)


def test_resume_counts_the_error_rows_already_done(tmp_path):
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    out = tmp_path / "r.jsonl"
    header = PartHeader.create(paths, Shard(), MODEL)
    writer, _, _ = open_results(out, header, paths, resume=False)
    with writer:
        writer.append([json.dumps({"path": "a.jpg", "error": "cannot identify image"}) + "\n"])
        writer.append(rows_for(["b.jpg"]))
    writer, done, failed = open_results(out, header, paths, resume=True)
    writer.close()
    assert (done, failed) == (2, 1)
