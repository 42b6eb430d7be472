"""Download one URL to a file: resumable, retried, size-capped, with concise errors.

A download streams to ``dest.part``; after an interruption it resumes with an HTTP Range
request (and starts over when the server ignores the range or refuses it with 416). Transient
errors (5xx, 429, a dropped connection, a short body) are retried with backoff. TLS is always
verified and ``HTTP(S)_PROXY``/``NO_PROXY`` are honoured (urllib's defaults).

Errors carry no hint: the caller knows which flags fit its command and adds them.

Example:
    >>> from smokerdet.download.fetch import http_download
    >>> http_download("https://example.org/a.zip", Path("a.zip"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from smokerdet._io import sha256_file
from smokerdet.errors import DownloadError

log = logging.getLogger("smokerdet")

USER_AGENT = "smokerdet (+https://pypi.org/project/smokerdet/)"


@dataclass
class HttpOptions:
    """How downloads behave; tests shorten the waits."""

    timeout: float = 30.0
    retries: int = 4
    backoff: float = 1.0
    max_bytes: int | None = None
    progress: Callable[[int, int | None], None] | None = None


class HttpStatusError(DownloadError):
    """The server answered with an HTTP error that retrying will not fix."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    pass


def http_download(
    url: str,
    dest: Path,
    *,
    headers: dict[str, str] | None = None,
    options: HttpOptions | None = None,
    expected_sha256: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming and retrying.

    Raises:
        HttpStatusError: a 4xx answer (its ``status`` says which).
        DownloadError: no network, too many retries, a size cap, or a SHA-256 mismatch (the
            file is then deleted).
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
                raise DownloadError(f"{e} (gave up after {opts.retries} retries)") from None
            wait = opts.backoff * 2 ** (attempt - 1)
            log.warning("%s; retrying in %.0fs (%d/%d)", e, wait, attempt, opts.retries)
            time.sleep(wait)
    if expected_sha256:
        digest = sha256_file(part)
        if digest != expected_sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected_sha256}, got {digest}; "
                "the file was deleted"
            )
    os.replace(part, dest)
    return dest


def _open(url: str, part: Path, headers: dict[str, str], opts: HttpOptions, have: int):  # noqa: ANN202
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        return urllib.request.urlopen(req, timeout=opts.timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch, or a stale .part: start over
            part.unlink()
            raise _Retryable("server refused the resume range") from None
        if e.code == 429 or e.code >= 500:
            raise _Retryable(f"HTTP {e.code} from {url}") from None
        raise HttpStatusError(f"HTTP {e.code} ({e.reason}) from {url}", e.code) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, socket.gaierror):
            host = urlsplit(url).hostname
            raise DownloadError(f"no network (DNS failed for {host})") from None
        if isinstance(reason, ConnectionRefusedError):
            reason = "connection refused"
        raise _Retryable(f"cannot reach {url}: {reason}") from None


def _fetch_once(url: str, part: Path, headers: dict[str, str], opts: HttpOptions) -> None:
    have = part.stat().st_size if part.exists() else 0
    resp = _open(url, part, headers, opts, have)
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the Range header: start again from scratch
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        _check_room(url, part, opts, have, total)
        got = have
        try:
            with open(part, "ab" if have else "wb") as f:
                while chunk := resp.read(1 << 16):
                    got += len(chunk)
                    if opts.max_bytes is not None and got > opts.max_bytes:
                        raise DownloadError(f"{url} exceeds the {opts.max_bytes:,}-byte limit")
                    f.write(chunk)
                    if opts.progress:
                        opts.progress(got, total)
        except (TimeoutError, ConnectionError) as e:
            raise _Retryable(f"connection lost after {got:,} bytes ({e})") from None
        except OSError as e:
            raise DownloadError(f"cannot write {part}: {e.strerror or e}") from None
        except Exception as e:  # http.client.IncompleteRead and friends
            if type(e).__name__ in ("IncompleteRead", "RemoteDisconnected", "ProtocolError"):
                raise _Retryable(f"connection lost after {got:,} bytes") from None
            raise
        if total is not None and got < total:
            raise _Retryable(f"connection lost after {got:,} of {total:,} bytes")


def _check_room(url: str, part: Path, opts: HttpOptions, have: int, total: int | None) -> None:
    if opts.max_bytes is not None and total is not None and total > opts.max_bytes:
        raise DownloadError(f"{url} is {total:,} bytes, over the {opts.max_bytes:,}-byte limit")
    free = shutil.disk_usage(part.parent).free
    if total is not None and total - have > free:
        raise DownloadError(
            f"not enough disk space for {url}: need {total - have:,} bytes, {free:,} free"
        )
