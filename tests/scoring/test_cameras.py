"""Cameras through the CLI: `predict clip.mp4` (frames, --events, --snapshots), `predict URL`,
`smokerdet watch` as a real subprocess, and `serve`'s /metrics. Real media, real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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

from smokerdet.cli import app

ROOT = Path(__file__).resolve().parents[2]
PICTURES = {"smoking": photo(SMOKING), "not_smoking": photo(NOT_SMOKING)}


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s not smoking, 2.5 s smoking, 2.5 s not smoking, 25 frames a second."""
    folder = tmp_path_factory.mktemp("clip")
    return make_video(
        folder / "clip.mp4", scene([(NOT_SMOKING, 2), (SMOKING, 2.5), (NOT_SMOKING, 2.5)])
    )


def test_predict_video_events_give_one_event_at_the_right_times(runner, clip, tmp_path):
    snaps = tmp_path / "snaps"
    r = runner.invoke(
        app,
        ["predict", str(clip), "--events", "--json", "--snapshots", str(snaps), "-m", "default"],
    )
    assert r.exit_code == 0, r.output
    [event] = jsonl(r.stdout)
    period = 1 / 2  # --fps 2 by default: within one sampled frame
    assert event["path"] == str(clip) and event["label"] == "smoking"
    assert abs(event["start"] - 2.0) <= period and abs(event["end"] - 4.5) <= period
    assert event["peak_probability"] == event["probability"] > event["threshold"]
    assert event["start"] <= event["time"] < event["end"] and event["frame"] == round(
        event["time"] * 25
    )
    assert Path(event["snapshot"]).parent == snaps
    assert nearest(Image.open(event["snapshot"]), PICTURES) == "smoking"
    # The table says the same span.
    r = runner.invoke(app, ["predict", str(clip), "--events", "-m", "default"])
    assert r.exit_code == 0 and f"{clip} {event['start']:.1f}-{event['end']:.1f}s" in r.stdout


def test_without_snapshots_no_frame_is_stored_and_snapshots_need_events(
    runner, clip, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["predict", str(clip), "--events", "--json", "-m", "default"])
    assert r.exit_code == 0 and jsonl(r.stdout)[0]["snapshot"] is None
    assert list(tmp_path.iterdir()) == []
    r = runner.invoke(app, ["predict", str(clip), "--snapshots", str(tmp_path / "s")])
    assert r.exit_code == 2 and "--snapshots" in r.output and "--events" in r.output


def test_photos_and_videos_mix_with_a_row_per_sampled_frame(runner, clip):
    r = runner.invoke(
        app, ["predict", str(SMOKING), str(clip), "--json", "--fps", "1", "-m", "default"]
    )
    assert r.exit_code == 0, r.output
    rows = jsonl(r.stdout)
    assert rows[0]["path"] == str(SMOKING) and rows[0]["frame"] is None and rows[0]["time"] is None
    frames = rows[1:]
    assert [f["time"] for f in frames] == [float(t) for t in range(7)]
    assert [f["frame"] for f in frames] == [25 * t for t in range(7)]
    labels = [f["label"] for f in frames]
    assert labels[2:4] == ["smoking", "smoking"] and labels[0] == labels[-1] == "not_smoking"
    assert all(f["width"] == 256 and "start" not in f for f in frames)


@pytest.mark.parametrize("fps", ["-1", "nan"])
def test_a_negative_fps_is_a_usage_error(runner, clip, fps):
    r = runner.invoke(app, ["predict", str(clip), "--fps", fps])
    assert r.exit_code == 2 and "--fps" in r.output


def test_fps_above_the_file_s_rate_scores_every_frame_and_says_so(runner, tmp_path):
    short = make_video(tmp_path / "short.mp4", scene([(NOT_SMOKING, 0.2)]))
    r = runner.invoke(app, ["predict", str(short), "--json", "--fps", "1000", "-m", "default"])
    assert r.exit_code == 0, r.output
    rows = jsonl(r.stdout)
    assert len(rows) == 5 and "every frame is scored" in rows[-1]["notes"]
    assert "every frame is scored" in r.stderr


