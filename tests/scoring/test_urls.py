"""Snapshot URLs against a real local server: every way a URL can fail, credentials never shown."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from media import SMOKING, QuietHandler, http_server, jpeg, photo

from smokerdet.errors import UrlError
from smokerdet.scoring.urls import FetchLimits, fetch_snapshot, redact

PHOTO = jpeg(photo(SMOKING))
FAST = FetchLimits(max_bytes=1_000_000, timeout=1.0, max_redirects=3)
sent_bytes: dict[str, int] = {}
release = threading.Event()


class Camera(QuietHandler):
    def do_GET(self) -> None:
        path = self.path
        if path == "/snapshot.jpg":
            self.answer(200, PHOTO, "image/jpeg")
        elif path == "/page":
            self.answer(200, b"<html><body>Camera login</body></html>", "text/html; charset=utf-8")
        elif path == "/loop":
            self.answer(302, b"", "text/plain", Location="/loop-again")
        elif path == "/loop-again":
            self.answer(302, b"", "text/plain", Location="/loop")
        elif path.startswith("/hops/"):
            n = int(path.rsplit("/", 1)[1])
            self.answer(302, b"", "text/plain", Location=f"/hops/{n - 1}" if n else "/snapshot.jpg")
        elif path == "/to-ftp":
            self.answer(302, b"", "text/plain", Location="ftp://127.0.0.1/x.jpg")
        elif path == "/private.jpg":
            sent = self.headers.get("Authorization", "")
            if sent == "Basic " + base64.b64encode(b"admin:hunter2").decode():
                self.answer(200, PHOTO, "image/jpeg")
            else:
                self.answer(401, b"", "text/plain", WWW_Authenticate='Basic realm="cam"')
        elif path in ("/huge-declared", "/huge-streamed"):
            self._huge(declared=path == "/huge-declared")
        elif path == "/silent":
            release.wait(10)
        else:
            self.answer(404, b"no such page", "text/plain")

    def _huge(self, *, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if declared:
            self.send_header("Content-Length", str(2 * 2**30))  # 2 GiB
        self.send_header("Connection", "close")
        self.end_headers()
        sent_bytes[self.path] = 0
        chunk = b"\xff" * 65536
        try:
            for _ in range(2 * 2**30 // len(chunk)):
                self.wfile.write(chunk)
                sent_bytes[self.path] += len(chunk)
        except OSError:
            pass  # the client hung up: what the cap should do


@pytest.fixture(scope="module")
def camera() -> Iterator[str]:
    release.clear()
    with http_server(Camera) as base:
        yield base
    release.set()


def failure(url: str, limits: FetchLimits = FAST) -> UrlError:
    with pytest.raises(UrlError) as e:
        fetch_snapshot(url, limits)
    assert e.value.exit_code == 1
    return e.value


def test_a_snapshot_is_fetched(camera: str) -> None:
    snap = fetch_snapshot(f"{camera}/snapshot.jpg", FAST)
    assert snap.data == PHOTO and snap.content_type == "image/jpeg"


def test_credentials_in_the_url_log_in_and_never_show(camera: str) -> None:
    url = camera.replace("http://", "http://admin:hunter2@")
    assert fetch_snapshot(f"{url}/private.jpg", FAST).data == PHOTO
    wrong = failure(f"{camera.replace('http://', 'http://admin:nope@')}/private.jpg")
    assert (
        str(wrong)
        == f"{camera.replace('http://', 'http://***@')}/private.jpg: HTTP 401 Unauthorized"
    )
    assert "USER:PASSWORD" in (wrong.hint or "")
    for path in ("/page", "/missing", "/loop", "/silent"):
        assert "hunter2" not in str(failure(f"{url}{path}", FetchLimits(timeout=0.3)))


def test_a_web_page_is_not_a_photo(camera: str) -> None:
    e = failure(f"{camera}/page")
    assert str(e) == f"{camera}/page: answered with text/html, not an image"
    assert "snapshot URL" in (e.hint or "")


def test_404(camera: str) -> None:
    e = failure(f"{camera}/nothing-here.jpg")
    assert str(e) == f"{camera}/nothing-here.jpg: HTTP 404 Not Found" and "/snapshot.jpg" in (
        e.hint or ""
    )


def test_redirects_are_followed_up_to_the_limit_and_a_loop_stops(camera: str) -> None:
    assert fetch_snapshot(f"{camera}/hops/2", FAST).data == PHOTO  # 3 redirects: the limit
    assert "too many redirects (HTTP 302" in str(failure(f"{camera}/hops/3"))
    assert (
        str(failure(f"{camera}/loop"))
        == f"{camera}/loop: too many redirects (HTTP 302; a redirect loop?)"
    )
    e = failure(f"{camera}/to-ftp")
    assert str(e) == f"{camera}/to-ftp: redirects to ftp://127.0.0.1/x.jpg, not http(s)"


def test_a_2gb_body_is_refused_without_reading_it(camera: str) -> None:
    began = time.monotonic()
    e = failure(f"{camera}/huge-declared")
    assert str(e) == f"{camera}/huge-declared: is 2048.0 MiB, over the 1,000,000 bytes cap"
    streamed = failure(f"{camera}/huge-streamed")
    assert str(streamed) == f"{camera}/huge-streamed: sent more than the 1,000,000 bytes cap"
    assert time.monotonic() - began < 5
    time.sleep(0.2)  # let the server notice the hang-up
    # The server stops once socket buffers are full: a few MB at most, not 2 GB.
    assert sent_bytes["/huge-streamed"] < 32 * 2**20


def test_a_server_that_never_answers_times_out(camera: str) -> None:
    began = time.monotonic()
    e = failure(f"{camera}/silent", FetchLimits(timeout=0.5))
    assert str(e) == f"{camera}/silent: no answer within 0.5 s"
    assert time.monotonic() - began < 3


def test_a_closed_port_and_a_bad_scheme(camera: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = failure(f"http://user:pw@127.0.0.1:{port}/snapshot.jpg")
    assert str(e).startswith(f"http://***@127.0.0.1:{port}/snapshot.jpg: could not connect (")
    assert "only http:// and https://" in str(failure("file:///etc/passwd"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_is_verified_and_trust_comes_from_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with http_server(Camera, tls=context) as base:
        url = f"{base}/snapshot.jpg"
        e = failure(url)
        assert str(e).startswith(f"{url}: TLS certificate not trusted (self")
        assert "SSL_CERT_FILE" in (e.hint or "")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert fetch_snapshot(url, FAST).data == PHOTO


def test_redact() -> None:
    assert redact("rtsp://admin:p%40ss@10.0.0.5:554/live") == "rtsp://***@10.0.0.5:554/live"
    assert (
        redact("http://token@cam/x?channel=1&pwd=abc&user=bob")
        == "http://***@cam/x?channel=1&pwd=***&user=***"
    )
    assert (
        redact("failed: rtsp://a:b@h/1 and http://c:d@h/2")
        == "failed: rtsp://***@h/1 and http://***@h/2"
    )
    assert redact("/dev/video0") == "/dev/video0" and redact("http://cam/a@b") == "http://cam/a@b"
