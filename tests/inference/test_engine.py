"""The ONNX engine against the torch path: preprocessing, probabilities, heatmaps, bad files."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, NO_TORCH
from hostile_files import build_corpus
from PIL import Image

import smokerdet
from smokerdet.cli import app
from smokerdet.data.images import DataConfig, load_image, preprocess
from smokerdet.errors import CheckpointError, ConfigError, ImageLoadError
from smokerdet.inference.backend import open_engine
from smokerdet.inference.batch import score_paths
from smokerdet.inference.engine import normalise_cam
from smokerdet.models.export import export_onnx
from smokerdet.paths import default_model_dir

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "default_examples.json"
CONFIGS = [
    DataConfig(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 1.0, "letterbox"),
    DataConfig(48, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875, "crop"),
    DataConfig(40, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), "bilinear", 1.0, "squash"),
]


def odd_images() -> dict[str, bytes]:
    """Photos in the modes and shapes that preprocessing must get right."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    out: dict[str, bytes] = {}

    def save(name: str, im: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()

    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright photo is taller than wide
    save("exif.jpg", photo, "JPEG", exif=exif.tobytes())
    save("gray.png", photo.convert("L"), "PNG")
    save("cmyk.jpg", photo.convert("CMYK"), "JPEG")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    save("rgba.png", rgba, "PNG")
    save("wide.png", photo.resize((900, 7)), "PNG")
    save("tall.png", photo.resize((5, 700)), "PNG")
    save("pixel.png", photo.resize((1, 1)), "PNG")
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.resize_mode)
def test_the_one_preprocessor_gives_the_same_input_from_a_path_and_from_bytes(
    cfg: DataConfig, tmp_path: Path
):
    size = cfg.input_size
    for name, blob in odd_images().items():
        path = tmp_path / name
        path.write_bytes(blob)
        got = preprocess(load_image(path), cfg)
        from_bytes = preprocess(load_image(blob), cfg)
        assert got.dtype == np.float32 and got.shape == (3, size, size), name
        assert np.isfinite(got).all(), name
        assert np.array_equal(got, from_bytes), name
    upright = load_image(odd_images()["exif.jpg"])
    assert upright.size == (60, 90)  # EXIF orientation applied


def test_empty_and_corrupt_files_get_a_human_reason(tmp_path: Path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="<bytes>: empty file"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match=r"upload\.png: not an image"):
        load_image(b"<html>", name="upload.png")


def shipped_parity(paths: list[str]) -> tuple[dict, dict]:
    onnx_rows = {p.path: p for p in smokerdet.predict(paths, model="default", backend="onnx")}
    torch_rows = {
        p.path: p for p in smokerdet.predict(paths, model="default", backend="torch", device="cpu")
    }
    assert set(onnx_rows) == set(torch_rows)
    return onnx_rows, torch_rows


def test_onnx_and_torch_agree_on_examples_and_the_hostile_corpus(tmp_path: Path):
    expect = build_corpus(tmp_path / "nasty")
    onnx_rows, torch_rows = shipped_parity([str(EXAMPLES), str(tmp_path / "nasty")])
    ok = 0
    for path, row in onnx_rows.items():
        other = torch_rows[path]
        assert (row.error is None) == (other.error is None), path
        if Path(path).parent == tmp_path / "nasty" and expect.get(Path(path).name) == "error":
            assert row.error, path
        if row.error is None:
            assert abs(row.probability - other.probability) <= 1e-3, path
            assert row.label == other.label, path
            ok += 1
    assert ok >= 12 + sum(v == "ok" for v in expect.values())


def test_an_exported_tiny_model_agrees_with_torch(model_copy: Path):
    export_onnx("tiny")
    onnx_rows = list(smokerdet.predict([EXAMPLES], model="tiny", backend="onnx"))
    torch_rows = list(smokerdet.predict([EXAMPLES], model="tiny", backend="torch"))
    assert len(onnx_rows) == len(torch_rows) == 12
    for a, b in zip(onnx_rows, torch_rows, strict=True):
        assert a.path == b.path and a.label == b.label
        assert abs(a.probability - b.probability) <= 1e-3


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_golden_probabilities_on_both_backends(backend: str):
    golden = json.loads(GOLDEN.read_text())
    preds = {Path(p.path).name: p for p in smokerdet.predict([EXAMPLES], backend=backend)}
    assert set(preds) == set(golden)
    for name, expected in golden.items():
        assert preds[name].label == expected["label"], name
        assert preds[name].probability == pytest.approx(expected["probability"], abs=2e-4), name


def test_predict_with_the_shipped_model_never_imports_torch(tmp_path: Path):
    env = {**os.environ, "SMOKERDET_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", NO_TORCH, "predict", str(EXAMPLES / "smoking_0001.jpg")]
    out = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "imported: []" in out.stderr
    row = json.loads(out.stdout)
    assert row["label"] == "smoking" and row["model"] == "default"


