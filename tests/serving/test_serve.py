"""smokerdet serve: a real server in a subprocess, real HTTP, hostile requests, start-up faults."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import EXAMPLES, NO_TORCH, synthetic_image
from PIL import Image
from serve_process import Server

import smokerdet

ROOT = Path(__file__).resolve().parents[2]
from serve_process import TOKEN  # noqa: E402


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("serve-default"), "--model", "default")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve-tiny")
    args = ["--model", str(trained_model), "--token", TOKEN, "--collect", str(tmp / "collected")]
    limits = ["--max-body-mb", "1", "--max-files", "3", "--max-pixels", "1000000"]
    server = Server(tmp, *args, *limits)
    server.collected = tmp / "collected"  # type: ignore[attr-defined]
    yield server
    assert server.stop() == 0, server.stderr()


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.jpg"))


# --- the shipped model: same answers as `smokerdet predict` ---------------------------------


def test_labels_and_probabilities_equal_predict_on_the_examples(default_server):
    expected = {
        Path(p.path).name: p for p in smokerdet.predict([EXAMPLES], model="default", workers=0)
    }
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in examples()]
    with default_server.client() as c:
        r = c.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert [row["path"] for row in rows] == [p.name for p in examples()]
    for row in rows:
        want = expected[row["path"]]
        assert row["label"] == want.label and row["error"] is None
        assert row["probability"] == pytest.approx(want.probability, abs=1e-6)
        assert row["threshold"] == want.threshold and row["model"] == "default"
    assert len(rows) == 12


def photo_row_cases(tmp: Path) -> list[Path]:
    """A shipped example, a 640x640 JPEG (decoded at 320x320 by the JPEG draft) and a
    synthetic photo unlike anything the model was trained on."""
    big = tmp / "big.jpg"
    Image.open(EXAMPLES / "smoking_0002.jpg").resize((640, 640)).save(big, quality=92)
    odd = tmp / "odd.jpg"
    synthetic_image(1, 3, size=96).save(odd)
    return [EXAMPLES / "smoking_0001.jpg", big, odd]


def test_the_api_row_is_the_predict_json_row(default_server, runner, tmp_path):
    from smokerdet.cli import app
    from smokerdet.inference import FIELDS

    rows = []
    for photo in photo_row_cases(tmp_path):
        r = runner.invoke(app, ["predict", str(photo), "--json", "--model", "default"])
        assert r.exit_code == 0, r.output
        cli_row = json.loads(r.stdout)
        with default_server.client() as c:
            answer = c.post("/v1/predict", files=[("files", (photo.name, photo.read_bytes()))])
        assert answer.status_code == 200, answer.text
        (api_row,) = answer.json()["results"]
        assert list(api_row) == list(cli_row) == list(FIELDS), photo.name
        assert (api_row["path"], cli_row["path"]) == (photo.name, str(photo))
        for key in FIELDS[1:]:
            if isinstance(cli_row[key], float):
                assert api_row[key] == pytest.approx(cli_row[key], abs=1e-6), (photo.name, key)
            else:
                assert api_row[key] == cli_row[key], (photo.name, key)
        assert (api_row["width"], api_row["height"]) == Image.open(photo).size, photo.name
        rows.append(api_row)
    assert [(r["width"], r["height"]) for r in rows[:2]] == [(250, 250), (640, 640)]
    assert [r["familiar"] for r in rows] == [True, True, False]  # the shipped model has stats


def test_raw_body_heatmap_is_a_png_of_the_photo_size(default_server):
    photo = EXAMPLES / "smoking_0001.jpg"
    with default_server.client() as c:
        r = c.post(
            "/v1/predict?heatmap=1",
            content=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
    assert r.status_code == 200, r.text
    (row,) = r.json()["results"]
    assert row["label"] == "smoking"
    prefix = "data:image/png;base64,"
    assert row["heatmap"].startswith(prefix)
    heat = Image.open(io.BytesIO(base64.b64decode(row["heatmap"][len(prefix) :])))
    assert heat.format == "PNG" and heat.size == Image.open(photo).size
    assert heat.mode == "RGBA" and heat.getextrema()[3][1] > 0  # something is hot


def test_serving_the_shipped_model_never_imports_torch(tmp_path):
    server = Server(tmp_path, "--model", "default", runner=("-c", NO_TORCH))
    try:
        photo = (EXAMPLES / "smoking_0001.jpg").read_bytes()
        with server.client() as c:
            assert c.get("/v1/model").json()["backend"] == "onnx"
            r = c.post(
                "/v1/predict?heatmap=1", content=photo, headers={"Content-Type": "image/jpeg"}
            )
        assert r.status_code == 200, r.text
        (row,) = r.json()["results"]
        assert row["label"] == "smoking" and row["heatmap"].startswith("data:image/png")
    finally:
        assert server.stop() == 0, server.stderr()
    assert "imported: []" in server.stderr(), server.stderr()


def test_model_endpoint_matches_model_json(default_server):
    meta = json.loads((ROOT / "smokerdet" / "assets" / "default" / "model.json").read_text())
    with default_server.client() as c:
        info = c.get("/v1/model").json()
    for key in ("arch", "threshold", "class_names", "tta", "val_metrics", "weights_sha256"):
        assert info[key] == meta[key], key
    assert info["input_size"] == meta["data_config"]["input_size"]
    assert info["versions"] == meta["versions"] and info["name"] == "default"
    assert "train_args" not in info  # local paths of the training machine stay there


def test_health_page_docs_and_no_review_without_collect(default_server, tmp_path):
    with default_server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["status"] == "ready"
        page = c.get("/")
        assert page.status_code == 200 and "smokerdet review" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from the internet
        assert c.get("/docs").status_code == 200
        assert 'rel="icon" href="data:image/svg+xml,' in page.text  # no request for it
        icon = c.get("/favicon.ico")  # what a browser asks for on a page without one
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.content.startswith(b"<svg ")
        assert "/v1/predict" in c.get("/openapi.json").json()["paths"]
        assert c.get("/v1/review").json()["enabled"] is False
        photo = (EXAMPLES / "smoking_0001.jpg").read_bytes()
        r = c.post(
            "/v1/review?label=smoking", content=photo, headers={"Content-Type": "image/jpeg"}
        )
        assert r.status_code == 404 and "--collect" in r.json()["error"]


# --- hostile requests: each gets its status and a JSON error; the server keeps serving -------


def _multipart(name: bytes, data: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand, so that the file name goes out byte for byte."""
    boundary = "smokerdet-test-boundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="files"; filename="'
        + name
        + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


