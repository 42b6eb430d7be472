"""Extract zip, tar(.gz) and RAR archives into a folder, refusing anything unsafe.

Every member is checked before any is extracted, so a hostile archive writes nothing at all:
absolute paths, ``..`` (zip-slip), symlinks and hard links, FIFOs and device files, duplicate
entries, zip bombs and archives over a size cap are refused.

Example:
    >>> from smokerdet.download.archives import extract_archive
    >>> extract_archive(Path("smoker-detection.zip"), Path("out"))  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from smokerdet.errors import DownloadError

#: Cap on what one archive may extract to (the real dataset is about 65 MB).
MAX_EXTRACT_BYTES = 2 * 1024**3
#: A member compressing better than this is treated as a zip bomb (JPEGs barely compress).
MAX_COMPRESSION_RATIO = 200


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
    """Extract a zip, tar(.gz) or RAR into ``dest``, refusing anything unsafe.

    Raises:
        DownloadError: the archive is unsafe (nothing was extracted), truncated or corrupt.
    """
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, max_bytes)
        return
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError:
        is_tar = False
    if is_tar:
        _extract_tar(archive, dest, max_bytes)
        return
    if archive.suffix.lower() == ".rar" or archive.read_bytes()[:4] == b"Rar!":
        _extract_rar(archive, dest)
        return
    raise DownloadError(
        f"{archive.name} is not a zip, tar or rar archive (truncated?)",
        hint="download it again with --force",
    )


def _too_big(max_bytes: int) -> DownloadError:
    return DownloadError(
        f"archive expands past the {max_bytes:,}-byte limit",
        hint="free some disk space or check the archive",
    )


def _corrupt(archive: Path, e: Exception) -> DownloadError:
    return DownloadError(
        f"{archive.name} is truncated or corrupt ({e})", hint="download it again with --force"
    )


def _check_zip(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_member(info.filename, seen)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DownloadError(f"unsafe archive: symlink entry {info.filename!r}")
        if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise DownloadError(f"unsafe archive: special file {info.filename!r}")
        total += info.file_size
        if total > max_bytes:
            raise _too_big(max_bytes)
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            ratio = info.file_size // info.compress_size
            raise DownloadError(f"unsafe archive: {info.filename!r} expands {ratio}x (zip bomb?)")


def _extract_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_zip(infos, max_bytes)
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
        raise _corrupt(archive, e) from None
    except OSError as e:
        raise DownloadError(f"cannot extract {archive.name}: {e}") from None


def _extract_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    seen: set[str] = set()
    total = 0
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
                    raise _too_big(max_bytes)
            # The checks above already refuse what the "data" filter would; it is a second net.
            kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest, members=members, **kwargs)
    except (tarfile.TarError, EOFError) as e:
        raise _corrupt(archive, e) from None


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


def inner_archives(folder: Path) -> list[Path]:
    """Archives inside an extracted archive (the Mendeley zip holds a RAR)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".rar", ".zip")]