def test_cam_in_numpy_equals_grad_cam_in_torch():
    images = [load_image(p, draft_size=256) for p in sorted(EXAMPLES.glob("*.jpg"))[:4]]
    images.append(images[0].resize((300, 120)))  # a wide photo: the letterbox is undone
    onnx_engine = open_engine("default", backend="onnx")
    torch_engine = open_engine("default", backend="torch", device="cpu")
    batch = onnx_engine._stack(images)
    p_onnx, maps_onnx = onnx_engine.maps_arrays(batch)
    p_torch, maps_torch = torch_engine.maps_arrays(batch)
    assert np.abs(np.array(p_onnx) - np.array(p_torch)).max() <= 1e-3
    for a, b in zip(maps_onnx, maps_torch, strict=True):
        assert np.abs(normalise_cam(a) - normalise_cam(b)).max() <= 1e-3
    for (_, a), (_, b), im in zip(
        onnx_engine.score_with_heatmaps(images),
        torch_engine.score_with_heatmaps(images),
        images,
        strict=True,
    ):
        assert a.shape == b.shape == (im.height, im.width)
        assert 0.0 <= a.min() and a.max() <= 1.0
        assert np.abs(a - b).max() <= 1e-3
    # the wide photo: its heatmap covers the photo, not the grey bands around it
    assert onnx_engine.score_with_heatmaps([images[-1]])[0][1].shape == (120, 300)


def test_torch_and_onnx_score_through_the_one_preprocessor():
    paths = sorted(EXAMPLES.glob("*.jpg"))[:5]
    onnx_engine = open_engine("default", backend="onnx")
    torch_engine = open_engine("default", backend="torch", device="cpu")
    cfg = onnx_engine.meta.data_config
    batch = np.stack([preprocess(load_image(p, draft_size=cfg.input_size), cfg) for p in paths])
    on_onnx, on_torch = onnx_engine.run(batch), torch_engine.run(batch)
    assert np.abs(np.subtract(on_onnx.probabilities, on_torch.probabilities)).max() <= 1e-3
    assert np.abs(on_onnx.pooled - on_torch.pooled).max() <= 1e-3 * np.abs(on_onnx.pooled).max()
    for engine, out in ((onnx_engine, on_onnx), (torch_engine, on_torch)):
        rows = list(score_paths(engine, paths, workers=0))
        assert [r.probability for r in rows] == pytest.approx(out.probabilities, abs=1e-6)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_flip_tta_averages_the_photo_and_its_mirror_once(backend: str):
    engine = open_engine("default", backend=backend, device="cpu")
    assert engine.meta.tta == "hflip"
    images = [load_image(p, draft_size=256) for p in sorted(EXAMPLES.glob("*.jpg"))[:3]]
    x = engine._stack(images)
    mirror = np.ascontiguousarray(x[..., ::-1])
    out = engine.run(x, maps=True)
    (logit, feats, maps), (logit_m, feats_m, maps_m) = (
        engine.forward_maps(x),
        engine.forward_maps(mirror),
    )
    expected = 1 / (1 + np.exp(-(logit.astype(np.float64) + logit_m) / 2))
    assert out.probabilities == pytest.approx(expected.tolist(), abs=1e-6)
    pooled = (feats.mean(axis=(2, 3)) + feats_m.mean(axis=(2, 3))) / 2
    assert np.abs(out.pooled - pooled).max() <= 1e-5
    # the mirror's map is flipped back before averaging: heat stays where the photo's is
    assert np.abs(out.maps - (maps + maps_m[..., ::-1]) / 2).max() <= 1e-4 * np.abs(maps).max()
    assert engine.score_arrays(x) == out.probabilities


def test_predict_writes_heatmaps_named_in_the_rows(tmp_path: Path):
    out = tmp_path / "heat"
    out.mkdir()
    paths = [EXAMPLES / "smoking_0001.jpg", EXAMPLES / "notsmoking_0001.jpg", tmp_path / "nope"]
    rows = list(smokerdet.predict(paths, heatmaps=out))
    assert [r.to_dict()["heatmap"] is not None for r in rows] == [True, True, False]
    for row, path in zip(rows[:2], paths, strict=False):
        png = Image.open(row.heatmap)
        assert png.size == Image.open(path).size and Path(row.heatmap).parent == out
    assert "heatmap" not in next(iter(smokerdet.predict(paths[:1]))).to_dict()


def test_heatmaps_into_a_missing_or_read_only_folder_fail_first(tmp_path: Path):
    with pytest.raises(ConfigError, match="--heatmaps .*heat: the folder .*missing does not exist"):
        smokerdet.predict([EXAMPLES], heatmaps=tmp_path / "missing" / "heat")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="--heatmaps .*a-file is a file, not a folder"):
        smokerdet.predict([EXAMPLES], heatmaps=tmp_path / "a-file")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        # Root writes into any mode-555 folder; /sys is a read-only filesystem even for root.
        ro = Path("/sys/kernel")
    with pytest.raises(ConfigError, match="--heatmaps .* is not writable"):
        smokerdet.predict([EXAMPLES], heatmaps=ro)