def test_a_video_ffmpeg_cannot_read_is_an_error_row_not_not_an_image(runner, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    r = runner.invoke(app, ["predict", str(bad), str(SMOKING), "--json", "-m", "default"])
    assert r.exit_code == 3
    row = jsonl(r.stdout)[0]
    assert (
        row["path"] == str(bad) and "FFmpeg" in row["error"] and "not an image" not in row["error"]
    )


class Camera(QuietHandler):
    """/snap.jpg a photo; /page.html HTML; /loop redirects to itself; anything else 404."""

    def do_GET(self) -> None:
        if self.path == "/snap.jpg":
            self.answer(200, jpeg(photo(SMOKING)), "image/jpeg")
        elif self.path == "/page.html":
            self.answer(200, b"<html>camera</html>", "text/html")
        elif self.path == "/loop":
            self.answer(302, b"", "text/plain", Location="/loop")
        else:
            self.answer(404, b"no", "text/plain")


def test_predict_snapshot_urls_and_bad_urls_give_redacted_error_rows(runner):
    with http_server(Camera) as base:
        secret = base.replace("http://", "http://admin:hunter2@")
        r = runner.invoke(app, ["predict", f"{secret}/snap.jpg", "--json", "-m", "default"])
        assert r.exit_code == 0, r.output
        [row] = jsonl(r.stdout)
        assert (
            row["label"] == "smoking"
            and row["path"] == f"{base.replace('http://', 'http://***@')}/snap.jpg"
        )
        assert row["width"] == 256 and row["sha256"]
        bad = [f"{secret}/page.html", f"{secret}/missing.jpg", f"{secret}/loop"]
        r = runner.invoke(app, ["predict", *bad, "--json", "-m", "default"])
    assert r.exit_code == 1
    rows = jsonl(r.stdout)
    errors = [row["error"] for row in rows]
    assert "text/html, not an image" in errors[0]
    assert "HTTP 404" in errors[1]
    assert "redirect" in errors[2]
    assert "hunter2" not in r.output and "admin" not in r.output
    assert "no such file" not in r.output


# --- watch, a real subprocess ----------------------------------------------------------------


def _watch(*args: str, tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("SMOKERDET_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "smokerdet", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=(tmp / "watch.err").open("w"),
        text=True,
        env=env,
    )


def _wait_for(path: Path, text: str, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = path.read_text() if path.exists() else ""
        if text in got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in: {got}")


def test_watch_survives_a_dropped_stream_posts_events_and_stops_on_sigterm(tmp_path):
    smoking, not_smoking = jpeg(photo(SMOKING)), jpeg(photo(NOT_SMOKING))
    # Smoking from frame 10 to 40; every connection drops after 25 frames.
    camera = MjpegCamera(
        lambda n: smoking if 10 <= n < 40 else not_smoking, per_connection=25, interval=0.04
    )
    receiver = WebhookReceiver(fail_first=1)
    with camera.serve() as url, receiver.serve() as hook:
        source = url.replace("http://", "http://op:hunter2@")
        proc = _watch(
            source,
            "--fps",
            "0",
            "--max-backoff",
            "1",
            "--webhook",
            hook,
            "--json",
            "-m",
            "default",
            tmp=tmp_path,
        )
        log = tmp_path / "watch.err"
        try:
            _wait_for(log, "reconnected")
            deadline = time.monotonic() + 60
            while len(receiver.calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    err = log.read_text()
    assert proc.returncode == 0, err
    events = jsonl(out)
    assert [e["state"] for e in events[:2]] == ["started", "ended"]
    assert events[0]["source"] == url.replace("http://", "http://***@")
    # The receiver failed the first POST; the retry delivered it.
    posted = [json.loads(body) for body, _ in receiver.calls]
    assert posted[0] == posted[1] == events[0] and posted[2] == events[1]
    assert "Stopped watching" in err and "reconnect" in err
    summary = err.splitlines()[-1]
    assert "1 event" in summary or "2 events" in summary
    assert "hunter2" not in out + err


def test_watch_on_a_source_that_never_opens_exits_1(tmp_path):
    port = free_port()
    proc = _watch(
        f"http://127.0.0.1:{port}/video.mjpg",
        "--connect-tries",
        "1",
        "--timeout",
        "2",
        "-m",
        "default",
        tmp=tmp_path,
    )
    out, _ = proc.communicate(timeout=120)
    err = (tmp_path / "watch.err").read_text()
    assert proc.returncode == 1, err
    assert "Error:" in err and f"127.0.0.1:{port}" in err and out == ""


# --- serve /metrics ----------------------------------------------------------------------------


def test_serve_metrics_count_requests_and_photos_and_need_the_token(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    from serve_process import TOKEN, Server

    server = Server(tmp_path, "--model", "default", "--token", TOKEN)
    try:
        with server.client(TOKEN) as c, server.client() as anonymous:
            for p in (SMOKING, NOT_SMOKING):
                r = c.post(
                    "/v1/predict", content=p.read_bytes(), headers={"Content-Type": "image/jpeg"}
                )
                assert r.status_code == 200
            assert anonymous.post("/v1/predict", content=b"x").status_code == 401
            assert anonymous.get("/metrics").status_code == 401
            r = c.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            text = r.text
    finally:
        assert server.stop() == 0
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))].value

    assert value("smokerdet_http_requests_total", route="/v1/predict", status="200") == 2
    assert value("smokerdet_http_requests_total", route="/v1/predict", status="401") == 1
    assert value("smokerdet_http_request_duration_seconds_count", route="/v1/predict") == 3
    assert value("smokerdet_photos_total", label="smoking") == 1
    assert value("smokerdet_photos_total", label="not_smoking") == 1
    unfamiliar = value("smokerdet_unfamiliar_photos_total")
    assert value("smokerdet_unfamiliar_share") == unfamiliar / 2
    info = [s for (n, _), s in samples.items() if n == "smokerdet_model_info"]
    assert info[0].labels["name"] == "default" and float(info[0].labels["threshold"]) > 0
