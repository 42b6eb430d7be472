"""smokerdet download against a real HTTP server on 127.0.0.1: no test touches the internet."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from conftest import TINY_TRAIN_ARGS

from smokerdet.cli import app
from smokerdet.download.archives import extract_archive
from smokerdet.download.downloads import download_all, download_dataset, download_weights
from smokerdet.download.fetch import HttpOptions, http_download
from smokerdet.download.sources import Source
from smokerdet.errors import DownloadError, WeightsError
from smokerdet.models.build import create_model
from smokerdet.models.hub import is_intact, pretrained_file

if TYPE_CHECKING:
    from hubfake import Server

pytest_plugins = ["hubfake"]  # the fixtures server and hub_online

FAST = HttpOptions(timeout=5, retries=2, backoff=0.01)


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
    report = json.loads(r.stdout)
    assert report["ok"] and [p["result"] for p in report["parts"]] == ["installed"]
    out = report["parts"][0]["dataset"]
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
    from smokerdet.data.layout import find_dataset, resolve_data_root

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
    assert f"Error: dataset: {message}" in r.stderr and server.url("/x.zip") in r.stderr
    assert "Hint:" in r.stderr


def test_server_errors_are_retried_then_reported(server):
    server.status["/x.zip"] = 500
    with pytest.raises(DownloadError, match=r"HTTP 500 from .* \(gave up after 2 retries\)"):
        download_dataset(source=server.url("/x.zip"), options=FAST)
    assert len(server.requests) == 3


def test_no_network_names_the_url_and_hints_at_from(server):
    url = server.url("/x.zip")
    server.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError) as e:
        download_dataset(source=url, options=FAST)
    assert url in e.value.message and "cannot reach" in e.value.message
    assert "--from" in e.value.hint


def test_kaggle_credentials(server, monkeypatch):
    kaggle = Source("kaggle", server.url("/kaggle.zip"), "zip", "test", needs="kaggle")
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(Path("/nonexistent")))
    with pytest.raises(DownloadError, match="every dataset source failed") as e:
        download_dataset(sources=[kaggle], options=FAST)
    assert (
        "\n  kaggle: no Kaggle credentials (set KAGGLE_USERNAME and KAGGLE_KEY" in e.value.message
    )
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


BENIGN = {f"ok/{i}.jpg": b"x" * 10 for i in range(3)}


def _zip_then(tmp_path: Path, name: str, hostile) -> Path:
    """Benign members first, the hostile one last: a check after extracting would be too late."""
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in BENIGN.items():
            zf.writestr(member, data)
        hostile(zf)
    return path


def _tar_then(tmp_path: Path, name: str, hostile: tarfile.TarInfo) -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        for member, data in BENIGN.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tf.addfile(hostile, io.BytesIO(b"x" * hostile.size) if hostile.size else None)
    return path


def _tar_info(name: str, kind: bytes, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


@pytest.fixture
def extract_dir(tmp_path: Path) -> Path:
    dest = tmp_path / "work" / "out"
    dest.mkdir(parents=True)
    return dest


def _refused(archive: Path, dest: Path, match: str, max_bytes: int | None = None) -> None:
    kwargs = {"max_bytes": max_bytes} if max_bytes else {}
    with pytest.raises(DownloadError, match=match):
        extract_archive(archive, dest, **kwargs)
    assert list(dest.iterdir()) == []  # checked before extracting any: not even the benign ones


def test_hostile_zips_write_nothing_at_all(tmp_path, extract_dir):
    unique = f"smokerdet-escape-{uuid.uuid4().hex}"
    parent = extract_dir.parent  # where "../x" lands
    slip = _zip_then(tmp_path, "slip.zip", lambda zf: zf.writestr(f"../{unique}", "x"))
    _refused(slip, extract_dir, "zip-slip")
    deep = _zip_then(tmp_path, "deep.zip", lambda zf: zf.writestr(f"ok/../../../{unique}", "x"))
    _refused(deep, extract_dir, "zip-slip")
    absolute = _zip_then(tmp_path, "abs.zip", lambda zf: zf.writestr(f"/tmp/{unique}", "x"))
    _refused(absolute, extract_dir, "absolute path")
    assert not (parent / unique).exists() and not (tmp_path / unique).exists()
    assert not Path("/tmp", unique).exists()

    def special(mode: int):
        def add(zf: zipfile.ZipFile) -> None:
            info = zipfile.ZipInfo("entry")
            info.external_attr = mode << 16
            zf.writestr(info, "/etc/passwd")

        return add

    _refused(_zip_then(tmp_path, "l.zip", special(0o120777)), extract_dir, "symlink entry")
    _refused(_zip_then(tmp_path, "f.zip", special(0o010644)), extract_dir, "special file")

    def bomb(zf: zipfile.ZipFile) -> None:
        zf.writestr(
            zipfile.ZipInfo("zeros.bin"), b"\0" * 5_000_000, compress_type=zipfile.ZIP_DEFLATED
        )

    _refused(_zip_then(tmp_path, "bomb.zip", bomb), extract_dir, "zip bomb")

    def dup(zf: zipfile.ZipFile) -> None:
        zf.writestr("a.jpg", "1")
        zf.writestr("a.jpg", "2")

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup_zip = _zip_then(tmp_path, "dup.zip", dup)
    _refused(dup_zip, extract_dir, "duplicate entry")
    big = _zip_then(tmp_path, "big.zip", lambda zf: zf.writestr("last.jpg", b"y" * 20))
    _refused(big, extract_dir, "past the 40-byte limit", max_bytes=40)  # 3 x 10 + 20 bytes


def test_hostile_tars_write_nothing_at_all(tmp_path, extract_dir):
    unique = f"smokerdet-escape-{uuid.uuid4().hex}"
    cases = [
        (_tar_info(f"../{unique}", tarfile.REGTYPE, size=1), "zip-slip"),
        (_tar_info(f"/tmp/{unique}", tarfile.REGTYPE, size=1), "absolute path"),
        (_tar_info("out", tarfile.SYMTYPE, linkname=str(extract_dir.parent)), "link entry"),
        (_tar_info("passwd", tarfile.LNKTYPE, linkname="/etc/passwd"), "link entry"),
        (_tar_info("fifo", tarfile.FIFOTYPE), "special file"),
        (_tar_info("null", tarfile.CHRTYPE), "special file"),
        (_tar_info("disk", tarfile.BLKTYPE), "special file"),
    ]
    for n, (info, match) in enumerate(cases):
        _refused(_tar_then(tmp_path, f"evil{n}.tar.gz", info), extract_dir, match)
    big = _tar_then(tmp_path, "big.tar.gz", _tar_info("last.jpg", tarfile.REGTYPE, size=20))
    _refused(big, extract_dir, "past the 40-byte limit", max_bytes=40)
    assert not (extract_dir.parent / unique).exists() and not Path("/tmp", unique).exists()


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


# -- plain HTTP misbehaving --------------------------------------------------------------------


BODY = bytes(range(256)) * 1024  # 256 KiB


def test_403_is_access_denied_with_a_source_hint(server):
    server.status["/x.zip"] = 403
    with pytest.raises(DownloadError, match=r"access denied by .*/x.zip \(HTTP 403\)") as e:
        download_dataset(source=server.url("/x.zip"), options=FAST)
    assert "--source" in e.value.hint and len(server.requests) == 1  # not retried


def test_416_on_a_stale_part_starts_over(server, tmp_path):
    server.files["/f"] = BODY
    (tmp_path / "f.part").write_bytes(b"\xff" * len(BODY))  # "complete" but wrong: Range -> 416
    http_download(server.url("/f"), tmp_path / "f", options=FAST)
    assert (tmp_path / "f").read_bytes() == BODY
    assert [r for _, _, r in server.requests] == [f"bytes={len(BODY)}-", None]


def test_a_server_ignoring_range_gets_the_whole_file_once(server, tmp_path):
    server.files["/f"] = BODY
    server.ignore_range.add("/f")
    (tmp_path / "f.part").write_bytes(b"\xff" * 1000)  # must be overwritten, not appended to
    http_download(server.url("/f"), tmp_path / "f", options=FAST)
    assert (tmp_path / "f").read_bytes() == BODY


def test_fewer_bytes_than_content_length_resumes_then_gives_up(server, tmp_path):
    server.files["/f"] = BODY
    server.short["/f"] = 1
    http_download(server.url("/f"), tmp_path / "f", options=FAST)
    assert (tmp_path / "f").read_bytes() == BODY
    assert server.requests[-1][2] == f"bytes={len(BODY) // 2}-"

    server.short["/f"] = 99
    with pytest.raises(DownloadError, match=r"connection lost after .* \(gave up after 2 retries"):
        http_download(server.url("/f"), tmp_path / "g", options=FAST)
    assert not (tmp_path / "g").exists()


# -- weights through the Hub client ------------------------------------------------------------

HUB_PATH = "/timm/resnet10t.c3_in1k/resolve/main/model.safetensors"


def serve_weights(server: Server, seed: int) -> dict[str, torch.Tensor]:
    """Serve resnet10t weights the way the Hub does (X-Repo-Commit, ETag = the SHA-256)."""
    torch.manual_seed(seed)
    sd = {k: v.contiguous() for k, v in create_model("resnet10t").state_dict().items()}
    body = safetensors_bytes(sd)
    server.files[HUB_PATH] = body
    server.headers[HUB_PATH] = {
        "X-Repo-Commit": f"{seed:040x}",
        "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
    }
    return sd


def safetensors_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(sd)


@pytest.fixture
def hub(hub_online):
    """The local server answering like the Hub for resnet10t's default weights, online."""
    return serve_weights(hub_online, 3)


