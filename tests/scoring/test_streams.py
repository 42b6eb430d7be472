"""Live sources against real local servers: an MJPEG camera that drops, a snapshot camera, an
RTSP server when one is installed; then watch() end to end, with a webhook and /metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from media import (
    NOT_SMOKING,
    SMOKING,
    MjpegCamera,
    QuietHandler,
    WebhookReceiver,
    free_port,
    http_server,
    jpeg,
    make_video,
    nearest,
    photo,
    scene,
)
from PIL import Image

from smokerdet.errors import ConfigError, StreamError
from smokerdet.scoring.backoff import Backoff
from smokerdet.scoring.streams import LiveStream, StreamOptions
from smokerdet.scoring.urls import FetchLimits
from smokerdet.scoring.watch import WatchConfig, WatchEvent, watch
from smokerdet.scoring.webhooks import WebhookOptions

QUICK = Backoff(first=0.05, factor=2, cap=0.2, jitter=0)
FAST = StreamOptions(fps=0, backoff=QUICK, connect_tries=3, open_timeout=2, read_timeout=2)
SMALL = (128, 128)
PICTURES = {"smoking": photo(SMOKING, SMALL), "not": photo(NOT_SMOKING, SMALL)}
SMOKING_JPEG, NOT_SMOKING_JPEG = jpeg(PICTURES["smoking"]), jpeg(PICTURES["not"])


def take(stream: LiveStream, until, seconds: float = 10.0) -> list:
    """Frames from ``stream`` until ``until(frames)`` holds (or fail after ``seconds``)."""
    frames, began = [], time.monotonic()
    for frame in stream.frames():
        frames.append(frame)
        if until(frames):
            return frames
        assert time.monotonic() - began < seconds, f"gave up after {len(frames)} frames"
    raise AssertionError("the stream stopped")


def test_an_mjpeg_stream_that_drops_is_reopened_with_backoff_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = MjpegCamera(lambda n: SMOKING_JPEG, per_connection=6)
    stop = threading.Event()
    with camera.serve() as url, caplog.at_level(logging.WARNING, logger="smokerdet"):
        secret_url = url.replace("http://", "http://viewer:pa55word@")
        with LiveStream(secret_url, FAST, stop) as stream:
            frames = take(stream, lambda got: camera.connections >= 3 and len(got) >= 14)
    assert not stream._thread.is_alive()  # closing stopped the reader
    stats = stream.stats
    assert stats.reconnects >= 2 and stats.frames >= 14
    assert stats.sampled == stats.frames  # fps 0: every frame handed on
    assert stats.taken == len(frames) and stats.taken + stats.dropped <= stats.sampled
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert all(f.image.size == SMALL for f in frames)
    said = [r.getMessage() for r in caplog.records]
    shown = url.replace("http://", "http://***@")
    assert f"{shown}: reconnected" in said
    assert any(m.startswith(f"{shown}: ") and m.endswith("trying again in 0.05 s") for m in said)
    assert not any("pa55word" in m for m in said)


def test_a_camera_that_goes_away_is_retried_with_capped_backoff_until_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = MjpegCamera(lambda n: SMOKING_JPEG, per_connection=10_000)
    port = free_port()
    stop = threading.Event()
    with caplog.at_level(logging.WARNING, logger="smokerdet"):
        with camera.serve(port) as url:
            stream = LiveStream(url, FAST, stop)
            take(stream, lambda got: len(got) >= 3)
        # The camera is gone: connection refused, again and again, at growing intervals.
        deadline = time.monotonic() + 10
        while stream.stats.failures < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with camera.serve(port):
            more = take(stream, lambda got: stream.stats.reconnects == 1 and len(got) >= 2)
        stream.close()
    assert more and stream.stats.reconnects == 1
    waits = [
        float(m.rsplit(" ", 2)[1]) for r in caplog.records if (m := r.getMessage()).endswith(" s")
    ]
    assert waits[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]  # doubling, capped at 0.2


def test_a_source_that_never_opens_fails_after_its_tries() -> None:
    url = f"http://cam:secret@127.0.0.1:{free_port()}/video.mjpg"
    began = time.monotonic()
    with pytest.raises(StreamError) as e, LiveStream(url, FAST, threading.Event()) as stream:
        list(stream.frames())
    assert str(e.value).startswith(
        f"http://***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/video.mjpg: "
        "could not be opened after 3 tries ("
    )
    assert "secret" not in str(e.value) and "ffplay" in (e.value.hint or "")
    assert e.value.exit_code == 1 and time.monotonic() - began < 5


def test_a_device_that_does_not_exist_fails_at_once() -> None:
    began = time.monotonic()
    with pytest.raises(StreamError) as e, LiveStream("/dev/video99", FAST, threading.Event()) as s:
        list(s.frames())
    assert str(e.value) == "/dev/video99: no such device"
    assert e.value.hint == "list the cameras with: ls /dev/video*"
    assert time.monotonic() - began < 1 and s.stats.failures == 0


def test_a_stream_whose_codec_ffmpeg_cannot_decode_fails_at_once(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "c.mp4", scene([(SMOKING, 0.2)], size=(64, 64)), fps=25)
    body = clip.read_bytes().replace(b"avc1", b"zzzz")

    class Server(QuietHandler):
        def do_GET(self) -> None:
            self.answer(200, body, "video/mp4")

    with http_server(Server) as base, LiveStream(f"{base}/cam.mp4", FAST, threading.Event()) as s:
        with pytest.raises(StreamError) as e:
            list(s.frames())
    assert str(e.value) == f"{base}/cam.mp4: its video codec cannot be decoded by this FFmpeg"


def test_files_and_misused_every_are_refused_naming_what_to_do(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    with pytest.raises(ConfigError) as e:
        LiveStream(str(clip), FAST, threading.Event())
    assert e.value.hint == f"score a video file with: smokerdet predict {clip}"
    with pytest.raises(
        ConfigError, match="^--every polls a snapshot URL; rtsp://\\*\\*\\*@cam/1 is"
    ):
        LiveStream("rtsp://a:b@cam/1", StreamOptions(every=1), threading.Event())
    with pytest.raises(ConfigError, match=r"^--every must be more than 0 seconds, got -1$"):
        StreamOptions(every=-1)
    with pytest.raises(ConfigError, match=r"^--fps must be 0"):
        StreamOptions(fps=-1)


def test_a_snapshot_url_is_polled_and_a_slow_scorer_drops_frames_not_memory() -> None:
    served = []

    class Snapshots(QuietHandler):
        def do_GET(self) -> None:
            served.append(time.monotonic())
            self.answer(200, SMOKING_JPEG, "image/jpeg")

    polling = StreamOptions(every=0.02, backoff=QUICK, fetch=FetchLimits(timeout=1))
    with (
        http_server(Snapshots) as base,
        LiveStream(f"{base}/snap.jpg", polling, threading.Event()) as s,
    ):
        frames = []
        for frame in s.frames():
            frames.append(frame)
            time.sleep(0.2)  # scoring ten times slower than the camera
            if len(frames) == 5:
                break
    stats = s.stats
    # How many frames a busy machine's camera thread gets to fetch varies; that it drops the
    # ones scoring had no time for, and keeps no queue, does not.
    assert stats.taken == 5 and stats.dropped >= 2
    assert stats.sampled - stats.taken - stats.dropped in (0, 1)  # at most one frame waits
    assert all(f.image.size == SMALL for f in frames)


def test_an_rtsp_server_streams_into_a_live_stream() -> None:
    rtsp = pytest.importorskip("rtsp", reason="rtsp-rs (an RTSP server) is not installed")
    import av
    import numpy as np

    port = free_port()
    server = rtsp.Server(f"127.0.0.1:{port}")
    server.start()
    pushing = threading.Event()

    def push() -> None:  # H.264 of the smoking photo, 25 frames a second
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = 128, 128, "yuv420p"
        codec.framerate = 25
        codec.options = {"tune": "zerolatency", "preset": "ultrafast", "g": "10", "bf": "0"}
        picture = np.asarray(PICTURES["smoking"])
        i = 0
        while not pushing.is_set():
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in codec.encode(frame):
                server.send_frame(bytes(packet), 3600)
            i += 1
            time.sleep(0.04)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        url = f"rtsp://admin:secret@127.0.0.1:{port}/stream"
        with LiveStream(url, FAST, threading.Event()) as stream:
            frames = take(stream, lambda got: len(got) >= 5)
        assert {nearest(f.image, PICTURES) for f in frames} == {"smoking"}
    finally:
        pushing.set()
        pusher.join(5)
        server.stop()


# --- watch() end to end ---------------------------------------------------------------------


def by_source(image: Image.Image) -> float:
    """Test data: a frame's p(smoking) is that of the photo it was made from."""
    return 0.95 if nearest(image, PICTURES) == "smoking" else 0.05


