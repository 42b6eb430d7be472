"""Real media and real local servers for the camera tests: videos made with PyAV from the
example photos, an MJPEG stream that drops, a snapshot camera, a webhook receiver.

Every server listens on 127.0.0.1 on a free port and is stopped by its context manager.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMOKING = EXAMPLES / "smoking_0001.jpg"
NOT_SMOKING = EXAMPLES / "notsmoking_0001.jpg"


def photo(path: Path, size: tuple[int, int] = (256, 256)) -> Image.Image:
    """An example photo as an RGB image of ``size`` (even sides, as yuv420p needs)."""
    return Image.open(path).convert("RGB").resize(size, Image.Resampling.BILINEAR)


def scene(seconds: Sequence[tuple[Path, float]], size: tuple[int, int] = (256, 256)):
    """(image, seconds) segments: e.g. 3 s not smoking, 4 s smoking, 3 s not smoking."""
    return [(photo(p, size), s) for p, s in seconds]


def make_video(
    path: Path,
    segments: Sequence[tuple[Image.Image, float]],
    *,
    fps: int = 25,
    gop: int | None = None,
    bframes: int | None = None,
    rotation: int | None = None,
    times: Sequence[float] | None = None,
    codec: str = "libx264",
) -> Path:
    """Encode ``segments`` (each image held for its seconds) at ``fps`` into ``path``.

    ``times`` gives each frame's own timestamp instead (variable frame rate; a millisecond
    time base). ``bframes`` puts that many B-frames between references. ``rotation`` writes a display matrix (degrees counterclockwise).
    """
    frames = [im for im, seconds in segments for _ in range(round(seconds * fps))]
    import av

    width, height = segments[0][0].size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"preset": "ultrafast", "crf": "23"} if codec == "libx264" else {}
        if gop is not None:
            options["g"] = str(gop)
        if bframes is not None:  # ultrafast has none; frames that nothing refers to
            options["bf"] = str(bframes)
        stream.codec_context.options = options
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, im in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.asarray(im), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An AAC file with one audio stream and no video."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(round(seconds * 44100 / 1024)):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def free_port() -> int:
    """A port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(im: Image.Image) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def nearest(image: Image.Image, candidates: dict[str, Image.Image]) -> str:
    """Which candidate ``image`` was made from (the smallest mean difference at 16x16)."""

    def small(im: Image.Image) -> np.ndarray:
        return np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.float32)

    seen = small(image)
    return min(candidates, key=lambda k: float(np.abs(small(candidates[k]) - seen).mean()))


# --- local servers --------------------------------------------------------------------------


@contextmanager
def http_server(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None, port: int = 0
) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1; yields the base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)


@dataclass
class MjpegCamera:
    """An MJPEG stream: each connection sends ``per_connection`` frames, then drops mid-frame.

    ``pictures(n)`` gives the n-th frame sent over all connections.
    """

    pictures: Callable[[int], bytes]
    per_connection: int = 10
    interval: float = 0.02
    connections: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    gone: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def serve(self, port: int = 0) -> Iterator[str]:
        camera = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with camera.lock:
                    camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for _ in range(camera.per_connection):
                        if camera.gone.is_set():  # the camera was switched off
                            return
                        with camera.lock:
                            data = camera.pictures(camera.sent)
                            camera.sent += 1
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(data)}\r\n\r\n".encode()
                            + data
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        time.sleep(camera.interval)
                    # Drop mid-frame, as a camera losing power or network does.
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + data[:300])
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

        self.gone.clear()
        try:
            with http_server(Handler, port=port) as base:
                yield f"{base}/video.mjpg"
        finally:
            self.gone.set()


@dataclass
class WebhookReceiver:
    """Records POSTed JSON; answers ``fail_first`` calls with ``fail_status``."""

    fail_first: int = 0
    fail_status: int = 500
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    @contextmanager
    def serve(self) -> Iterator[str]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.calls.append((body, dict(self.headers)))
                if len(receiver.calls) <= receiver.fail_first:
                    self.answer(receiver.fail_status, b"not now\n", "text/plain")
                else:
                    self.answer(200, b"{}", "application/json")

        with http_server(Handler) as base:
            yield f"{base}/hook"
