"""Download or import the dataset and pretrained weights: verified, resumable, offline-friendly.

Everything lands in the user data dir. Downloads stream to a ``.part`` file (resumed with an
HTTP Range request after an interruption, retried with backoff on transient errors), archives
are extracted into a temp dir with zip-slip, symlink, duplicate and size checks, and the
result is verified (structure, then file-by-file SHA-256 against the manifest shipped in the
package) before it is renamed into place. Nothing half-done is ever where ``train`` looks.

Example:
    >>> from smokerdet.download import download_dataset
    >>> report = download_dataset(from_path="smoker-detection.zip")  # doctest: +SKIP
    >>> report.verify.hashes_matched  # doctest: +SKIP
    1120
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from smokerdet.data import SPLITS, is_image_file, label_from_name
from smokerdet.errors import ConfigError, DownloadError
from smokerdet.paths import datasets_dir, default_dataset_dir

log = logging.getLogger("smokerdet")

MANIFEST = Path(__file__).resolve().parent / "assets" / "smoker-detection.sha256"
EXPECTED_SPLITS = {"train": 716, "val": 180, "test": 224}
EXPECTED_TOTAL = 1120
#: Cap on what one archive may extract to (the real dataset is about 65 MB).
MAX_EXTRACT_BYTES = 2 * 1024**3
#: A member compressing better than this is treated as a zip bomb (JPEGs barely compress).
MAX_COMPRESSION_RATIO = 200
USER_AGENT = "smokerdet (+https://pypi.org/project/smokerdet/)"
_SPLIT_FOLDERS = {"train": "Training", "val": "Validation", "test": "Testing"}

#: Architectures listed by ``download --list`` (any timm name with Hub weights works).
LISTED_ARCHS = (
    "resnet18", "resnet26d", "resnet34", "resnet50", "resnet50d", "resnet101", "resnet152",
    "tf_efficientnet_lite0",
)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """Where the dataset can come from."""

    id: str
    url: str
    format: str
    description: str
    sha256: str | None = None
    needs: str | None = None


SOURCES = [
    Source(
        id="kaggle",
        url="https://www.kaggle.com/api/v1/datasets/download/sujaykapadnis/smoking",
        format="zip",
        description="Kaggle mirror sujaykapadnis/smoking (needs Kaggle credentials)",
        needs="kaggle",
    ),
    Source(
        id="github",
        url="https://codeload.github.com/armanvardanyan07/smoker-detector/zip/"
        "973a0459e512e8f1aa32e5ef591fbd14ca9952ca",
        format="zip",
        description="GitHub mirror armanvardanyan07/smoker-detector @ 973a045 (images/)",
    ),
    Source(
        id="mendeley",
        url="https://data.mendeley.com/public-api/zip/j45dj8bgfc/download/1",
        format="zip",
        description="Mendeley Data doi:10.17632/j45dj8bgfc.1 (a RAR inside; needs bsdtar or unrar)",
    ),
]


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class HttpOptions:
    """How downloads behave; tests shorten the waits."""

    timeout: float = 30.0
    retries: int = 4
    backoff: float = 1.0
    max_bytes: int | None = None
    progress: Callable[[int, int | None], None] | None = None


def kaggle_auth() -> str | None:
    """``Basic`` auth header from KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if not (user and key):
        cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
        try:
            data = json.loads(cfg.read_text())
            user, key = data.get("username"), data.get("key")
        except (OSError, ValueError, AttributeError):
            return None
    if not (user and key):
        return None
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


