"""A corpus of nasty files: predict, eval and train never crash, never hang, and say why."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, synthetic_image, write_flat
from PIL import Image

from smokerdet.cli import app
from smokerdet.data.images import load_image
from smokerdet.data.layout import find_dataset
from smokerdet.errors import ImageLoadError

UNREADABLE_TARGET = "/proc/self/mem"
needs_proc = pytest.mark.skipif(
    not os.path.isfile(UNREADABLE_TARGET), reason="needs Linux /proc for an unreadable file"
)


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels, with a tiny body: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def corrupt_huffman(data: bytes) -> bytes:
    """Scramble the bytes of the JPEG's Huffman tables (DHT segments)."""
    out = bytearray(data)
    i = 0
    while (i := out.find(b"\xff\xc4", i)) != -1:
        length = struct.unpack(">H", out[i + 2 : i + 4])[0]
        for j in range(i + 5, i + 2 + length):
            out[j] = 0xFF
        i += 2 + length
    return bytes(out)


def build_corpus(folder: Path, prefix: str = "") -> dict[str, str]:
    """Write the nasty files; return name -> 'ok' (must be labelled) or 'error'."""
    folder.mkdir(parents=True, exist_ok=True)
    good = synthetic_image(1, 1, size=64)
    jpeg = _jpeg(good)
    png = _png(good)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / f"{prefix}{name}").write_bytes(data)
        expect[f"{prefix}{name}"] = outcome

    put("zero.jpg", b"", "error")
    put("random.jpg", os.urandom(4096), "error")
    put("truncated.jpg", jpeg[: len(jpeg) // 2], "error")
    put("truncated.png", png[: len(png) // 2], "error")
    put("huffman.jpg", corrupt_huffman(jpeg), "error")  # libjpeg: "broken data stream"
    put("page.jpg", b"<!doctype html><html><body>404 not found</body></html>", "error")
    put("one_pixel.png", _png(Image.new("RGB", (1, 1), (9, 9, 9))), "ok")
    put("bomb.png", png_bomb(20000, 20000), "error")
    put("deep16.png", _png(Image.new("I;16", (40, 30), 30000)), "ok")
    put("cmyk.jpg", _jpeg(good.convert("CMYK")), "ok")
    put("progressive.jpg", _jpeg(good, progressive=True), "ok")
    pal = good.convert("P")
    put("palette_transparent.png", _png(pal, transparency=0), "ok")
    put("la.png", _png(good.convert("LA")), "ok")
    frames = [synthetic_image(i % 2, i, 32) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    put("animated.gif", buf.getvalue(), "ok")
    buf = io.BytesIO()
    good.save(buf, format="WEBP")
    put("photo.webp", buf.getvalue(), "ok")
    exif = Image.new("RGB", (40, 20)).getexif()
    exif[0x0112] = 8
    put("rotated.jpg", _jpeg(good, exif=exif.tobytes()), "ok")
    put("with space.jpg", jpeg, "ok")
    put("ünïcødé 写真.jpg", jpeg, "ok")
    put("quo\"te's.jpg", jpeg, "ok")
    put("new\nline.jpg", jpeg, "ok")
    put("comma,semi;colon.jpg", jpeg, "ok")
    (folder / f"{prefix}dir.jpg").mkdir()
    os.symlink(folder / f"{prefix}loop.jpg", folder / f"{prefix}loop.jpg")
    expect[f"{prefix}loop.jpg"] = "error"
    # Unreadable whatever the uid (root reads a chmod-000 file): a symlink to /proc/self/mem.
    # It stats as a regular file, so dataset walks include it, opens fine, and every read at
    # offset 0 fails with EIO (address 0 is never mapped), in this process or in a worker.
    os.symlink(UNREADABLE_TARGET, folder / f"{prefix}unreadable.jpg")
    expect[f"{prefix}unreadable.jpg"] = "error"
    return expect


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
