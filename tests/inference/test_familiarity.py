"""Familiarity: the stats' round trip, few photos, the shipped model's scores on both backends,
and the notes for missing, corrupt or mismatched stats."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, TINY_TRAIN_ARGS, write_flat
from PIL import Image

import smokerdet
from smokerdet.cli import app
from smokerdet.inference.backend import open_engine
from smokerdet.inference.familiarity import (
    FAMILIAR_SHARE,
    FAMILIARITY_FILE,
    Familiarity,
    fit,
    fit_for_model,
    load_for,
    save,
)
from smokerdet.models import sidecars
from smokerdet.paths import default_model_dir

SHIPPED = default_model_dir()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


@pytest.fixture
def notes() -> Iterator[list[str]]:
    """What the ``smokerdet`` logger says during the test (whatever its propagation)."""
    logger = logging.getLogger("smokerdet")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def shipped_copy(smokerdet_home: Path) -> Path:
    """The shipped model, copied into this test's data dir as 'shipped'."""
    dest = smokerdet_home / "models" / "shipped"
    shutil.copytree(SHIPPED, dest)
    return dest


def strip(folder: Path) -> None:
    """Make ``folder`` a model from before familiarity: no stats beside it or in its ONNX file."""
    (folder / FAMILIARITY_FILE).unlink()
    assert sidecars.embed(folder)
    assert "familiarity" not in open_engine(folder).metadata


def familiarity_lines(stderr: str) -> list[str]:
    """The lines of a run's stderr about familiarity stats (not its summary line)."""
    return [line for line in stderr.splitlines() if "familiarity" in line]