def http_download(
    url: str,
    dest: Path,
    *,
    headers: dict[str, str] | None = None,
    options: HttpOptions | None = None,
    expected_sha256: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming and retrying.

    TLS certificates are always verified; ``HTTP(S)_PROXY``/``NO_PROXY`` are honoured.

    Raises:
        DownloadError: an HTTP error, no network, a size cap, or a SHA-256 mismatch (the file
            is then deleted).
    """
    opts = options or HttpOptions()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, headers or {}, opts)
            break
        except _Retryable as e:
            attempt += 1
            if attempt > opts.retries:
                raise DownloadError(
                    f"download of {url} failed after {opts.retries} retries: {e}",
                    hint="check your network or proxy, or try --source / --from",
                ) from None
            wait = opts.backoff * 2 ** (attempt - 1)
            log.warning("%s; retrying in %.0fs (%d/%d)", e, wait, attempt, opts.retries)
            time.sleep(wait)
    if expected_sha256:
        digest = sha256_file(part)
        if digest != expected_sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected_sha256}, got {digest}; "
                "the file was deleted",
                hint="try again, or use another --source",
            )
    os.replace(part, dest)
    return dest


class _Retryable(Exception):
    pass


def _fetch_once(url: str, part: Path, headers: dict[str, str], opts: HttpOptions) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=opts.timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch, or a stale .part: start over
            part.unlink()
            raise _Retryable("server refused the resume range") from None
        if e.code in (401, 403):
            raise DownloadError(
                f"credentials rejected by {url} (HTTP {e.code})",
                hint="check KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json, "
                "or use another --source",
            ) from None
        if e.code == 429 or e.code >= 500:
            raise _Retryable(f"HTTP {e.code} from {url}") from None
        raise DownloadError(
            f"HTTP {e.code} ({e.reason}) from {url}", hint="try another --source, or --from FILE"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, OSError) and "Name or service not known" in str(reason):
            raise DownloadError(
                f"cannot reach {url}: {reason}",
                hint="no network or DNS? try --source NAME, or --from PATH with a local copy",
            ) from None
        raise _Retryable(f"cannot reach {url}: {reason}") from None

    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the Range header: start again from scratch
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if opts.max_bytes is not None and total is not None and total > opts.max_bytes:
            raise DownloadError(
                f"{url} is {total:,} bytes, over the {opts.max_bytes:,}-byte limit",
                hint="free some disk space",
            )
        free = shutil.disk_usage(part.parent).free
        if total is not None and total - have > free:
            raise DownloadError(
                f"not enough disk space for {url}: need {total - have:,} bytes, {free:,} free",
                hint="free some disk space",
            )
        got = have
        try:
            with open(part, "ab" if have else "wb") as f:
                while chunk := resp.read(1 << 16):
                    got += len(chunk)
                    if opts.max_bytes is not None and got > opts.max_bytes:
                        raise DownloadError(
                            f"{url} exceeds the {opts.max_bytes:,}-byte limit",
                            hint="free some disk space",
                        )
                    f.write(chunk)
                    if opts.progress:
                        opts.progress(got, total)
        except OSError as e:
            if isinstance(e, (TimeoutError, ConnectionError)) or "IncompleteRead" in repr(e):
                raise _Retryable(f"connection lost after {got:,} bytes") from None
            raise DownloadError(
                f"cannot write {part}: {e.strerror or e}", hint="free some disk space"
            ) from None
        except Exception as e:  # http.client.IncompleteRead and friends
            if type(e).__name__ in ("IncompleteRead", "RemoteDisconnected", "ProtocolError"):
                raise _Retryable(f"connection lost after {got:,} bytes") from None
            raise
        if total is not None and got < total:
            raise _Retryable(f"connection lost after {got:,} of {total:,} bytes")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Archives


def _check_member(name: str, seen: set[str]) -> str:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DownloadError(f"unsafe archive: absolute path {name!r}")
    if ".." in pure.parts:
        raise DownloadError(f"unsafe archive: path escapes the target folder {name!r} (zip-slip)")
    key = str(pure).rstrip("/")
    if key in seen:
        raise DownloadError(f"unsafe archive: duplicate entry {name!r}")
    seen.add(key)
    return key


def extract_archive(archive: Path, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> None:
    """Extract a zip or tar(.gz) into ``dest``, refusing anything unsafe.

    Refused: absolute paths, ``..`` (zip-slip), symlinks and hard links, device files,
    duplicate entries, members that decompress more than ``MAX_COMPRESSION_RATIO`` times, and a
    total above ``max_bytes``.
    """
    seen: set[str] = set()
    total = 0
    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_member(info.filename, seen)
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise DownloadError(f"unsafe archive: symlink entry {info.filename!r}")
                    total += info.file_size
                    if total > max_bytes:
                        raise DownloadError(
                            f"archive expands past the {max_bytes:,}-byte limit",
                            hint="free some disk space or check the archive",
                        )
                    if (
                        info.compress_size
                        and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO
                    ):
                        raise DownloadError(
                            f"unsafe archive: {info.filename!r} expands {info.file_size // info.compress_size}x (zip bomb?)"
                        )
                for info in infos:
                    target = dest / PurePosixPath(info.filename.replace("\\", "/"))
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    written = 0
                    with zf.open(info) as src, open(target, "wb") as out:
                        while chunk := src.read(1 << 20):
                            written += len(chunk)
                            if written > info.file_size:  # the header lied about the size
                                raise DownloadError(
                                    f"unsafe archive: {info.filename!r} is larger than declared"
                                )
                            out.write(chunk)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
            raise DownloadError(
                f"{archive.name} is truncated or corrupt ({e})",
                hint="download it again with --force",
            ) from None
        except OSError as e:
            raise DownloadError(f"cannot extract {archive.name}: {e}") from None
        return
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError:
        is_tar = False
    if is_tar:
        try:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m.name, seen)
                    if m.issym() or m.islnk():
                        raise DownloadError(f"unsafe archive: link entry {m.name!r}")
                    if not (m.isfile() or m.isdir()):
                        raise DownloadError(f"unsafe archive: special file {m.name!r}")
                    total += m.size
                    if total > max_bytes:
                        raise DownloadError(f"archive expands past the {max_bytes:,}-byte limit")
                kwargs: dict[str, Any] = (
                    {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                )
                tf.extractall(dest, members=members, **kwargs)
        except (tarfile.TarError, EOFError) as e:
            raise DownloadError(
                f"{archive.name} is truncated or corrupt ({e})",
                hint="download it again with --force",
            ) from None
        return
    if archive.suffix.lower() == ".rar" or archive.read_bytes()[:4] == b"Rar!":
        _extract_rar(archive, dest)
        return
    raise DownloadError(
        f"{archive.name} is not a zip, tar or rar archive (truncated?)",
        hint="download it again with --force",
    )


def _extract_rar(archive: Path, dest: Path) -> None:
    tool = shutil.which("bsdtar") or shutil.which("unrar")
    if not tool:
        raise DownloadError(
            f"{archive.name} is a RAR archive and no RAR extractor is installed",
            hint="install bsdtar (libarchive-tools) or unrar, or use another --source",
        )
    cmd = (
        [tool, "-xf", str(archive), "-C", str(dest)]
        if tool.endswith("bsdtar")
        else [tool, "x", "-idq", "-o-", str(archive), str(dest) + "/"]
    )
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DownloadError(f"could not extract {archive.name}: {done.stderr.strip()[:200]}")
    for p in dest.rglob("*"):
        if p.is_symlink():
            raise DownloadError(f"unsafe archive: symlink {p.relative_to(dest)}")


def _inner_archives(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".rar", ".zip")]


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass
class VerifyReport:
    """Structure and content checks of an extracted dataset."""

    root: str
    total: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)
    hashes_matched: int = 0
    hashes_total: int = EXPECTED_TOTAL
    structure_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.structure_ok and self.hashes_matched == self.hashes_total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verified": self.verified}


def find_split_root(folder: Path) -> Path | None:
    """The folder holding ``Training``/``Validation``/``Testing`` somewhere under ``folder``."""
    names = {v.lower() for v in _SPLIT_FOLDERS.values()}
    for dirpath, dirnames, _ in os.walk(folder):
        if names & {d.lower() for d in dirnames}:
            return Path(dirpath)
    return None


def read_manifest() -> dict[str, str]:
    """``relative path -> sha256`` of the 1,120 files of the public archive."""
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip("*")] = digest
    return out


def verify_dataset(folder: Path) -> VerifyReport:
    """Check structure (1,120 images, 560 per class, 716/180/224) and SHA-256 per file."""
    root = find_split_root(folder)
    report = VerifyReport(root=str(root or folder))
    if root is None:
        images = [p for p in folder.rglob("*") if p.is_file() and is_image_file(p)]
        prefixed = sum(1 for p in images if label_from_name(p.name) is not None)
        report.problems.append(
            f"no Training/Validation/Testing folders: found {len(images)} images, "
            f"{prefixed} with a class prefix"
        )
        return report
    manifest = read_manifest()
    report.per_class = {"smoking": 0, "not_smoking": 0}
    for split in SPLITS:
        name = _SPLIT_FOLDERS[split]
        folder_split = next(
            (d for d in root.iterdir() if d.is_dir() and d.name.lower() == name.lower()), None
        )
        files: list[Path] = []
        if folder_split is not None:
            files = [p for p in folder_split.rglob("*") if p.is_file() and is_image_file(p)]
        labelled = [p for p in files if label_from_name(p.name) is not None]
        report.per_split[split] = len(labelled)
        for p in labelled:
            report.per_class["smoking" if label_from_name(p.name) else "not_smoking"] += 1
            rel = p.relative_to(root).as_posix()
            if manifest.get(rel) == sha256_file(p):
                report.hashes_matched += 1
    report.total = sum(report.per_split.values())
    for split, expected in EXPECTED_SPLITS.items():
        if report.per_split.get(split, 0) != expected:
            report.problems.append(
                f"{_SPLIT_FOLDERS[split]}: {report.per_split.get(split, 0)} of {expected}"
            )
    if report.per_class != {"smoking": 560, "not_smoking": 560}:
        report.problems.append(
            f"classes: {report.per_class['smoking']} smoking + "
            f"{report.per_class['not_smoking']} not smoking, expected 560 + 560"
        )
    report.structure_ok = not report.problems
    return report


# ---------------------------------------------------------------------------------------------
# The dataset


@dataclass
class DatasetResult:
    """What ``download dataset`` did."""

    path: str
    source: str
    already_present: bool
    verify: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verify"] = self.verify.to_dict() if self.verify else None
        return d


def _marker(folder: Path) -> Path:
    return folder / ".smokerdet-dataset.json"


def dataset_status() -> dict[str, Any]:
    """Whether the dataset is present, where, how big and whether it was verified."""
    folder = default_dataset_dir()
    info: dict[str, Any] = {"path": str(folder), "present": folder.is_dir()}
    if folder.is_dir():
        info["size_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        try:
            meta = json.loads(_marker(folder).read_text())
            info["verified"] = meta.get("verify", {}).get("verified", False)
            info["source"] = meta.get("source")
        except (OSError, ValueError):
            info["verified"] = False
    return info


def download_dataset(
    *,
    source: str | None = None,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_partial: bool = False,
    options: HttpOptions | None = None,
    max_extract_bytes: int = MAX_EXTRACT_BYTES,
    sources: list[Source] | None = None,
) -> DatasetResult:
    """Fetch (or import) the Smoker Detection dataset into the data dir, verified.

    Args:
        source: a source id (``kaggle``, ``github``, ``mendeley``) or an archive URL; by default
            the sources are tried in order.
        from_path: import a local ``.zip``/``.tar``/``.tar.gz``/``.rar`` or folder instead.
        force: fetch again even when the dataset is present.
        allow_partial: accept a copy missing whole splits (e.g. without the Testing split).
        options: HTTP behaviour (timeouts, retries, a size cap, a progress callback).
        max_extract_bytes: cap on what an archive may expand to.
        sources: the sources to try (default :data:`SOURCES`).

    Raises:
        DownloadError: every source failed, or the data is not the dataset.
    """
    target = default_dataset_dir()
    if target.is_dir() and not force:
        return DatasetResult(path=str(target), source="already present", already_present=True)
    datasets_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=datasets_dir()) as tmp:
        work = Path(tmp)
        extracted = work / "extracted"
        extracted.mkdir()
        if from_path is not None:
            src = Path(from_path).expanduser()
            if not src.exists():
                raise DownloadError(f"--from {src}: no such file or folder")
            if src.is_dir():
                _copy_tree(src, extracted)
            else:
                extract_archive(src, extracted, max_extract_bytes)
            used = f"--from {src}"
        else:
            used = _download_from_sources(
                source, sources or SOURCES, extracted, options, max_extract_bytes
            )
        for inner in _inner_archives(extracted):
            extract_archive(inner, inner.parent, max_extract_bytes)
            inner.unlink()
        report = verify_dataset(extracted)
        # Partial: every split is complete or absent, and the classes are balanced.
        missing_only = (
            report.total > 0
            and all(report.per_split.get(k, 0) in (0, n) for k, n in EXPECTED_SPLITS.items())
            and report.per_class.get("smoking") == report.per_class.get("not_smoking")
        )
        if not report.structure_ok and not (allow_partial and missing_only):
            raise DownloadError(
                f"{used} is not the Smoker Detection dataset as published: "
                + "; ".join(report.problems),
                hint="--allow-partial accepts a copy that lacks whole splits"
                if missing_only
                else "check the archive or use another --source",
            )
        notes = []
        if report.hashes_matched < report.total:
            notes.append(
                f"{report.total - report.hashes_matched} of {report.total} files differ from the "
                "published bytes (a re-encoded mirror?); structure is as expected"
            )
        if report.problems:
            notes.append("partial copy accepted (--allow-partial): " + "; ".join(report.problems))
        root = Path(report.root)
        _marker(root).write_text(json.dumps({"source": used, "verify": report.to_dict()}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
        report.root = str(target)
        return DatasetResult(
            path=str(target), source=used, already_present=False, verify=report, notes=notes
        )


def _copy_tree(src: Path, dest: Path) -> None:
    for p in src.rglob("*"):
        if p.is_symlink():
            continue
        rel = p.relative_to(src)
        if p.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif p.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / rel)


def _download_from_sources(
    source: str | None,
    known: list[Source],
    extracted: Path,
    options: HttpOptions | None,
    max_bytes: int,
) -> str:
    if source and "://" in source:
        candidates = [Source(id="url", url=source, format="archive", description=source)]
    elif source:
        candidates = [s for s in known if s.id == source]
        if not candidates:
            raise ConfigError(
                f"--source {source!r} is not a known source or URL",
                hint="known sources: " + ", ".join(s.id for s in known),
            )
    else:
        candidates = known
    errors: list[str] = []
    for src in candidates:
        headers = {}
        if src.needs == "kaggle":
            auth = kaggle_auth()
            if auth is None:
                msg = "skipped kaggle: set KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json"
                log.warning(msg)
                errors.append(msg)
                if source:
                    raise DownloadError(
                        "no Kaggle credentials", hint=msg.removeprefix("skipped kaggle: ")
                    )
                continue
            headers["Authorization"] = auth
        archive = datasets_dir() / f".{src.id}.download"
        try:
            http_download(
                src.url, archive, headers=headers, options=options, expected_sha256=src.sha256
            )
            extract_archive(archive, extracted, max_bytes)
            archive.unlink(missing_ok=True)
            return f"{src.id} ({src.url})"
        except DownloadError as e:
            if source:
                raise
            log.warning("source %s failed: %s", src.id, e.message)
            errors.append(f"{src.id}: {e.message}")
            shutil.rmtree(extracted, ignore_errors=True)
            extracted.mkdir()
    raise DownloadError(
        "every dataset source failed: " + " | ".join(errors),
        hint="try --source NAME, or --from PATH with a copy you brought in",
    )


# ---------------------------------------------------------------------------------------------
# Pretrained weights


def weights_tag(arch: str) -> str:
    """The timm weights tag fetched for ``arch`` (``resnet50`` -> ``resnet50.a1_in1k``)."""
    from timm.models import get_pretrained_cfg

    from smokerdet.errors import WeightsError
    from smokerdet.model import check_arch

    check_arch(arch)
    cfg = get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        raise WeightsError(f"timm knows no Hub weights for {arch}")
    return str(hub_id).removeprefix("timm/")


def weights_url(tag: str) -> str:
    """Hub URL of a timm tag's safetensors file; ``HF_ENDPOINT`` picks a mirror."""
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{endpoint}/timm/{tag}/resolve/main/model.safetensors"


@dataclass
class WeightsResult:
    """What ``download weights`` did for one architecture."""

    arch: str
    tag: str
    path: str
    already_present: bool
    sha256: str = ""
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def download_weights(
    arch: str,
    *,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    options: HttpOptions | None = None,
) -> WeightsResult:
    """Put ImageNet weights for ``arch`` into the weights cache, from the Hub or a local file.

    The file is checked to load into the architecture (every tensor but the classifier)
    before it is moved into place, so ``train --pretrained`` can rely on it offline.
    """
    from smokerdet.model import cached_weights_path, create_model, load_backbone_weights

    tag = weights_tag(arch)
    base = tag.split(".", 1)[0]
    dest = cached_weights_path(tag)
    if dest.is_file() and not force:
        return WeightsResult(base, tag, str(dest), True, sha256_file(dest), dest.stat().st_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    incoming = dest.with_name(".incoming.safetensors")
    if from_path is not None:
        src = Path(from_path).expanduser()
        if not src.is_file():
            raise DownloadError(f"--from {src}: no such file")
        if src.suffix == ".safetensors":
            shutil.copyfile(src, incoming)
        else:  # a .pth state dict: read safely, store as safetensors
            from safetensors.torch import save_file

            from smokerdet.model import read_state_dict

            save_file({k: v.contiguous() for k, v in read_state_dict(src).items()}, str(incoming))
    else:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise DownloadError(
                f"HF_HUB_OFFLINE is set and {tag} is not cached",
                hint=f"import a local file: smokerdet download weights {base} --from FILE",
            )
        http_download(weights_url(tag), incoming, options=options)
    try:
        load_backbone_weights(create_model(base), incoming)
    except Exception:
        incoming.unlink(missing_ok=True)
        raise
    os.replace(incoming, dest)
    return WeightsResult(base, tag, str(dest), False, sha256_file(dest), dest.stat().st_size)


def weights_status() -> list[dict[str, Any]]:
    """The default tag of each documented architecture, and whether it is cached."""
    from smokerdet.model import cached_weights_path

    out = []
    for arch in LISTED_ARCHS:
        tag = weights_tag(arch)
        path = cached_weights_path(tag)
        out.append(
            {
                "arch": arch,
                "tag": tag,
                "path": str(path),
                "present": path.is_file(),
                "size_bytes": path.stat().st_size if path.is_file() else 0,
            }
        )
    return out


def download_plan(
    what: str | None,
    archs: list[str],
    *,
    source: str | None = None,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_partial: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """``smokerdet download``: the dataset and/or weights (``resnet50`` by default)."""
    from smokerdet.model import DEFAULT_ARCH

    options = HttpOptions(progress=progress)
    out: dict[str, Any] = {}
    if what in (None, "dataset"):
        out["dataset"] = download_dataset(
            source=source,
            from_path=from_path if what == "dataset" else None,
            force=force,
            allow_partial=allow_partial,
            options=options,
        ).to_dict()
    if what in (None, "weights"):
        out["weights"] = [
            download_weights(
                arch,
                from_path=from_path if what == "weights" else None,
                force=force,
                options=options,
            ).to_dict()
            for arch in (archs or [DEFAULT_ARCH])
        ]
    return out


def list_status() -> dict[str, Any]:
    """``download --list``: sources, architectures, and what is present."""
    return {
        "sources": [asdict(s) for s in SOURCES],
        "dataset": dataset_status(),
        "weights": weights_status(),
    }
