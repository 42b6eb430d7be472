"""Where the Smoker Detection dataset comes from, and getting its files into a staging folder.

The sources are tried in order; each failure is kept as one short line (``github: no network
(DNS failed for codeload.github.com)``) and the error after the last one lists them all.

Example:
    >>> from smokerdet.download.sources import SOURCES
    >>> [s.id for s in SOURCES]
    ['kaggle', 'github', 'mendeley']
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from smokerdet.download.archives import extract_archive
from smokerdet.download.fetch import HttpOptions, HttpStatusError, http_download
from smokerdet.errors import ConfigError, DownloadError
from smokerdet.paths import datasets_dir

KAGGLE_HINT = "set KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json"


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


def pick_sources(source: str | None, known: list[Source]) -> list[Source]:
    """The sources ``--source`` asks for: one id, one archive URL, or all of them in order."""
    if source and "://" in source:
        return [Source(id="url", url=source, format="archive", description=source)]
    if source:
        chosen = [s for s in known if s.id == source]
        if not chosen:
            raise ConfigError(
                f"--source {source!r} is not a known source or URL",
                hint="known sources: " + ", ".join(s.id for s in known),
            )
        return chosen
    return known


def fetch_one(src: Source, extracted: Path, options: HttpOptions | None, max_bytes: int) -> None:
    """Download one source's archive and extract it into ``extracted``.

    Raises:
        DownloadError: with a short message and a hint that fits this source.
    """
    headers = {}
    if src.needs == "kaggle":
        auth = kaggle_auth()
        if auth is None:
            raise DownloadError(f"no Kaggle credentials ({KAGGLE_HINT})", hint=KAGGLE_HINT)
        headers["Authorization"] = auth
    archive = datasets_dir() / f".{src.id}.download"
    try:
        http_download(
            src.url, archive, headers=headers, options=options, expected_sha256=src.sha256
        )
    except HttpStatusError as e:
        if e.status in (401, 403) and src.needs == "kaggle":
            raise DownloadError(
                f"credentials rejected by {src.url} (HTTP {e.status})", hint=KAGGLE_HINT
            ) from None
        if e.status in (401, 403):
            raise DownloadError(
                f"access denied by {src.url} (HTTP {e.status})",
                hint="try another --source, or --from PATH with a copy you brought in",
            ) from None
        raise DownloadError(e.message, hint="try another --source, or --from PATH") from None
    except DownloadError as e:
        if e.hint is None:
            e.hint = "check your network or proxy; or --from PATH with a copy you brought in"
        raise
    extract_archive(archive, extracted, max_bytes)
    archive.unlink(missing_ok=True)


def fetch_dataset(
    source: str | None,
    known: list[Source],
    extracted: Path,
    options: HttpOptions | None,
    max_bytes: int,
) -> str:
    """Try the sources in order until one lands in ``extracted``; return which one did.

    Raises:
        DownloadError: ``--source`` named one source and it failed (its own error), or every
            source failed (one line each).
    """
    candidates = pick_sources(source, known)
    if source:
        fetch_one(candidates[0], extracted, options, max_bytes)
        return f"{candidates[0].id} ({candidates[0].url})"
    errors: list[str] = []
    for src in candidates:
        try:
            fetch_one(src, extracted, options, max_bytes)
            return f"{src.id} ({src.url})"
        except DownloadError as e:
            errors.append(f"{src.id}: {e.message}")
            shutil.rmtree(extracted, ignore_errors=True)
            extracted.mkdir()
    raise DownloadError(
        "every dataset source failed:\n  " + "\n  ".join(errors),
        hint="try --source NAME, or --from PATH with a copy you brought in",
    )


def copy_folder(src: Path, dest: Path) -> None:
    """Copy a dataset folder into the staging dir; symlinks are skipped, never followed."""
    for p in src.rglob("*"):
        if p.is_symlink():
            continue
        rel = p.relative_to(src)
        if p.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif p.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / rel)
