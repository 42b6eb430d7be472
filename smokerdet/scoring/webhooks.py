"""POST events as JSON to a webhook from a background thread: never in the scorer's way.

:meth:`WebhookSender.send` puts the payload in a bounded queue and returns at once (a full
queue drops the payload and counts it). A thread POSTs each one with a timeout, retrying a
dropped connection, a timeout, HTTP 408, 429 and 5xx with backoff; other answers (404, 400)
are not retried. Redirects are not followed (a POST that turns into a GET is no delivery).
Failures are counted in :attr:`WebhookSender.stats` and said once on stderr (logger
``smokerdet``), the URL's credentials redacted; ``user:pass@`` in the URL is sent as HTTP
Basic authentication.

Example:
    >>> hook = WebhookSender("https://hooks.example.org/smoking")  # doctest: +SKIP
    >>> hook.send({"start": 3.0, "end": 7.0, "peak_probability": 0.97})  # doctest: +SKIP
    True
    >>> hook.close()  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from smokerdet.errors import ConfigError
from smokerdet.scoring.backoff import Backoff
from smokerdet.scoring.urls import USER_AGENT, is_url, redact, split_credentials

log = logging.getLogger("smokerdet")

#: HTTP statuses worth another try: the receiver is busy or broken for now.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class WebhookOptions:
    """How hard to try; tests shorten the waits."""

    timeout: float = 5.0
    """Seconds for one POST (connect and answer)."""
    retries: int = 3
    """Tries after the first one fails."""
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.5, cap=10.0))
    """Waits between tries."""
    queue_size: int = 100
    """Payloads waiting at most; more are dropped (and counted)."""


@dataclass
class WebhookStats:
    """What happened to the payloads so far."""

    sent: int = 0
    """Delivered (a 2xx answer)."""
    failed: int = 0
    """Given up on after every try."""
    dropped: int = 0
    """Never tried: the queue was full, or the sender closed before their turn."""
    retries: int = 0
    """Tries after a first one failed."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class WebhookSender:
    """A queue and one thread that POSTs what is put in it."""

    def __init__(self, url: str, options: WebhookOptions | None = None) -> None:
        if not is_url(url):
            raise ConfigError(f"--webhook must be an http:// or https:// URL, not {redact(url)!r}")
        self.shown = redact(url)
        self.options = options or WebhookOptions()
        self.stats = WebhookStats()
        self._url, user, password = split_credentials(url)
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=ssl.create_default_context())
        )
        self._queue: queue.Queue[bytes] = queue.Queue(self.options.queue_size)
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._work, name="smokerdet-webhook", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> bool:
        """Queue ``payload`` for POSTing; never blocks. ``False`` when it was dropped."""
        try:
            self._queue.put_nowait(json.dumps(payload).encode())
        except queue.Full:
            self.stats.dropped += 1
            self._warn_once(
                "full", "its queue is full (the receiver is too slow); payloads are dropped"
            )
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, for at most ``timeout`` seconds; drop the rest (counted)."""
        self._closing.set()
        self._thread.join(timeout)
        self._abort.set()  # a POST under way ends by its own timeout
        self._thread.join(self.options.timeout + 1)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self.stats.dropped += 1

    def _work(self) -> None:
        while not (self._closing.is_set() and self._queue.empty()) and not self._abort.is_set():
            try:
                body = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        opts = self.options
        for attempt in range(opts.retries + 1):
            if attempt:
                self.stats.retries += 1
                if self._abort.wait(opts.backoff.delay(attempt - 1)):
                    break
            retry, reason = self._post(body)
            if reason is None:
                self.stats.sent += 1
                return
            if not retry:
                break
        self.stats.failed += 1
        self._warn_once(
            "failed", f"a POST failed ({reason}); failures are counted, scoring goes on"
        )

    def _post(self, body: bytes) -> tuple[bool, str | None]:
        """One POST: (worth retrying, why it failed), or (False, None) when delivered."""
        request = urllib.request.Request(self._url, data=body, headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.options.timeout) as resp:
                resp.read(1024)
            return False, None
        except urllib.error.HTTPError as e:
            e.close()
            return e.code in RETRY_STATUSES, f"HTTP {e.code} {e.reason}".rstrip()
        except urllib.error.URLError as e:
            return True, redact(str(getattr(e.reason, "strerror", None) or e.reason))
        except OSError as e:  # a timeout or a reset while reading the answer
            return True, redact(e.strerror or str(e) or "timed out")

    def _warn_once(self, kind: str, what: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("webhook %s: %s", self.shown, what)