GOOD = jpeg(synthetic_image(1, 1, size=64))
BOMB = png(Image.new("L", (5000, 5000)))  # 25 Mpx in a few kB; the limit here is 1 Mpx
HOSTILE = {
    # case: (headers, body or files, expected status, a word of the error)
    "non-image bytes": ({"Content-Type": "image/jpeg"}, b"hello, not a photo", 422, "not an image"),
    "truncated jpeg": ({"Content-Type": "image/jpeg"}, GOOD[: len(GOOD) // 2], 422, "truncated"),
    "decompression bomb": ({"Content-Type": "image/png"}, BOMB, 413, "too large"),
    "wrong content type": ({"Content-Type": "text/plain"}, GOOD, 415, "content type"),
    "no content type": ({}, GOOD, 415, "content type"),
    "empty body": ({"Content-Type": "image/jpeg"}, b"", 400, "empty"),
    "oversize body": ({"Content-Type": "image/jpeg"}, os.urandom(3 * 1024 * 1024), 413, "limit"),
    "bad multipart": ({"Content-Type": "multipart/form-data"}, b"junk", 400, "multipart"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_request_gets_status_and_json_error(tiny_server, case):
    headers, body, status, word = HOSTILE[case]
    with tiny_server.client(TOKEN) as c:
        r = c.post("/v1/predict", content=body, headers=headers)
        assert r.status_code == status, r.text
        assert word in r.json()["error"]
        ok = c.post("/v1/predict", content=GOOD, headers={"Content-Type": "image/jpeg"})
        assert ok.status_code == 200 and ok.json()["results"][0]["label"] is not None


def test_tiny_image_too_many_files_and_a_mixed_batch(tiny_server):
    one = png(Image.new("RGB", (1, 1), (200, 60, 40)))
    with tiny_server.client(TOKEN) as c:
        r = c.post("/v1/predict", content=one, headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and r.json()["results"][0]["label"] is not None
        four = [("files", (f"{i}.jpg", GOOD, "image/jpeg")) for i in range(4)]
        r = c.post("/v1/predict", files=four)
        assert r.status_code == 413 and "--max-files" in r.json()["error"]
        mixed = [("files", ("a.jpg", GOOD, "image/jpeg")), ("files", ("b.jpg", b"x", "image/jpeg"))]
        rows = c.post("/v1/predict", files=mixed).json()["results"]
        assert rows[0]["label"] is not None and rows[0]["error"] is None
        assert rows[1]["label"] is None and "not an image" in rows[1]["error"]
        r = c.post("/v1/predict?threshold=2", content=GOOD, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 422 and "threshold" in r.json()["error"]
        assert c.get("/v1/predict").status_code == 405


def test_file_name_with_traversal_and_nul_is_only_a_label(tiny_server):
    body, ctype = _multipart(b"../../etc/passwd\x00.jpg", GOOD)
    with tiny_server.client(TOKEN) as c:
        r = c.post("/v1/predict", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    (row,) = r.json()["results"]
    assert row["path"] == "passwd.jpg" and row["label"] is not None
    assert not (tiny_server.collected / "etc").exists()


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_missing_or_wrong_token_is_401(tiny_server, token):
    with tiny_server.client(token) as c:
        for method, path in (("POST", "/v1/predict"), ("GET", "/v1/model"), ("GET", "/v1/review")):
            r = c.request(method, path, content=GOOD, headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.get("/healthz").status_code == 200  # probes stay open for orchestrators
    with tiny_server.client(TOKEN) as c:
        assert c.get("/v1/model").status_code == 200


def test_memory_stays_bounded_under_bombs_and_oversize_bodies(tiny_server):
    def rss_mb() -> float:
        status = Path(f"/proc/{tiny_server.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    if not Path(f"/proc/{tiny_server.proc.pid}/status").exists():
        pytest.skip("no /proc on this system")
    big = os.urandom(3 * 1024 * 1024)
    with tiny_server.client(TOKEN) as c:
        c.post("/v1/predict", content=BOMB, headers={"Content-Type": "image/png"})
        before = rss_mb()
        for _ in range(10):
            assert (
                c.post(
                    "/v1/predict", content=BOMB, headers={"Content-Type": "image/png"}
                ).status_code
                == 413
            )
            assert (
                c.post(
                    "/v1/predict", content=big, headers={"Content-Type": "image/jpeg"}
                ).status_code
                == 413
            )
    assert rss_mb() - before < 100


# --- reviews with --collect -------------------------------------------------------------------


def test_review_saves_content_addressed_and_a_re_review_moves(tiny_server):
    root = tiny_server.collected
    photo = jpeg(synthetic_image(0, 5, size=48))
    with tiny_server.client(TOKEN) as c:
        r = c.post("/v1/review?label=smoking", files=[("files", ("../x.jpg", photo, "image/jpeg"))])
        assert r.status_code == 200, r.text
        digest = r.json()["sha256"]
        assert [p.name for p in (root / "smoking").iterdir()] == [f"{digest}.jpg"]
        assert (root / "smoking" / f"{digest}.jpg").read_bytes() == photo
        for _ in range(2):  # correcting twice still leaves exactly one copy
            r = c.post(
                "/v1/review?label=not_smoking",
                content=photo,
                headers={"Content-Type": "image/jpeg"},
            )
            assert r.status_code == 200
        assert list((root / "smoking").iterdir()) == []
        assert [p.name for p in (root / "not_smoking").iterdir()] == [f"{digest}.jpg"]
        assert c.get("/v1/review").json()["counts"] == {"not_smoking": 1, "smoking": 0}
        bad = c.post(
            "/v1/review?label=smoking", content=b"nope", headers={"Content-Type": "image/jpeg"}
        )
        assert bad.status_code == 422 and "not saved" in bad.json()["error"]
        r = c.post(
            "/v1/review?label=../../x", content=photo, headers={"Content-Type": "image/jpeg"}
        )
        assert r.status_code == 422 and "label" in r.json()["error"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "not_smoking",
        f"not_smoking/{digest}.jpg",
        "smoking",
    ]


# --- start-up faults ---------------------------------------------------------------------------


def _serve(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SMOKERDET_HOME": str(tmp / "home")}
    return subprocess.run(
        [sys.executable, "-m", "smokerdet", "serve", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_a_model_that_fails_to_load_stops_serve_with_exit_1(tmp_path, trained_model):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((trained_model / "model.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not the weights")
    r = _serve("--model", str(broken), "--port", "0", tmp=tmp_path)
    assert r.returncode == 1
    # this folder has no model.onnx: one line says torch runs it, then the load fails
    assert "\nError: " in r.stderr and "does not match the weights_sha256" in r.stderr
    assert "Serving" not in r.stderr


def test_a_port_in_use_is_a_clear_error(tmp_path, trained_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _serve("--model", str(trained_model), "--port", str(port), tmp=tmp_path)
    assert r.returncode == 1
    assert f"Error: port {port} on 127.0.0.1 is already in use (--port)" in r.stderr
    assert "Hint: " in r.stderr


def test_bad_limits_name_their_flag(tmp_path, trained_model):
    r = _serve("--model", str(trained_model), "--max-files", "0", tmp=tmp_path)
    assert r.returncode == 2 and "Error: --max-files must be at least 1, got 0" in r.stderr


def test_public_host_without_token_warns(tmp_path, trained_model):
    server = Server(tmp_path, "--model", str(trained_model), "--host", "0.0.0.0")
    try:
        assert "Warning: listening on 0.0.0.0 without --token" in server.stderr()
    finally:
        assert server.stop() == 0


# --- last: SIGTERM drains what is in flight, then exits 0 --------------------------------------


def test_sigterm_drains_in_flight_requests_and_exits_0(default_server):
    # Phases, not delays: half the body is on the wire, then SIGTERM, then (once the server
    # refuses new connections, i.e. it is draining) the rest. The answer must still come.
    photo = examples()[0].read_bytes()
    half_sent, go_on = threading.Event(), threading.Event()
    answer: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        yield photo[: len(photo) // 2]
        half_sent.set()  # runs once the first half has been written to the socket
        go_on.wait(60)
        yield photo[len(photo) // 2 :]

    def post() -> None:
        with default_server.client() as c:
            headers = {"Content-Type": "image/jpeg"}
            answer["r"] = c.post("/v1/predict?heatmap=1", content=body(), headers=headers)

    worker = threading.Thread(target=post)
    worker.start()
    assert half_sent.wait(60)
    default_server.proc.send_signal(signal.SIGTERM)
    draining = False
    for _ in range(600):  # at most 60 s, in 0.1 s steps, until a new connection is refused
        try:
            with httpx.Client(base_url=default_server.url, timeout=1, trust_env=False) as c:
                c.get("/healthz")
        except httpx.TransportError:
            draining = True
            break
        time.sleep(0.1)
    go_on.set()
    worker.join(timeout=120)
    assert draining, "the server never stopped accepting connections after SIGTERM"
    assert answer["r"].status_code == 200, answer["r"].text
    assert all(row["heatmap"] for row in answer["r"].json()["results"])
    assert default_server.proc.wait(timeout=60) == 0
