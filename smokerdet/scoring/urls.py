"""Fetch one photo from an ``http(s)://`` URL (a camera's snapshot), and redact credentials.

:func:`fetch_snapshot` reads at most :attr:`FetchLimits.max_bytes` (a ``Content-Length`` over
it is refused before the body is read; a body without one is cut at the cap), gives up when
the server is silent for :attr:`FetchLimits.timeout` seconds or the whole answer takes longer
than that, verifies TLS certificates (the system's CAs, or ``SSL_CERT_FILE``), follows at most
:attr:`FetchLimits.max_redirects` redirects and accepts only ``image/*`` answers. Credentials
in the URL (``http://user:pass@camera/snapshot.jpg``) are sent with HTTP Basic or Digest
authentication, to that host only, and never printed: :func:`redact` hides them (and
password-like query parameters) in every message, here and in ``streams`` and ``webhooks``.

Example:
    >>> redact("rtsp://admin:hunter2@10.0.0.5/live?channel=1&pwd=hunter2")
    'rtsp://***@10.0.0.5/live?channel=1&pwd=***'
    >>> snap = fetch_snapshot("http://camera.local/snapshot.jpg")  # doctest: +SKIP
    >>> snap.content_type, len(snap.data)  # doctest: +SKIP
    ('image/jpeg', 48213)
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from smokerdet.__about__ import __version__
from smokerdet.errors import UrlError

USER_AGENT = f"smokerdet/{__version__}"

#: Query parameters whose values are secrets on common cameras and services.
SECRET_PARAMS = frozenset(
    {"pass", "passwd", "password", "pwd", "token", "access_token", "key", "apikey", "api_key"}
    | {"auth", "secret", "signature", "sig", "user", "username", "usr"}
)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s?#]*@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:" + "|".join(sorted(SECRET_PARAMS)) + r")=)[^&;#\s]*")

_CHUNK = 64 * 1024


def redact(text: str) -> str:
    """``text`` (a URL, or a message holding URLs) with credentials replaced by ``***``.

    ``scheme://user:pass@host`` becomes ``scheme://***@host``, and the values of password-like
    query parameters (``?pwd=...``, ``&token=...``) become ``***``.
    """
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _QUERY_SECRET.sub(lambda m: m.group("key") + "***", text)


def is_url(source: str) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL (not a file path)."""
    return source[:8].lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class FetchLimits:
    """How much a snapshot fetch may take; tests shorten them."""

    max_bytes: int = 20 * 2**20
    """Largest body accepted, in bytes (a 4K JPEG is a few MB)."""
    timeout: float = 10.0
    """Seconds to connect, to wait for each read, and for the whole answer."""
    max_redirects: int = 3
    """Redirects followed before giving up."""


@dataclass(frozen=True)
class Snapshot:
    """One fetched photo: its bytes and what the server said about them.

    Attributes:
        url: the URL asked for, redacted.
        content_type: the media type (``image/jpeg``), without parameters.
        data: the body.
    """

    url: str
    content_type: str
    data: bytes


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, limit: int) -> None:
        self.max_redirections = limit
        self.max_repeats = min(limit, 4)

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if not is_url(newurl):  # urllib would follow a redirect to ftp://
            raise UrlError(redact(req.full_url), f"redirects to {redact(newurl)}, not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """The URL without ``user:pass@``, and the (percent-decoded) user and password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username is not None else ""
    password = unquote(parts.password) if parts.password is not None else ""
    return bare, user, password


def _opener(bare: str, user: str | None, password: str | None, limits: FetchLimits) -> Any:
    handlers: list[Any] = [
        _Redirects(limits.max_redirects),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
    ]
    if user is not None:
        # The password manager matches by URL prefix: a redirect to another host gets nothing.
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, bare, user, password or "")
        handlers += [
            urllib.request.HTTPBasicAuthHandler(manager),
            urllib.request.HTTPDigestAuthHandler(manager),
        ]
    return urllib.request.build_opener(*handlers)


def fetch_snapshot(url: str, limits: FetchLimits | None = None) -> Snapshot:
    """GET one image from ``url`` within ``limits``.

    Args:
        url: an ``http://`` or ``https://`` URL, credentials allowed (``user:pass@host``).
        limits: size, time and redirect limits (defaults: :class:`FetchLimits`).

    Returns:
        The image's bytes and content type.

    Raises:
        UrlError: not http(s), unreachable, silent, an HTTP error, a redirect loop, a TLS
            certificate that does not verify, a body over the cap, or not an image. The message
            names the URL, redacted.
    """
    limits = limits or FetchLimits()
    shown = redact(url)
    if not is_url(url):
        raise UrlError(shown, "only http:// and https:// URLs can be fetched")
    bare, user, password = split_credentials(url)
    request = urllib.request.Request(bare, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    deadline = time.monotonic() + limits.timeout
    try:
        with _opener(bare, user, password, limits).open(request, timeout=limits.timeout) as resp:
            content_type = _image_type(resp, shown)
            return Snapshot(shown, content_type, _read_capped(resp, shown, limits, deadline))
    except urllib.error.HTTPError as e:
        raise _http_error(shown, e) from None
    except urllib.error.URLError as e:
        raise _network_error(shown, e.reason, limits) from None
    except (TimeoutError, OSError) as e:
        raise _network_error(shown, e, limits) from None


def _image_type(resp: HTTPResponse, shown: str) -> str:
    content_type = (resp.headers.get_content_type() or "").lower()
    if not content_type.startswith("image/") or content_type == "image/svg+xml":
        raise UrlError(
            shown,
            f"answered with {content_type or 'no content type'}, not an image",
            hint="give the camera's snapshot URL (often /snapshot.jpg or /cgi-bin/snapshot.cgi), "
            "not its web page",
        )
    return content_type


def _read_capped(resp: HTTPResponse, shown: str, limits: FetchLimits, deadline: float) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise UrlError(shown, f"is {_size(int(declared))}, over the {_size(limits.max_bytes)} cap")
    body = bytearray()
    while chunk := resp.read1(_CHUNK):
        body += chunk
        if len(body) > limits.max_bytes:
            raise UrlError(shown, f"sent more than the {_size(limits.max_bytes)} cap")
        # A server trickling bytes never trips the per-read timeout; the deadline stops it.
        if time.monotonic() > deadline:
            raise UrlError(shown, f"took longer than {limits.timeout:g} s to send the image")
    if not body:
        raise UrlError(shown, "answered with an empty body")
    return bytes(body)


def _http_error(shown: str, e: urllib.error.HTTPError) -> UrlError:
    e.close()
    if 300 <= e.code < 400:
        return UrlError(shown, f"too many redirects (HTTP {e.code}; a redirect loop?)")
    hint = None
    if e.code in (401, 403):
        hint = "check the user and password in the URL (http://USER:PASSWORD@camera/...)"
    elif e.code == 404:
        hint = "check the path: cameras serve snapshots at /snapshot.jpg or similar"
    return UrlError(shown, f"HTTP {e.code} {e.reason}".rstrip(), hint=hint)


def _network_error(shown: str, reason: object, limits: FetchLimits) -> UrlError:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return UrlError(shown, f"no answer within {limits.timeout:g} s")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return UrlError(
            shown,
            f"TLS certificate not trusted ({reason.verify_message})",
            hint="a camera with its own certificate needs its CA in SSL_CERT_FILE",
        )
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return UrlError(shown, f"could not connect ({redact(str(text))})")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"
