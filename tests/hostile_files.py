"""Nasty files for the hostile-input proofs: corrupt, truncated, bombs, odd modes, odd names."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from conftest import synthetic_image
from PIL import Image

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