def backbone_equal(model, sd) -> bool:
    return all(
        torch.equal(model.state_dict()[k], v) for k, v in sd.items() if not k.startswith("fc.")
    )


def test_first_use_downloads_then_the_cache_answers_without_a_request(
    hub, server, monkeypatch, capfd
):
    model = create_model("resnet10t", pretrained=True)  # what `train --arch` does
    assert backbone_equal(model, hub)
    assert [m for m, p, _ in server.requests] == ["HEAD", "GET"]
    assert "model.safetensors" in capfd.readouterr().err  # the progress bar, on stderr
    n = len(server.requests)
    assert backbone_equal(create_model("resnet10t", pretrained=True), hub)
    assert len(server.requests) == n  # second run: no request at all
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server.close()
    assert backbone_equal(create_model("resnet10t", pretrained=True), hub)  # offline, cached


def test_offline_without_cache_hints_at_from(smokerdet_home):
    with pytest.raises(WeightsError, match="not cached and HF_HUB_OFFLINE is set") as e:
        create_model("resnet10t", pretrained=True)
    assert "smokerdet download weights resnet10t --from FILE" in e.value.hint
    assert not (smokerdet_home / "weights").exists()


@pytest.mark.parametrize("status", [401, 403])
def test_gated_or_private_repo(hub, server, smokerdet_home, status):
    server.status[HUB_PATH] = status
    with pytest.raises(
        WeightsError, match=rf"refused timm/resnet10t.c3_in1k \(HTTP {status}\)"
    ) as e:
        pretrained_file("resnet10t")
    assert "HF_TOKEN" in e.value.hint and "--from FILE" in e.value.hint
    assert not (smokerdet_home / "weights").exists()  # nothing left behind


