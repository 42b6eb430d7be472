"""Webhooks against a real local receiver: retries, failures counted and said once, no waiting."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from media import WebhookReceiver

from smokerdet.errors import ConfigError
from smokerdet.scoring.backoff import Backoff
from smokerdet.scoring.webhooks import WebhookOptions, WebhookSender

QUICK = WebhookOptions(timeout=1.0, retries=2, backoff=Backoff(first=0.05, cap=0.1, jitter=0))
EVENT = {"state": "ended", "start": "2026-01-01T00:00:03.000+00:00", "peak_probability": 0.97}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_receiver_that_fails_the_first_call_gets_the_event_on_the_retry() -> None:
    receiver = WebhookReceiver(fail_first=1, fail_status=503)
    with receiver.serve() as url:
        hook = WebhookSender(url, QUICK)
        assert hook.send(EVENT) is True
        hook.close(timeout=5)
    assert [json.loads(body) for body, _ in receiver.calls] == [EVENT, EVENT]
    assert receiver.calls[0][1]["Content-Type"] == "application/json"
    assert (hook.stats.sent, hook.stats.retries, hook.stats.failed, hook.stats.dropped) == (
        1,
        1,
        0,
        0,
    )


def test_a_404_is_not_retried_and_credentials_go_as_basic_auth_never_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = WebhookReceiver(fail_first=99, fail_status=404)
    with receiver.serve() as url:
        hook = WebhookSender(url.replace("http://", "http://bot:s3cret@"), QUICK)
        with caplog.at_level(logging.WARNING, logger="smokerdet"):
            hook.send(EVENT)
            hook.send(EVENT)
            hook.close(timeout=5)
    assert len(receiver.calls) == 2  # one each, no retry
    assert receiver.calls[0][1]["Authorization"] == "Basic Ym90OnMzY3JldA=="
    assert (hook.stats.sent, hook.stats.failed, hook.stats.retries) == (0, 2, 0)
    warnings = [r.getMessage() for r in caplog.records]
    shown = url.replace("http://", "http://***@")
    assert warnings == [
        f"webhook {shown}: a POST failed (HTTP 404 Not Found); failures are counted, scoring goes on"
    ]


def test_an_unreachable_webhook_never_blocks_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    hook = WebhookSender(f"http://127.0.0.1:{closed_port()}/hook", QUICK)
    with caplog.at_level(logging.WARNING, logger="smokerdet"):
        began = time.monotonic()
        for _ in range(5):
            hook.send(EVENT)
        assert time.monotonic() - began < 0.05
        hook.close(timeout=10)
    assert hook.stats.failed == 5 and hook.stats.sent == 0 and hook.stats.retries == 10
    assert len(caplog.records) == 1 and "could not" not in caplog.records[0].getMessage()
    assert "Connection refused" in caplog.records[0].getMessage()


def test_a_full_queue_drops_and_counts_and_close_does_not_wait_forever() -> None:
    slow = WebhookOptions(timeout=1.0, retries=5, backoff=Backoff(first=5, cap=5), queue_size=2)
    hook = WebhookSender(f"http://127.0.0.1:{closed_port()}/hook", slow)
    sent = [hook.send(EVENT) for _ in range(6)]
    assert sent.count(False) >= 3
    began = time.monotonic()
    hook.close(timeout=0.2)
    assert time.monotonic() - began < 3
    assert hook.stats.sent == 0 and hook.stats.dropped + hook.stats.failed == 6


def test_only_http_urls() -> None:
    with pytest.raises(
        ConfigError, match=r"^--webhook must be an http:// or https:// URL, not 'ftp://\*\*\*@x/'$"
    ):
        WebhookSender("ftp://a:b@x/")


def test_backoff_grows_is_capped_and_jitters_within_its_bounds() -> None:
    import random

    plain = Backoff(first=1, factor=2, cap=30, jitter=0)
    assert [plain.delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    jittery = Backoff(first=1, factor=2, cap=30, jitter=0.25)
    rng = random.Random(0)
    delays = [jittery.delay(3, rng) for _ in range(200)]
    assert min(delays) >= 6 and max(delays) <= 10 and len(set(delays)) > 100
    assert max(jittery.delay(10, rng) for _ in range(200)) <= 30
