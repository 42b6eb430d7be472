"""smokerdet predict: every input kind, every output format, the exit codes."""

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from conftest import EXAMPLES, synthetic_image
from PIL import Image

import smokerdet
from smokerdet.cli import app
from smokerdet.inference.rows import FIELDS, columns
from smokerdet.paths import default_model_dir
from smokerdet.scoring.evaluate import evaluate
from smokerdet.scoring.predict import expand_inputs

#: The row of predict --json and --csv, in order: scripts and the README rely on it.
ROW_FIELDS = [
    *("path", "label", "probability", "threshold", "model", "error"),
    *("familiar", "familiarity", "width", "height", "sha256"),
    *("frame", "time", "notes"),
]


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        synthetic_image(1, i).save(folder / f"smoking_{i}.jpg")
        synthetic_image(0, 10 + i).save(folder / "sub" / f"notsmoking_{i}.PNG")
    (folder / "notes.txt").write_text("not an image, and not an image extension")
    return folder


def test_directory_is_walked_recursively_by_extension(runner, model_copy, photos):
    r = runner.invoke(app, ["predict", str(photos), "--json", "--model", "tiny"])
    assert r.exit_code == 0, r.output
    rows = jsonl(r.stdout)
    assert len(rows) == 6
    assert {Path(row["path"]).suffix for row in rows} == {".jpg", ".PNG"}
    for row in rows:
        assert list(row) == ROW_FIELDS
        assert row["label"] in ("smoking", "not_smoking") and row["error"] is None
        assert 0.0 <= row["probability"] <= 1.0 and row["model"] == "tiny"
    r = runner.invoke(app, ["predict", str(photos), "--json", "--no-recursive", "-m", "tiny"])
    assert len(jsonl(r.stdout)) == 3


def test_files_globs_and_duplicates_keep_a_stable_order(runner, model_copy, photos):
    first = photos / "smoking_0.jpg"
    pattern = str(photos / "sub" / "*.PNG")
    r = runner.invoke(app, ["predict", str(first), pattern, str(first), str(photos), "--json"])
    assert r.exit_code == 0, r.output
    paths = [Path(row["path"]).name for row in jsonl(r.stdout)]
    assert paths[0] == "smoking_0.jpg"
    assert paths[1:4] == ["notsmoking_0.PNG", "notsmoking_1.PNG", "notsmoking_2.PNG"]
    assert len(paths) == len(set(paths)) == 6


def test_paths_from_stdin(runner, model_copy, photos):
    listing = f"{photos / 'smoking_1.jpg'}\n\n{photos / 'sub'}\n"
    r = runner.invoke(app, ["predict", "-", "--json"], input=listing)
    assert r.exit_code == 0, r.output
    assert [Path(x["path"]).name for x in jsonl(r.stdout)] == [
        "smoking_1.jpg",
        "notsmoking_0.PNG",
        "notsmoking_1.PNG",
        "notsmoking_2.PNG",
    ]


def test_nul_separated_paths_from_stdin_keep_odd_names_whole(runner, model_copy, tmp_path):
    odd = [tmp_path / "a b.jpg", tmp_path / "new\nline.jpg"]
    for i, path in enumerate(odd):
        synthetic_image(i % 2, i).save(path, format="JPEG")
    listing = "\0".join(map(str, odd)) + "\0"  # as `find -print0` writes it
    found = expand_inputs(["-"], stdin=io.StringIO(listing))
    assert found.items == [(str(p), None) for p in odd] and not found.warnings
    r = runner.invoke(
        app, ["predict", "-", "--json", "-m", "tiny", "--workers", "0"], input=listing
    )
    assert r.exit_code == 0, r.output
    rows = jsonl(r.stdout)
    assert [x["path"] for x in rows] == list(map(str, odd)) and not any(x["error"] for x in rows)