def clusters(n: int, seed: int, dim: int = 48) -> np.ndarray:
    """Features with a few strong directions and a little noise in all the others."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(6, dim))
    return rng.normal(size=(n, 6)) * 3 @ basis + rng.normal(scale=0.3, size=(n, dim)) + 5


def test_fit_round_trip_flags_far_points_and_keeps_95_percent_of_calibration():
    train, val = clusters(400, 1), clusters(400, 2)
    # Gaussian features: no log compression (log_scale=0), the PPCA alone
    stats = fit(train, val, dims=8, weights_sha256="ab" * 32, log_scale=0)
    assert stats.familiar(val).mean() == pytest.approx(FAMILIAR_SHARE, abs=0.01)
    assert 0.9 <= stats.familiar(clusters(1000, 3)).mean() <= 0.99  # new draws, same source
    far = clusters(5, 4) + 20 * np.eye(48)[7]  # off in a direction the training never used
    assert not stats.familiar(far).any()
    again = Familiarity.from_bytes(stats.to_bytes())
    np.testing.assert_allclose(again.score(val), stats.score(val), rtol=1e-5)
    assert (again.cut, again.weights_sha256, again.n_train, again.n_val, again.log_scale) == (
        pytest.approx(stats.cut),
        "ab" * 32,
        400,
        400,
        0.0,
    )


def test_fit_needs_two_photos_and_tolerates_no_validation():
    with pytest.raises(ValueError, match="at least 2 training photos, got 1"):
        fit(clusters(1, 1), None)
    with pytest.raises(ValueError, match="look all alike"):
        fit(np.ones((3, 48)), None)
    stats = fit(clusters(20, 1), None, dims=64)  # more dims than photos: capped, not singular
    assert stats.components.shape == (48, 19) and stats.n_val == 0
    assert (stats.method, stats.calibration) == ("ppca-mahalanobis", "training")
    assert np.isfinite(stats.score(clusters(3, 2))).all()


def test_few_photos_get_isotropic_stats_calibrated_leave_one_out():
    stats = fit(clusters(4, 1), None, log_scale=0)
    assert stats.components.shape == (48, 0) and stats.n_train == 4 and stats.n_val == 0
    assert (stats.method, stats.calibration) == ("isotropic-mahalanobis", "leave-one-out")
    # Leave-one-out, a new photo of the same source is as likely as any of the 4 to be the
    # farthest: on average about 4 in 5 count as familiar (measured from the mean they made
    # themselves, the 4 would set a cut that lets in half of them).
    new = clusters(1000, 3)
    shares = [fit(clusters(4, seed), None, log_scale=0).familiar(new).mean() for seed in range(40)]
    assert 0.7 <= np.mean(shares) <= 0.9
    assert not stats.familiar(clusters(5, 4) + 100 * np.eye(48)[7]).any()
    again = Familiarity.from_bytes(stats.to_bytes())
    assert (again.method, again.calibration, again.n_train) == (stats.method, stats.calibration, 4)
    np.testing.assert_allclose(again.score(clusters(3, 5)), stats.score(clusters(3, 5)), rtol=1e-5)
    with_val = fit(clusters(4, 1), clusters(6, 2), log_scale=0)
    assert (with_val.calibration, with_val.n_val) == ("validation", 6)


def test_a_model_trained_on_few_photos_has_familiarity_stats(runner, tmp_path, smokerdet_home):
    data = write_flat(tmp_path / "few", n_per_class=5)  # 4 training photos, 4 to validate
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "few"])
    assert r.exit_code == 0, r.output
    folder = smokerdet_home / "models" / "few"
    blob = (folder / FAMILIARITY_FILE).read_bytes()
    stats = Familiarity.from_bytes(blob)
    assert (stats.n_train, stats.n_val, stats.method) == (4, 4, "isotropic-mahalanobis")
    assert open_engine(folder).metadata["familiarity"] == sidecars.encode(blob)  # its ONNX too
    rows = list(smokerdet.predict([data], model="few"))
    assert rows and all(r.familiarity is not None for r in rows)


@pytest.mark.parametrize(
    "damage",
    [b"not a safetensors file at all", b""],
    ids=["garbage", "empty"],
)
def test_bad_bytes_are_a_value_error(damage: bytes):
    with pytest.raises(ValueError, match="not a safetensors file"):
        Familiarity.from_bytes(damage)


def test_shipped_model_has_valid_small_stats_for_its_weights():
    path = SHIPPED / FAMILIARITY_FILE
    assert path.stat().st_size < 1_000_000
    stats = Familiarity.from_bytes(path.read_bytes())
    meta = json.loads((SHIPPED / "model.json").read_text())
    assert stats.weights_sha256 == meta["weights_sha256"]
    assert stats.n_val == 180 and stats.dim == 1280


def test_onnx_and_torch_give_the_same_familiarity(notes):
    photos = sorted(EXAMPLES.glob("*.jpg"))
    rows = {}
    for backend in ("onnx", "torch"):
        rows[backend] = list(smokerdet.predict(photos, model="default", backend=backend))
    for a, b in zip(rows["onnx"], rows["torch"], strict=True):
        assert a.familiarity is not None and b.familiarity is not None
        assert a.familiarity == pytest.approx(b.familiarity, rel=1e-3)
        assert a.familiar is (a.familiarity >= 1.0)
        assert a.to_dict()["familiarity"] == a.familiarity
    # the examples are the model's own kind of photo: no warning
    assert not any("look unlike" in line for line in notes)
    assert sum(r.familiar for r in rows["onnx"]) >= len(photos) - 1


def test_worker_processes_return_the_same_familiarity(tmp_path: Path):
    photos = [tmp_path / f"p{i:02d}.jpg" for i in range(40)]
    sources = sorted(EXAMPLES.glob("*.jpg"))
    for i, p in enumerate(photos):
        shutil.copy(sources[i % len(sources)], p)
    here = list(smokerdet.predict(photos, model="default", backend="onnx", workers=0))
    pool = list(smokerdet.predict(photos, model="default", backend="onnx", workers=2))
    assert [r.familiarity for r in here] == pytest.approx([r.familiarity for r in pool])


def test_noise_photos_are_unfamiliar_with_one_warning(runner, tmp_path: Path):
    rng = np.random.default_rng(0)
    for i in range(6):
        noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(noise).save(tmp_path / f"noise{i}.png")
    r = runner.invoke(app, ["predict", str(tmp_path), "--model", "default", "--json"])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("look unlike the photos this model was trained on") == 1
    assert "6 of 6 photos (100%)" in r.stderr
    assert "smokerdet train --init default --data YOUR_PHOTOS" in r.stderr
    assert "(YOUR_PHOTOS holding smoking/ and not_smoking/ subfolders, or smoking_*.jpg" in r.stderr
    rows = [p.to_dict() for p in smokerdet.predict([tmp_path], model="default")]
    assert [row["familiar"] for row in rows] == [False] * 6
    assert all(row["familiarity"] < 1.0 for row in rows)


def test_missing_stats_mean_none_and_one_note(runner, shipped_copy: Path):
    strip(shipped_copy)
    r = runner.invoke(app, ["predict", str(EXAMPLES), "--model", "shipped", "--json"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == len(list(EXAMPLES.glob("*.jpg")))
    assert familiarity_lines(r.stderr) == [
        "Note: shipped has no familiarity stats: predictions carry no familiarity score "
        "(`smokerdet export shipped --refit-familiarity DATA` fits them)"
    ]
    assert "look unlike" not in r.stderr
    rows = [p.to_dict() for p in smokerdet.predict([EXAMPLES], model="shipped")]
    assert rows and all(row["familiar"] is None and row["familiarity"] is None for row in rows)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_corrupt_stats_file_is_a_warning_naming_it(runner, shipped_copy: Path, backend: str):
    path = shipped_copy / FAMILIARITY_FILE
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    sidecars.embed(shipped_copy)  # so its ONNX file carries none either
    r = runner.invoke(app, ["predict", str(EXAMPLES / "smoking_0001.jpg"), "-m", "shipped",
                            "--json", "--backend", backend])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["label"] == "smoking"
    assert r.stderr.count(f"Warning: {path} is not valid (not a safetensors file") == 1
    (line,) = familiarity_lines(r.stderr)  # one line, naming the file, then the summary
    assert line.endswith("predictions carry no familiarity score (`smokerdet export shipped "
                         "--refit-familiarity DATA` fits them)")  # fmt: skip
    (row,) = smokerdet.predict([EXAMPLES / "smoking_0001.jpg"], model="shipped")
    assert row.familiar is None and row.familiarity is None


def test_stats_file_of_other_weights_is_refused(runner, shipped_copy: Path):
    stats = Familiarity.from_bytes((shipped_copy / FAMILIARITY_FILE).read_bytes())
    other = Familiarity(**{**stats.__dict__, "weights_sha256": "0" * 64})
    save(other, shipped_copy)  # and the ONNX file, made from the model's weights, drops them
    assert "familiarity" not in open_engine(shipped_copy).metadata
    r = runner.invoke(app, ["predict", str(EXAMPLES / "smoking_0001.jpg"), "-m", "shipped", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["familiarity"] is None
    assert familiarity_lines(r.stderr) == [
        f"Warning: {shipped_copy / FAMILIARITY_FILE} belongs to other weights (weights_sha256 "
        f"000000000000..., the model's is {stats.weights_sha256[:12]}...): predictions carry "
        "no familiarity score (`smokerdet export shipped --refit-familiarity DATA` fits them)"
    ]


def test_bad_stats_inside_the_onnx_file_fall_back_to_the_folder_and_say_so(
    notes, shipped_copy: Path
):
    from smokerdet.models.onnx_format import read_props, with_props

    onnx_file = shipped_copy / "model.onnx"
    blob = onnx_file.read_bytes()
    onnx_file.write_bytes(with_props(blob, {**read_props(blob), "familiarity": "not base64!"}))
    (row,) = smokerdet.predict([EXAMPLES / "smoking_0001.jpg"], model="shipped")
    assert row.familiarity is not None  # the folder's own file, which is valid
    assert notes == [
        f"WARNING: field 'familiarity' of {onnx_file} is not valid (not base64): "
        f"using {shipped_copy / FAMILIARITY_FILE} instead"
    ]


def test_fit_for_model_on_a_trained_model(model_copy: Path, notes, tmp_path: Path):
    strip(model_copy)  # training fits them; a model from before did not
    engine = open_engine(model_copy)
    assert load_for(engine) is None and any("has no familiarity" in n for n in notes)
    photos = sorted(EXAMPLES.glob("*.jpg"))
    path = fit_for_model(model_copy, photos[:10], photos[10:])
    assert path == model_copy / FAMILIARITY_FILE
    engine = open_engine(model_copy)
    assert engine.metadata["familiarity"] == sidecars.encode(path.read_bytes())  # both places
    stats = load_for(engine)
    assert stats is not None and stats.n_train == 10 and stats.n_val == len(photos) - 10
    rows = list(smokerdet.predict(photos, model="tiny"))
    assert all(r.familiarity is not None for r in rows)
    before = path.read_bytes()
    assert fit_for_model(model_copy, photos[:1], []) is None  # too few: a note, no file change
    assert path.read_bytes() == before
    assert any("tiny has no familiarity stats: too few to describe" in n for n in notes)


def test_score_with_features_matches_score():
    from smokerdet.data.images import load_image

    engine = open_engine("default", backend="onnx")
    images = [load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))[:3]]
    pairs = engine.score_with_features(images)
    assert [p for p, _ in pairs] == pytest.approx(engine.score(images), abs=1e-6)
    assert all(f.shape == (1280,) and (f >= 0).all() for _, f in pairs)  # pooled ReLU6 maps
    assert engine.score_with_features([]) == []