def test_watch_finds_the_event_posts_it_snapshots_it_and_exposes_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    # 10 frames not smoking, 25 smoking, then not smoking; the connection drops every 30.
    camera = MjpegCamera(
        lambda n: SMOKING_JPEG if 10 <= n < 35 else NOT_SMOKING_JPEG, per_connection=30
    )
    receiver = WebhookReceiver(fail_first=1)
    port = free_port()
    told: list[WatchEvent] = []
    scraped: dict[str, float] = {}
    stop = threading.Event()

    def on_event(event: WatchEvent) -> None:
        told.append(event)
        if event.state == "ended":
            scrape()
            stop.set()

    def scrape() -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer t0ken"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                scraped[sample.name] = sample.value
                if sample.name == "smokerdet_model_info":
                    assert sample.labels == {"name": "test-model", "threshold": "0.5"}

    cfg = WatchConfig(
        fps=0,
        webhook=None,
        snapshots=tmp_path / "events",
        metrics_port=port,
        token="t0ken",
    )
    with camera.serve() as url, receiver.serve() as hook_url:
        cfg.webhook = hook_url
        with caplog.at_level(logging.WARNING, logger="smokerdet"):
            summary = watch(
                url.replace("http://", "http://op:hunter2@"),
                cfg,
                by_source,
                default_threshold=0.5,
                model_name="test-model",
                on_event=on_event,
                stop=stop,
                stream_options=FAST,
                webhook_options=WebhookOptions(timeout=2, backoff=Backoff(first=0.05, jitter=0)),
            )
    assert [e.state for e in told] == ["started", "ended"]
    ended = told[1]
    assert ended.source == url.replace("http://", "http://***@")
    assert (
        ended.start == told[0].start and ended.end > ended.start and ended.peak_probability == 0.95
    )
    assert 10 <= ended.best_frame < 35
    snapshot = Path(ended.snapshot or "")
    assert snapshot.parent == tmp_path / "events" and snapshot.suffix == ".jpg"
    assert nearest(Image.open(snapshot), PICTURES) == "smoking"
    # The webhook failed once, then got both; the same JSON as on_event's.
    posted = [json.loads(body) for body, _ in receiver.calls]
    assert posted[1:] == [e.to_dict() for e in told] and posted[0] == posted[1]
    assert summary.events == 1 and summary.webhook_sent == 2 and summary.webhook_failed == 0
    assert summary.reconnects >= 1 and summary.scored >= 36
    assert summary.frames >= summary.scored and 0 < summary.lag_max < 5
    assert scraped["smokerdet_watch_frames_scored_total"] >= 36
    assert scraped["smokerdet_watch_reconnects_total"] >= 1
    assert scraped["smokerdet_watch_events_total"] == 1  # counted before on_event is told
    assert scraped["smokerdet_watch_connected"] == 1 and scraped["smokerdet_watch_lag_seconds"] >= 0
    assert not any("hunter2" in r.getMessage() for r in caplog.records)