def test_missing_path_and_corrupt_file_in_a_batch_exit_3(runner, model_copy, photos):
    (photos / "smoking_9.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = runner.invoke(app, ["predict", str(photos), str(photos / "gone.jpg"), "--json", "-b", "2"])
    assert r.exit_code == 3, r.output
    rows = {Path(x["path"]).name: x for x in jsonl(r.stdout)}
    assert len(rows) == 8
    assert rows["gone.jpg"]["error"] == "no such file or directory"
    assert rows["gone.jpg"]["label"] is None and rows["gone.jpg"]["probability"] is None
    assert "corrupt" in rows["smoking_9.jpg"]["error"]
    assert sum(1 for x in rows.values() if x["error"] is None) == 6
    assert "2 failed" in r.stderr


def test_no_usable_input_exits_1(runner, model_copy, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["predict", str(empty)])
    assert r.exit_code == 1
    assert f"Warning: no images in folder {empty}" in r.stderr
    assert "Error: no images to label" in r.stderr
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    r = runner.invoke(app, ["predict", str(bad)])
    assert r.exit_code == 1
    assert "0 not smoking at threshold 0.390, 1 failed" in r.stderr


def test_table_output_and_summary(runner, model_copy, photos):
    from smokerdet.models import read_meta

    r = runner.invoke(app, ["predict", str(photos)])
    assert r.exit_code == 0, r.output
    assert "p(smoking)" in r.stdout and "smoking_0.jpg" in r.stdout
    assert "6 images," in r.stderr and "0 failed" in r.stderr and "images/s" in r.stderr
    thr = f"{read_meta(default_model_dir()).threshold:.3f}"  # the shipped model answers
    assert r.stdout.splitlines()[0].endswith(f"label (smoking from p >= {thr})")
    assert f" not smoking at threshold {thr}, 0 failed" in r.stderr
    r = runner.invoke(app, ["predict", str(photos / "smoking_0.jpg")])
    assert r.exit_code == 0 and "1 image, " in r.stderr


def test_csv_output_round_trips(runner, model_copy, photos, tmp_path):
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["predict", str(photos), "--csv", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 6
    assert list(rows[0]) == ROW_FIELDS


def test_json_keys_and_csv_header_are_the_one_row_s(runner, model_copy, photos, tmp_path):
    assert list(FIELDS) == ROW_FIELDS and list(columns(heatmaps=True)) == [*ROW_FIELDS, "heatmap"]
    heat, out = tmp_path / "heat", tmp_path / "out.csv"
    heat.mkdir()
    args = ["predict", str(photos / "smoking_0.jpg"), "-m", "tiny", "--heatmaps", str(heat)]
    r = runner.invoke(app, [*args, "--json", "--csv", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = jsonl(r.stdout)
    assert list(row) == [*ROW_FIELDS, "heatmap"] and Path(row["heatmap"]).parent == heat
    (cells,) = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(cells) == [*ROW_FIELDS, "heatmap"] and cells["heatmap"] == row["heatmap"]


def test_rows_carry_the_photo_s_own_size_and_hash(model_copy, tmp_path):
    big = tmp_path / "big.jpg"  # the tiny model's 32 px input: decoded at 80x80 by the draft
    synthetic_image(1, 4, size=640).save(big, quality=95)
    rotated = tmp_path / "rotated.jpg"  # stored 640x480, shown upright as 480x640
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    synthetic_image(0, 5, size=640).crop((0, 0, 640, 480)).save(rotated, exif=exif.tobytes())
    gone = tmp_path / "gone.jpg"
    rows = list(smokerdet.predict([big, rotated, gone], model="tiny"))
    assert [(r.width, r.height) for r in rows] == [(640, 640), (480, 640), (None, None)]
    assert rows[0].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert rows[2].sha256 is None and rows[2].error


def test_only_filters_rows(runner, model_copy, photos):
    everything = jsonl(
        runner.invoke(app, ["predict", str(photos), "--json", "--threshold", "0"]).stdout
    )
    assert all(x["label"] == "smoking" for x in everything)
    r = runner.invoke(
        app, ["predict", str(photos), "--json", "--threshold", "0", "--only", "not_smoking"]
    )
    assert r.exit_code == 0 and jsonl(r.stdout) == []
    r = runner.invoke(
        app, ["predict", str(photos), "--json", "--threshold", "1", "--only", "not_smoking"]
    )
    assert len(jsonl(r.stdout)) == 6


def test_only_keeps_error_rows_in_json_and_csv(runner, model_copy, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    missing = photos / "missing.jpg"
    out = tmp_path / "only.csv"
    args = ["predict", str(photos), str(missing), "--threshold", "0", "--only", "not_smoking"]
    r = runner.invoke(app, [*args, "--json", "--csv", str(out), "-m", "tiny"])
    assert r.exit_code == 3, r.output
    rows = jsonl(r.stdout)  # every image is "smoking" at threshold 0: only the failures stay
    assert sorted(Path(x["path"]).name for x in rows) == ["broken.jpg", "missing.jpg"]
    assert all(x["error"] and x["label"] is None for x in rows)
    csv_rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [x["path"] for x in csv_rows] == [x["path"] for x in rows]
    r = runner.invoke(app, [*args, "-m", "tiny"])  # the table keeps them too
    assert r.exit_code == 3 and "broken.jpg" in r.stdout and "error: " in r.stdout


def test_table_off_a_terminal_is_one_line_per_image_with_full_paths(runner, model_copy, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "photos"
    deep.mkdir(parents=True)
    for i in range(3):
        synthetic_image(i % 2, i).save(deep / f"photo_{i}.jpg")
    r = runner.invoke(app, ["predict", str(deep), "-m", "tiny"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["path", "p(smoking)", "label"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(deep / f"photo_{i}.jpg") for i in range(3)
    ]
    assert r.stderr.splitlines()[-1].startswith("model tiny: 3 images, ")


def test_heatmaps_folder_is_created_and_the_table_names_each_file(runner, model_copy, photos):
    heat = photos.parent / "heat"
    args = ["predict", str(photos), "-m", "tiny", "--workers", "0", "--heatmaps", str(heat)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[-1] == "heatmap" and len(lines) == 7
    for line in lines[1:]:
        png = Path(line.split()[-1])
        assert png.parent == heat and png.is_file() and Path(line.split()[0]).is_file()
    r = runner.invoke(app, [*args[:-1], str(photos.parent / "no" / "heat")])
    assert r.exit_code == 2, r.output
    assert f"Error: --heatmaps {photos.parent / 'no' / 'heat'}: the folder " in r.stderr
    assert "Hint: create it first, or give --heatmaps a folder inside an existing one" in r.stderr


def test_threshold_override_changes_labels_not_probabilities(runner, model_copy, photos):
    args = ["predict", str(photos), "--json", "--model", "tiny"]
    default = jsonl(runner.invoke(app, args).stdout)
    lowered = jsonl(runner.invoke(app, [*args, "--threshold", "0.0"]).stdout)
    assert [x["probability"] for x in default] == [x["probability"] for x in lowered]
    assert all(x["threshold"] == 0.0 and x["label"] == "smoking" for x in lowered)
    meta = json.loads((model_copy / "model.json").read_text())
    assert all(x["threshold"] == meta["threshold"] for x in default)


def test_bad_threshold_is_a_usage_error(runner, model_copy, photos):
    r = runner.invoke(app, ["predict", str(photos), "--threshold", "1.5"])
    assert r.exit_code == 2
    assert "Error: --threshold must be between 0 and 1, got 1.5" in r.stderr


def test_predict_and_eval_give_identical_probabilities(model_copy):
    report = evaluate(data=EXAMPLES, split="all", model="tiny")
    by_path = {p: prob for p, _, prob in report.probabilities}
    preds = smokerdet.predict(list(by_path), batch_size=5, model="tiny")
    predicted = {p.path: p.probability for p in preds}
    assert predicted == by_path


def test_library_api_returns_predictions(model_copy):
    preds = list(smokerdet.predict([EXAMPLES / "smoking_0001.jpg"], model="tiny"))
    assert len(preds) == 1 and isinstance(preds[0], smokerdet.Prediction)
    assert preds[0].model == "tiny"


def test_latest_without_trained_models_says_so(runner, photos):
    r = runner.invoke(app, ["predict", str(photos), "--model", "latest"])
    assert r.exit_code == 1
    assert "Error: no trained model found (latest)" in r.stderr
    assert "Hint: train one with `smokerdet train`" in r.stderr


def test_expand_inputs_survives_a_symlink_loop(tmp_path):
    (tmp_path / "a").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    synthetic_image(1, 0).save(tmp_path / "a" / "x.jpg")
    found = expand_inputs([tmp_path])
    assert [Path(p).name for p, _ in found.items] == ["x.jpg"]


def test_scoring_in_worker_processes_matches_in_process(model_copy, tmp_path):
    # On a CPU each worker decodes and scores whole batches; order, errors and probabilities
    # must not depend on how many of them there are.
    files = sorted(EXAMPLES.glob("*.jpg"))[:7]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    paths = files[:3] + [broken] + files[3:]
    runs = {
        w: list(smokerdet.predict(paths, workers=w, batch_size=2, device="cpu")) for w in (0, 2)
    }
    for w, preds in runs.items():
        assert [p.path for p in preds] == [str(p) for p in paths], w
        assert [p.error is not None for p in preds] == [p == broken for p in paths], w
    for a, b in zip(runs[0], runs[2], strict=True):
        if a.error is None:
            assert b.probability == pytest.approx(a.probability, abs=1e-6)
            assert a.label == b.label
