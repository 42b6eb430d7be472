"""smokerdet download against a real HTTP server on 127.0.0.1: no test touches the internet."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from smokerdet.cli import app
from smokerdet.download import (
    HttpOptions,
    Source,
    download_dataset,
    download_weights,
    extract_archive,
)
from smokerdet.errors import DownloadError
from smokerdet.model import create_model

FAST = HttpOptions(timeout=5, retries=2, backoff=0.01)


class Server:
    """Serves bytes by path, with Range support, and can misbehave on request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.drop_first: set[str] = set()  # send half, then close, on the first GET
        self.throttle: float = 0.0  # seconds per 16 KiB chunk
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append(("GET", self.path, rng))
                if self.path in server.status:
                    self.send_response(server.status[self.path])
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if self.path in server.drop_first and not rng:
                    server.drop_first.discard(self.path)
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                for i in range(0, len(payload), 16384):
                    try:
                        self.wfile.write(payload[i : i + 16384])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if server.throttle:
                        time.sleep(server.throttle)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def tiny_jpeg(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, (seed * 7) % 256, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def archive_members(counts=None, prefix: str = "smoker-detector-abc/images/") -> dict[str, bytes]:
    """The public archive's layout with the real counts (716/180/224), tiny images."""
    counts = counts or {"Training": 358, "Validation": 90, "Testing": 112}
    members = {}
    n = 0
    for split, per_class in counts.items():
        for cls in ("smoking", "notsmoking"):
            for i in range(per_class):
                n += 1
                members[f"{prefix}{split}/{split}/{cls}_{i:04d}.jpg"] = tiny_jpeg(n)
    return members


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def dataset_zip() -> bytes:
    return make_zip(archive_members())


def test_download_by_url_verifies_structure_and_warns_on_reencoded_bytes(
    runner, server, dataset_zip, smokerdet_home
):
    server.files["/ds.zip"] = dataset_zip
    r = runner.invoke(app, ["download", "dataset", "--source", server.url("/ds.zip"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["dataset"]
    assert out["verify"]["per_split"] == {"train": 716, "val": 180, "test": 224}
    assert out["verify"]["hashes_matched"] == 0 and out["verify"]["structure_ok"]
    assert "1120 of 1120 files differ from the published bytes" in out["notes"][0]
    target = smokerdet_home / "datasets" / "smoker-detection"
    assert (target / "Training" / "Training" / "smoking_0000.jpg").is_file()
    # nothing else left in datasets/: no temp dir, no .part
    assert sorted(p.name for p in (smokerdet_home / "datasets").iterdir()) == ["smoker-detection"]

    n = len(server.requests)
    r = runner.invoke(app, ["download", "dataset", "--source", server.url("/ds.zip")])
    assert r.exit_code == 0 and "already present" in r.stdout
    assert len(server.requests) == n  # no network I/O the second time


def test_train_finds_the_downloaded_dataset(server, dataset_zip):
    from smokerdet.data import find_dataset, resolve_data_root

    server.files["/ds.zip"] = dataset_zip
    download_dataset(source=server.url("/ds.zip"), options=FAST)
    assert len(find_dataset(resolve_data_root(None)).train) == 716


def test_dropped_connection_resumes_with_range(server, dataset_zip):
    server.files["/ds.zip"] = dataset_zip
    server.drop_first.add("/ds.zip")
    result = download_dataset(source=server.url("/ds.zip"), options=FAST)
    assert result.verify.total == 1120
    ranges = [r for _, p, r in server.requests if p == "/ds.zip"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(dataset_zip) // 2}-"


def test_ctrl_c_mid_download_then_rerun_resumes(server, dataset_zip, smokerdet_home):
    server.files["/ds.zip"] = dataset_zip
    server.throttle = 0.05
    cmd = [
        sys.executable,
        "-m",
        "smokerdet",
        "download",
        "dataset",
        "--source",
        server.url("/ds.zip"),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    part = smokerdet_home / "datasets" / ".url.download.part"
    deadline = time.time() + 30
    while time.time() < deadline and not (part.exists() and part.stat().st_size > 50_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Error: download interrupted" in err and "resumes where it stopped" in err
    have = part.stat().st_size
    assert 0 < have < len(dataset_zip)
    assert not (smokerdet_home / "datasets" / "smoker-detection").exists()  # nothing half-used
    server.throttle = 0.0
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert server.requests[-1][2] == f"bytes={have}-"
    assert (smokerdet_home / "datasets" / "smoker-detection" / "Testing").is_dir()
    assert not part.exists()


@pytest.mark.parametrize(
    "status, message",
    [(404, "HTTP 404"), (410, "HTTP 410")],
)
def test_http_errors(runner, server, status, message):
    server.status["/x.zip"] = status
    r = runner.invoke(app, ["download", "dataset", "--source", server.url("/x.zip")])
    assert r.exit_code == 1
    assert f"Error: {message}" in r.stderr and server.url("/x.zip") in r.stderr
    assert "Hint:" in r.stderr


def test_server_errors_are_retried_then_reported(server):
    server.status["/x.zip"] = 500
    with pytest.raises(DownloadError, match="failed after 2 retries: HTTP 500"):
        download_dataset(source=server.url("/x.zip"), options=FAST)
    assert len(server.requests) == 3


def test_no_network_names_the_url_and_hints_at_from(server):
    url = server.url("/x.zip")
    server.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError) as e:
        download_dataset(source=url, options=FAST)
    assert url in e.value.message and "cannot reach" in e.value.message
    assert "--from" in e.value.hint


def test_kaggle_credentials(server, monkeypatch, caplog):
    kaggle = Source("kaggle", server.url("/kaggle.zip"), "zip", "test", needs="kaggle")
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(Path("/nonexistent")))
    with pytest.raises(DownloadError, match="every dataset source failed"):
        download_dataset(sources=[kaggle], options=FAST)
    assert "set KAGGLE_USERNAME and KAGGLE_KEY" in caplog.text
    assert server.requests == []  # skipped, not tried

    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    server.status["/kaggle.zip"] = 401
    with pytest.raises(DownloadError, match=r"credentials rejected .* \(HTTP 401\)") as e:
        download_dataset(source="kaggle", sources=[kaggle], options=FAST)
    assert "KAGGLE_USERNAME" in e.value.hint


def test_truncated_archive(server, dataset_zip, smokerdet_home):
    server.files["/cut.zip"] = dataset_zip[: len(dataset_zip) // 3]
    with pytest.raises(DownloadError, match="truncated or corrupt|not a zip"):
        download_dataset(source=server.url("/cut.zip"), options=FAST)
    assert not (smokerdet_home / "datasets" / "smoker-detection").exists()


def test_checksum_mismatch_deletes_the_file_and_installs_nothing(
    server, dataset_zip, smokerdet_home
):
    server.files["/ds.zip"] = dataset_zip
    pinned = Source("pinned", server.url("/ds.zip"), "zip", "test", sha256="0" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch .* the file was deleted"):
        download_dataset(source="pinned", sources=[pinned], options=FAST)
    leftovers = [p for p in (smokerdet_home / "datasets").rglob("*")]
    assert leftovers == []


def test_wrong_layout_says_what_was_found(server, runner):
    server.files["/odd.zip"] = make_zip({f"pics/photo{i}.jpg": tiny_jpeg(i) for i in range(37)})
    r = runner.invoke(app, ["download", "dataset", "--source", server.url("/odd.zip")])
    assert r.exit_code == 1
    assert "found 37 images, 0 with a class prefix" in r.stderr


def test_size_cap_acts_like_a_full_disk(server, dataset_zip):
    server.files["/ds.zip"] = dataset_zip
    opts = HttpOptions(timeout=5, retries=0, max_bytes=10_000)
    with pytest.raises(DownloadError, match="over the 10,000-byte limit"):
        download_dataset(source=server.url("/ds.zip"), options=opts)


def test_partial_copy_needs_allow_partial(runner, tmp_path, smokerdet_home):
    members = archive_members({"Training": 358, "Validation": 90}, prefix="")
    for name, data in members.items():
        (tmp_path / "copy" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "copy" / name).write_bytes(data)
    r = runner.invoke(app, ["download", "dataset", "--from", str(tmp_path / "copy")])
    assert r.exit_code == 1
    assert "Testing: 0 of 224" in r.stderr and "--allow-partial" in r.stderr
    r = runner.invoke(
        app, ["download", "dataset", "--from", str(tmp_path / "copy"), "--allow-partial"]
    )
    assert r.exit_code == 0, r.output
    assert "896 images" in r.stdout


def _zip_with(tmp_path: Path, build) -> Path:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        build(zf)
    return path


def test_hostile_archives_are_refused_and_write_nothing_outside(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    slip = _zip_with(tmp_path, lambda zf: zf.writestr("../../escaped.txt", "x"))
    with pytest.raises(DownloadError, match="zip-slip"):
        extract_archive(slip, dest)
    assert not (tmp_path / "escaped.txt").exists()

    absolute = _zip_with(tmp_path, lambda zf: zf.writestr("/etc/evil", "x"))
    with pytest.raises(DownloadError, match="absolute path"):
        extract_archive(absolute, dest)

    def symlink(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")

    with pytest.raises(DownloadError, match="symlink entry"):
        extract_archive(_zip_with(tmp_path, symlink), dest)

    def bomb(zf: zipfile.ZipFile) -> None:
        zf.writestr(
            zipfile.ZipInfo("zeros.bin"), b"\0" * 5_000_000, compress_type=zipfile.ZIP_DEFLATED
        )

    with pytest.raises(DownloadError, match="zip bomb"):
        extract_archive(_zip_with(tmp_path, bomb), dest)

    def dup(zf: zipfile.ZipFile) -> None:
        zf.writestr("a.jpg", "1")
        zf.writestr("a.jpg", "2")

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup_zip = _zip_with(tmp_path, dup)
    with pytest.raises(DownloadError, match="duplicate entry"):
        extract_archive(dup_zip, dest)

    tar_path = tmp_path / "evil.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../outside"
        tf.addfile(info)
    with pytest.raises(DownloadError, match="link entry"):
        extract_archive(tar_path, dest)
    assert list(dest.iterdir()) == []


def test_tar_gz_import(tmp_path, smokerdet_home):
    members = archive_members(prefix="smoker-detection/")
    tar_path = tmp_path / "ds.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    result = download_dataset(from_path=tar_path)
    assert result.verify.per_split == {"train": 716, "val": 180, "test": 224}


# -- weights -----------------------------------------------------------------------------------


@pytest.fixture
def hub(server, monkeypatch):
    """The local server answering like the Hub for resnet10t's default weights."""
    torch.manual_seed(3)
    sd = {k: v.contiguous() for k, v in create_model("resnet10t").state_dict().items()}
    buf_path = Path(os.environ["SMOKERDET_HOME"]).parent / "served.safetensors"
    save_file(sd, str(buf_path))
    server.files["/timm/resnet10t.c3_in1k/resolve/main/model.safetensors"] = buf_path.read_bytes()
    monkeypatch.setenv("HF_ENDPOINT", server.url(""))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return sd


def test_weights_download_then_pretrained_loads_those_tensors(runner, hub, server, monkeypatch):
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--json"])
    assert r.exit_code == 0, r.output
    w = json.loads(r.stdout)["weights"][0]
    assert w["tag"] == "resnet10t.c3_in1k" and not w["already_present"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_model("resnet10t", pretrained=True)
    for k, v in hub.items():
        if not k.startswith("fc."):
            assert torch.equal(model.state_dict()[k], v), k
    n = len(server.requests)
    r = runner.invoke(app, ["download", "weights", "resnet10t"])
    assert "already present" in r.stdout and len(server.requests) == n


def test_weights_import_from_a_local_pth(runner, tmp_path):
    torch.manual_seed(5)
    sd = create_model("resnet10t").state_dict()
    torch.save(sd, tmp_path / "w.pth")
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(tmp_path / "w.pth")])
    assert r.exit_code == 0, r.output
    model = create_model("resnet10t", pretrained=True)
    assert torch.equal(model.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])


def test_weights_that_do_not_fit_are_not_cached(tmp_path):
    sd = {k: v.contiguous() for k, v in create_model("resnet18").state_dict().items()}
    save_file(sd, str(tmp_path / "r18.safetensors"))
    with pytest.raises(Exception, match="does not fit resnet10t"):
        download_weights("resnet10t", from_path=tmp_path / "r18.safetensors")
    with pytest.raises(Exception, match="not available offline"):
        create_model("resnet10t", pretrained=True)


def test_download_usage_errors(runner):
    r = runner.invoke(app, ["download", "everything"])
    assert r.exit_code == 2 and "download takes 'dataset' or 'weights ARCH...'" in r.stderr
    r = runner.invoke(app, ["download", "--from", "x.zip"])
    assert r.exit_code == 2 and "--from needs to know what it is" in r.stderr
    r = runner.invoke(app, ["download", "dataset", "--source", "nowhere"])
    assert r.exit_code == 2 and "--source 'nowhere' is not a known source" in r.stderr


def test_list_json(runner):
    r = runner.invoke(app, ["download", "--list", "--json"])
    assert r.exit_code == 0
    status = json.loads(r.stdout)
    assert [s["id"] for s in status["sources"]] == ["kaggle", "github", "mendeley"]
    assert status["dataset"]["present"] is False
    assert {"arch": "resnet50", "tag": "resnet50.a1_in1k"}.items() <= status["weights"][3].items()