def test_no_such_tag_is_a_404(hub, server, smokerdet_home):
    del server.files[HUB_PATH]
    with pytest.raises(WeightsError, match=r"has no timm/resnet10t.c3_in1k/model.safetensors"):
        pretrained_file("resnet10t")
    assert not (smokerdet_home / "weights").exists()


def test_dropped_connection_mid_file_is_retried_to_a_whole_file(hub, server):
    # The Hub client retries within the call (its http_get resumes from what it counted as
    # written; this version counts nothing before the drop, so it asks again from byte 0).
    server.drop_first.add(HUB_PATH)
    assert backbone_equal(create_model("resnet10t", pretrained=True), hub)
    assert [m for m, _, _ in server.requests] == ["HEAD", "GET", "GET"]
    assert is_intact(pretrained_file("resnet10t"))


def test_corrupt_cached_file_is_detected_and_fetched_again(hub, server, monkeypatch):
    path = pretrained_file("resnet10t")
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit deep in a tensor: still loads, wrong numbers
    blob.write_bytes(bytes(data))
    n = len(server.requests)
    assert backbone_equal(create_model("resnet10t", pretrained=True), hub)
    assert [m for m, _, _ in server.requests[n:]] == ["HEAD", "GET"]
    pretrained_file("resnet10t").resolve().write_bytes(bytes(data))  # corrupt again, offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="corrupt in the cache and HF_HUB_OFFLINE is set"):
        pretrained_file("resnet10t")