def test_without_snapshots_no_frame_is_kept(tmp_path: Path) -> None:
    camera = MjpegCamera(lambda n: SMOKING_JPEG if n < 20 else NOT_SMOKING_JPEG, per_connection=60)
    told: list[WatchEvent] = []
    stop = threading.Event()

    def on_event(event: WatchEvent) -> None:
        told.append(event)
        if event.state == "ended":
            stop.set()

    with camera.serve() as url:
        summary = watch(
            url, WatchConfig(fps=0), by_source, default_threshold=0.5, on_event=on_event,
            stop=stop, stream_options=FAST,
        )  # fmt: skip
    assert summary.events == 1 and told[1].snapshot is None
    assert list(tmp_path.iterdir()) == []


def test_watch_options_are_checked_naming_their_flags(tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for kwargs, message in [
        ({"fps": -1}, "--fps must be 0 (every frame) or more, got -1"),
        ({"threshold": 2.0}, "--threshold must be between 0 and 1, got 2.0"),
        ({"start_frames": 5}, "--start-frames must be between 1 and --start-window (3), got 5"),
        ({"every": 0}, "--every must be more than 0 seconds, got 0"),
        (
            {"webhook": "hooks.example.org"},
            "--webhook must be an http:// or https:// URL, not 'hooks.example.org'",
        ),
        ({"snapshots": a_file}, f"--snapshots {a_file} is a file, not a folder"),
        ({"metrics_port": 70000}, "--metrics-port must be between 0 and 65535, got 70000"),
        ({"connect_tries": 0}, "--connect-tries must be at least 1, got 0"),
        ({"max_backoff": 0}, "--max-backoff must be more than 0, got 0"),
    ]:
        with pytest.raises(ConfigError) as e:
            WatchConfig(**kwargs)
        assert str(e.value) == message and e.value.exit_code == 2


def test_a_metrics_port_in_use_is_a_clear_error() -> None:
    from smokerdet.telemetry import serve_metrics, start_metrics_server

    registry = serve_metrics("m", 0.5).registry
    first = start_metrics_server(registry, 0)
    try:
        with pytest.raises(ConfigError, match=f"^--metrics-port {first.port}: cannot listen on"):
            start_metrics_server(registry, first.port)
    finally:
        first.close()


def test_serve_metrics_parse_with_the_prometheus_parser() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from smokerdet.telemetry import render, serve_metrics

    metrics = serve_metrics("default", 0.39)
    metrics.observe_request("/predict", 200, 0.03)
    metrics.observe_request("/predict", 200, 0.2)
    metrics.observe_request("/predict", 413, 0.001)
    for label, unfamiliar in [("smoking", True), ("smoking", False), ("not_smoking", False)]:
        metrics.observe_photo(label, unfamiliar=unfamiliar)
    other = serve_metrics("other", 0.5)  # a second app: its own registry, no clash
    other.observe_photo("smoking", unfamiliar=False)
    body, content_type = render(metrics.registry)
    assert content_type.startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert (
        samples[("smokerdet_http_requests_total", (("route", "/predict"), ("status", "200")))] == 2
    )
    assert (
        samples[("smokerdet_http_requests_total", (("route", "/predict"), ("status", "413")))] == 1
    )
    assert samples[("smokerdet_http_request_duration_seconds_count", (("route", "/predict"),))] == 3
    assert (
        samples[
            (
                "smokerdet_http_request_duration_seconds_bucket",
                (("le", "0.05"), ("route", "/predict")),
            )
        ]
        == 2
    )
    assert samples[("smokerdet_photos_total", (("label", "smoking"),))] == 2
    assert samples[("smokerdet_unfamiliar_photos_total", ())] == 1
    assert samples[("smokerdet_unfamiliar_share", ())] == pytest.approx(1 / 3)
    assert samples[("smokerdet_model_info", (("name", "default"), ("threshold", "0.39")))] == 1
