"""A corpus of nasty files: predict, eval and train never crash, never hang, and say why."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, write_flat
from hostile_files import build_corpus, needs_proc, png_bomb

from smokerdet.cli import app
from smokerdet.data.images import load_image
from smokerdet.data.layout import find_dataset
from smokerdet.errors import ImageLoadError


@needs_proc
def test_predict_survives_the_corpus_and_escapes_names(runner, model_copy, tmp_path):
    expect = build_corpus(tmp_path / "nasty")
    csv_path = tmp_path / "out.csv"
    started = time.perf_counter()
    r = runner.invoke(app, ["predict", str(tmp_path / "nasty"), "--json", "--csv", str(csv_path)])
    elapsed = time.perf_counter() - started
    assert r.exit_code == 3, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert (
        len(r.stdout.splitlines()) == len(rows) == len(expect)
    )  # one line per file, newlines escaped
    by_name = {Path(row["path"]).name: row for row in rows}
    assert set(by_name) == set(expect)
    for name, outcome in expect.items():
        row = by_name[name]
        if outcome == "ok":
            assert row["error"] is None and row["label"] in ("smoking", "not_smoking"), name
            assert 0.0 <= row["probability"] <= 1.0, name
        else:
            assert outcome == "error"
            assert row["error"] and row["label"] is None and row["probability"] is None, name
    assert by_name["bomb.png"]["error"].startswith("too large")
    assert "Input/output error" in by_name["unreadable.jpg"]["error"]
    assert "corrupt" in by_name["huffman.jpg"]["error"]
    assert elapsed < 2 * len(expect)
    with open(csv_path, newline="", encoding="utf-8") as f:
        parsed = list(csv.DictReader(f))
    assert {Path(row["path"]).name for row in parsed} == set(expect)


@needs_proc
def test_eval_and_train_skip_the_corpus_and_report_it(runner, tmp_path):
    data = write_flat(tmp_path / "data", n_per_class=10)
    expect = build_corpus(data, prefix="smoking_")
    bad = {n for n, o in expect.items() if o == "error"} - {"smoking_loop.jpg"}  # loop: no file
    splits = find_dataset(data)  # the split train uses: same folder, same default seed
    used = {s.path.name for s in [*splits.train, *splits.val]}
    assert bad & used and bad - used  # the corpus lands in both the used and the test split
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "t", "--json"])
    assert r.exit_code == 0, r.output
    skipped = json.loads(r.stdout)["skipped"]
    # each bad file train read (its train and val splits) is reported once, with its reason
    assert sorted(Path(s["path"]).name for s in skipped) == sorted(bad & used)
    assert all(s["error"] for s in skipped)
    r = runner.invoke(app, ["eval", "--data", str(data), "--split", "all", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert sorted(Path(s["path"]).name for s in report["skipped"]) == sorted(bad)
    assert report["n"] + len(report["skipped"]) == 20 + len(expect) - 1  # the loop is no file


@pytest.mark.parametrize(
    "width, height, message",
    [
        (20000, 20000, "too large"),  # 400 MP: Pillow's own guard refuses it on open
        # 72 MP: over our 64 MP cap, under Pillow's: only our header check stops it
        (9000, 8000, "too large: 9000x8000 pixels"),
    ],
    ids=["400MP", "72MP"],
)
def test_bomb_is_rejected_fast(tmp_path, width, height, message):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(width, height))
    t0 = time.perf_counter()
    with pytest.raises(ImageLoadError, match=message):
        load_image(path)
    assert time.perf_counter() - t0 < 1.0