def test_torch_only_model_falls_back_with_one_line_and_heatmaps_by_grad_cam(
    model_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (model_copy / "model.onnx").unlink()  # train exports; a folder from before it did has none
    engine = open_engine("tiny")
    assert engine.backend == "torch"
    assert "tiny has no model.onnx: scoring through torch" in caplog.text
    out = tmp_path / "heat"
    out.mkdir()
    (row,) = smokerdet.predict([EXAMPLES / "smoking_0002.jpg"], model="tiny", heatmaps=out)
    assert row.heatmap and Path(row.heatmap).is_file()
    with pytest.raises(CheckpointError, match="has no model.onnx for --backend onnx"):
        open_engine("tiny", backend="onnx")
    with pytest.raises(ConfigError, match="--backend must be auto, onnx or torch"):
        open_engine("tiny", backend="tensorrt")


def predict_cli(runner, model: Path):
    r = runner.invoke(app, ["predict", str(EXAMPLES / "smoking_0001.jpg"), "--model", str(model)])
    return r.exit_code, r.output


def test_bad_onnx_files_are_refused_naming_the_file_and_field(
    runner, model_copy: Path, tmp_path: Path
):
    shipped = (default_model_dir() / "model.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(shipped[: len(shipped) // 2])
    code, output = predict_cli(runner, truncated)
    assert code == 1 and "truncated.onnx is not a valid ONNX model" in output

    proto = onnx.load_from_string(shipped)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(proto.SerializeToString())
    code, output = predict_cli(runner, bare)
    assert code == 1 and "bare.onnx: no smokerdet metadata (field 'format'" in output

    proto = onnx.load_from_string(shipped)
    for entry in proto.metadata_props:
        if entry.key == "data_config":
            entry.value = entry.value.replace('"input_size": 256', '"input_size": 224')
    resized = tmp_path / "resized.onnx"
    resized.write_bytes(proto.SerializeToString())
    code, output = predict_cli(runner, resized)
    assert code == 1 and "resized.onnx: input shape" in output
    assert "'data_config.input_size' = 224" in output

    # an ONNX file made from other weights than the folder's: stale, never silently used
    shutil.copy(default_model_dir() / "model.onnx", model_copy / "model.onnx")
    code, output = predict_cli(runner, model_copy)
    assert code == 1 and "model.onnx: field 'weights_sha256'" in output
    assert "does not match the weights of" in output


def test_worker_processes_give_the_same_rows_in_order(tmp_path: Path):
    build_corpus(tmp_path / "nasty")
    paths = [str(EXAMPLES), str(tmp_path / "nasty")]
    here = [p.to_dict() for p in smokerdet.predict(paths, backend="onnx", workers=0)]
    pool = [p.to_dict() for p in smokerdet.predict(paths, backend="onnx", workers=2)]
    assert len(here) > 30 and here == pool


def test_decoding_in_threads_for_a_gpu_gives_the_same_rows_in_order(tmp_path: Path):
    # The GPU layout (threads decode ahead, the model runs here), driven on the CPU.
    from smokerdet.inference.batch import _score_decoding_in_threads, _Task

    build_corpus(tmp_path / "nasty")
    paths = sorted(EXAMPLES.glob("*.jpg")) + sorted((tmp_path / "nasty").iterdir())
    engine = open_engine("default", backend="onnx")
    here = list(score_paths(engine, paths, batch_size=3, workers=0))
    threads = list(_score_decoding_in_threads(engine, paths, _Task(3), 2))
    assert [s.path for s in threads] == [str(p) for p in paths] == [s.path for s in here]
    assert [s.index for s in threads] == list(range(len(paths)))
    assert [(s.error, s.sha256) for s in threads] == [(s.error, s.sha256) for s in here]
    for a, b in zip(here, threads, strict=True):
        assert a.probability == b.probability or abs(a.probability - b.probability) <= 1e-6


def test_evaluate_gives_the_same_metrics_on_both_backends():
    on_onnx = smokerdet.evaluate(data=EXAMPLES, split="all", model="default", backend="onnx")
    on_torch = smokerdet.evaluate(
        data=EXAMPLES, split="all", model="default", backend="torch", device="cpu"
    )
    assert on_onnx.model_path.name == "model.onnx" and on_torch.model_path.is_dir()
    assert on_onnx.metrics.accuracy == on_torch.metrics.accuracy
    assert on_onnx.metrics.roc_auc == on_torch.metrics.roc_auc
    for (a, ya, pa), (b, yb, pb) in zip(on_onnx.probabilities, on_torch.probabilities, strict=True):
        assert a == b and ya == yb and abs(pa - pb) <= 1e-3