def test_no_network_hints_at_from_and_hf_endpoint(hub, server, smokerdet_home, monkeypatch):
    server.close()
    with pytest.raises(WeightsError, match="cannot reach the Hub at http://127.0.0.1") as e:
        pretrained_file("resnet10t")
    assert "--from FILE" in e.value.hint and "HF_ENDPOINT" in e.value.hint
    assert not (smokerdet_home / "weights").exists()


def test_weights_download_then_pretrained_loads_those_tensors(runner, hub, server, monkeypatch):
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--json"])
    assert r.exit_code == 0, r.output
    w = json.loads(r.stdout)["parts"][0]["weights"]
    assert w["tag"] == "resnet10t.c3_in1k" and not w["already_present"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert backbone_equal(create_model("resnet10t", pretrained=True), hub)
    n = len(server.requests)
    r = runner.invoke(app, ["download", "weights", "resnet10t"])
    assert "already present" in r.stdout and len(server.requests) == n


def imagenet_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """An ImageNet classifier's state dict for ``arch``: 1000-class head, random numbers."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_weights_import_from_a_local_pth(runner, tmp_path):
    sd = imagenet_state("resnet10t", 5)
    torch.save(sd, tmp_path / "w.pth")
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(tmp_path / "w.pth")])
    assert r.exit_code == 0, r.output
    model = create_model("resnet10t", pretrained=True)
    assert torch.equal(model.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])


def test_wrong_arch_import_names_the_file_and_no_internal_path(runner, tmp_path, smokerdet_home):
    sd = {k: v.contiguous() for k, v in create_model("resnet18").state_dict().items()}
    src = tmp_path / "r18.safetensors"
    src.write_bytes(safetensors_bytes(sd))
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(src)])
    assert r.exit_code == 1
    assert f"Error: weights resnet10t: {src} does not fit resnet10t" in r.stderr
    assert ".incoming" not in r.stderr and "--arch" not in r.stderr
    assert (
        f"Hint: give the architecture the file was saved from: smokerdet download weights ARCH --from {src}"
        in r.stderr
    )
    assert not (smokerdet_home / "weights").exists()
    with pytest.raises(WeightsError, match="not cached and HF_HUB_OFFLINE is set"):
        create_model("resnet10t", pretrained=True)


def test_from_another_file_refuses_without_force_then_replaces(runner, tmp_path):
    files = {}
    for seed in (1, 2):
        sd = imagenet_state("resnet10t", seed)
        files[seed] = (tmp_path / f"w{seed}.safetensors", sd)
        files[seed][0].write_bytes(safetensors_bytes(sd))
    assert download_weights("resnet10t", from_path=files[1][0]).already_present is False
    assert download_weights("resnet10t", from_path=files[1][0]).already_present is True
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(files[2][0])])
    assert r.exit_code == 1
    assert "other weights for resnet10t are already cached" in r.stderr
    assert "Hint: add --force to replace them" in r.stderr and "--force" in r.stderr
    assert backbone_equal(create_model("resnet10t", pretrained=True), files[1][1])
    result = download_weights("resnet10t", from_path=files[2][0], force=True)
    assert not result.already_present
    assert backbone_equal(create_model("resnet10t", pretrained=True), files[2][1])


def test_download_tries_every_part_and_reports_each(hub, server, smokerdet_home):
    url = server.url("/nothing.zip")  # 404: the dataset fails, the weights must still come
    report = download_all(None, ["resnet10t", "nosuchnet"], source=url)
    rows = [(p.part, p.result) for p in report.parts]
    assert rows == [
        ("dataset", "failed"),
        ("weights resnet10t", "installed"),
        ("weights nosuchnet", "failed"),
    ]
    dataset, weights, unknown = report.parts
    assert dataset.message.startswith("HTTP 404") and dataset.source == url
    assert weights.source.startswith("Hub http://127.0.0.1")
    assert "unknown architecture" in unknown.message and "--source" not in (unknown.hint or "")
    assert not report.ok and report.exit_code == 1
    assert sorted(p.name for p in smokerdet_home.iterdir()) == ["weights"]  # no empty datasets/


def test_download_cli_tables_every_part_and_errors_each_failure(runner, hub, server):
    url = server.url("/nothing.zip")
    r = runner.invoke(app, ["download", "--source", url])
    assert r.exit_code == 1
    rows = [[c.strip() for c in line.split("│")[1:4]] for line in r.stdout.splitlines()]
    rows = [row for row in rows if row]  # the table's body: part, source, result
    assert rows[0] == ["dataset", url, "failed"] and rows[1][0::2] == ["weights resnet50", "failed"]
    assert "part" in r.stdout and "message" in r.stdout  # the header
    assert "Error: dataset: HTTP 404" in r.stderr
    assert "Error: weights resnet50: " in r.stderr
    assert (
        r.stderr.count("Hint:") == 2
        and "--source" not in r.stderr.split("Error: weights resnet50")[1]
    )
    r = runner.invoke(app, ["download", "weights", "resnet10t", "nosuchnet", "--json"])
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert [(p["part"], p["result"]) for p in report["parts"]] == [
        ("weights resnet10t", "installed"),
        ("weights nosuchnet", "failed"),
    ]
    assert "Error: weights nosuchnet: unknown architecture" in r.stderr


def test_every_dataset_source_failing_gives_one_line_each(server, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", "/nonexistent")
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    sources = [
        Source("kaggle", server.url("/k.zip"), "zip", "k", needs="kaggle"),
        Source("github", "http://codeload.github.invalid/x.zip", "zip", "g"),
    ]
    with pytest.raises(DownloadError) as e:
        download_dataset(sources=sources, options=FAST)
    assert e.value.message.splitlines() == [
        "every dataset source failed:",
        "  kaggle: no Kaggle credentials (set KAGGLE_USERNAME and KAGGLE_KEY, or "
        "~/.kaggle/kaggle.json)",
        "  github: no network (DNS failed for codeload.github.invalid)",
    ]


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


def test_dataset_from_another_copy_refuses_without_force(tmp_path, dataset_zip, smokerdet_home):
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    first.write_bytes(dataset_zip)
    second.write_bytes(dataset_zip)
    assert not download_dataset(from_path=first).already_present
    assert download_dataset(from_path=first).already_present  # the same import again
    with pytest.raises(
        DownloadError, match=r"already installed .*a\.zip\); .*b\.zip was not imported"
    ) as e:
        download_dataset(from_path=second)
    assert "--force" in e.value.hint
    result = download_dataset(from_path=second, force=True)
    assert not result.already_present and result.source == f"--from {second}"
    assert sorted(p.name for p in (smokerdet_home / "datasets").iterdir()) == ["smoker-detection"]


# -- what a file imported as ImageNet weights is -----------------------------------------------


def test_a_smokerdet_model_is_not_imported_as_imagenet_weights(
    runner, trained_model, tmp_path, smokerdet_home
):
    src = trained_model / "model.safetensors"  # a 1-logit head, 32 px, trained from scratch
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(src)])
    assert r.exit_code == 1
    assert (
        f"Error: weights resnet10t: {src} is not ImageNet weights for resnet10t: it is a "
        "smokerdet model with a 1-class head (fc.weight), where ImageNet weights have 1000 "
        "classes; it was not imported"
    ) in r.stderr
    assert f"Hint: start from its model with `smokerdet train --init {trained_model}`" in r.stderr
    assert "add --force" in r.stderr
    assert not (smokerdet_home / "weights").exists()
    with pytest.raises(WeightsError, match="not cached and HF_HUB_OFFLINE is set"):
        create_model("resnet10t", pretrained=True)
    # Away from its model.json, its safetensors metadata still says what it is.
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(src.read_bytes())
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(alone)])
    assert r.exit_code == 1 and "it is a smokerdet model with a 1-class head" in r.stderr
    assert "--init MODEL_FOLDER" in r.stderr


def test_a_file_without_a_head_or_with_another_needs_force(runner, tmp_path):
    sd = imagenet_state("resnet10t", 4)
    headless = tmp_path / "backbone.safetensors"
    headless.write_bytes(
        safetensors_bytes({k: v for k, v in sd.items() if not k.startswith("fc.")})
    )
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(headless)])
    assert r.exit_code == 1
    assert "it has no classifier head (fc.weight is missing)" in r.stderr
    assert f"`smokerdet train --weights {headless}`" in r.stderr
    ten = tmp_path / "ten.pth"
    torch.save({**sd, "fc.weight": sd["fc.weight"][:10], "fc.bias": sd["fc.bias"][:10]}, ten)
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(ten)])
    assert r.exit_code == 1 and "it is a classifier with a 10-class head (fc.weight)" in r.stderr


def test_forced_import_is_kept_apart_and_recorded_as_such(
    runner, trained_model, flat_data, tmp_path, smokerdet_home
):
    from safetensors.torch import load_file

    from smokerdet.models.checkpoint import read_meta

    src = trained_model / "model.safetensors"
    r = runner.invoke(
        app, ["download", "weights", "resnet10t", "--from", str(src), "--force", "--json"]
    )
    assert r.exit_code == 0, r.output
    w = json.loads(r.stdout)["parts"][0]["weights"]
    assert w["kind"] == "forced-import"
    assert w["tag"] == "resnet10t (forced import, not ImageNet)"
    assert w["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    record = json.loads((smokerdet_home / "weights/forced/resnet10t/import.json").read_text())
    assert record["source"] == f"--from {src}" and "smokerdet model" in record["reason"]
    assert not list((smokerdet_home / "weights").glob("models--*"))  # never as c3_in1k
    listed = json.loads(runner.invoke(app, ["download", "--list", "--json"]).stdout)["weights"]
    assert {"arch": "resnet10t", "kind": "forced-import", "present": True}.items() <= listed[
        -1
    ].items()

    args = [a for a in TINY_TRAIN_ARGS if a != "--no-pretrained"]
    r = runner.invoke(app, [*args, "--epochs", "1", "--data", str(flat_data), "--name", "forced"])
    assert r.exit_code == 0, r.output
    assert "Warning: --pretrained uses weights imported with --force (not ImageNet)" in r.stderr
    provenance = read_meta(smokerdet_home / "models" / "forced").provenance
    assert provenance == {
        "weights": "resnet10t (forced import, not ImageNet)",
        "weights_kind": "forced-import",
        "weights_sha256": w["sha256"],
    }

    # Real ImageNet weights take over again, and the forced import goes.
    good = tmp_path / "in1k.safetensors"
    sd = imagenet_state("resnet10t", 6)
    good.write_bytes(safetensors_bytes(sd))
    r = runner.invoke(app, ["download", "weights", "resnet10t", "--from", str(good), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["parts"][0]["weights"]["kind"] == "imagenet"
    assert not (smokerdet_home / "weights" / "forced").exists()
    model = create_model("resnet10t", pretrained=True)
    assert torch.equal(model.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])
    assert not torch.equal(load_file(str(src))["conv1.0.weight"], sd["conv1.0.weight"])


# -- offline: fast, and the hints name every way out ----------------------------------------------


def test_train_without_the_hub_hints_at_no_pretrained_and_weights(runner, hub, server, flat_data):
    server.close()
    args = [a for a in TINY_TRAIN_ARGS if a != "--no-pretrained"]
    r = runner.invoke(app, [*args, "--data", str(flat_data)])
    assert r.exit_code == 1
    assert "Error: cannot reach the Hub at http://127.0.0.1" in r.stderr
    hint = r.stderr.split("Hint: ", 1)[1]
    assert "download weights resnet10t --from FILE" in hint and "HF_ENDPOINT" in hint
    assert "--no-pretrained" in hint and "--weights FILE" in hint


def test_download_without_the_hub_says_so_at_once(runner, hub, server, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the Hub client's backoff, recorded
    server.close()
    r = runner.invoke(app, ["download", "weights", "resnet10t"])
    assert r.exit_code == 1
    assert sum(slept) < 2, slept
    assert r.stderr.startswith("weights resnet10t: asking the Hub at http://127.0.0.1")
    assert "Error: weights resnet10t: cannot reach the Hub" in r.stderr
