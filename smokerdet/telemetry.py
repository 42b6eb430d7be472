"""Prometheus metrics of ``serve`` and ``watch``: their names, a fresh registry each, an endpoint.

Each app builds its own registry (:func:`serve_metrics`, :func:`watch_registry`) rather than
using prometheus_client's global one, so two apps in one process, and tests, never collide.
:func:`render` gives the text exposition format; :func:`start_metrics_server` serves it on a
port of its own (``watch --metrics-port``), honouring a bearer token like ``serve --token``.
A base module: it imports prometheus_client (when called, not at import) and nothing of
smokerdet but its errors.

Metrics:
    ``smokerdet_http_requests_total{route,status}``, ``smokerdet_http_request_duration_seconds``
    (histogram, by route), ``smokerdet_photos_total{label}``,
    ``smokerdet_unfamiliar_photos_total`` and ``smokerdet_unfamiliar_share`` (serve);
    ``smokerdet_watch_frames_total``, ``..._frames_scored_total``, ``..._frames_dropped_total``,
    ``..._events_total``, ``..._reconnects_total``, ``..._webhook_failures_total``,
    ``..._lag_seconds``, ``..._connected`` (watch); ``smokerdet_model_info{name,threshold}``
    (both).

Example:
    >>> m = serve_metrics("default", 0.5)
    >>> m.observe_request("/predict", 200, 0.042)
    >>> m.observe_photo("smoking", unfamiliar=False)
    >>> b"smokerdet_photos_total" in render(m.registry)[0]
    True
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from smokerdet.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

#: Request latency buckets, in seconds: a photo takes tens of milliseconds, a batch seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _model_info(registry: CollectorRegistry, name: str, threshold: float) -> None:
    from prometheus_client import Info

    info = Info("smokerdet_model", "The model answering, and its threshold.", registry=registry)
    info.info({"name": name, "threshold": f"{threshold:g}"})


@dataclass
class ServeMetrics:
    """The metrics of ``smokerdet serve``, in their own registry."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    photos: Counter
    unfamiliar: Counter

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request (``route`` is the route's pattern, not the raw path)."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_photo(self, label: str, *, unfamiliar: bool) -> None:
        """Count one scored photo by its label, and whether it looked unfamiliar."""
        self.photos.labels(label=label).inc()
        if unfamiliar:
            self.unfamiliar.inc()


def serve_metrics(model_name: str, threshold: float) -> ServeMetrics:
    """A fresh registry holding the metrics of ``serve`` for this model."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    photos = Counter("smokerdet_photos", "Photos scored, by label.", ["label"], registry=registry)
    unfamiliar = Counter(
        "smokerdet_unfamiliar_photos",
        "Photos unlike the model's training data (its familiarity check).",
        registry=registry,
    )
    share = Gauge(
        "smokerdet_unfamiliar_share",
        "Share of scored photos that were unfamiliar.",
        registry=registry,
    )
    share.set_function(lambda: _share(unfamiliar, photos))
    _model_info(registry, model_name, threshold)
    return ServeMetrics(
        registry=registry,
        requests=Counter(
            "smokerdet_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "smokerdet_http_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        photos=photos,
        unfamiliar=unfamiliar,
    )


def _share(unfamiliar: Counter, photos: Counter) -> float:
    total = _total(photos)
    return _total(unfamiliar) / total if total else 0.0


def _total(counter: Counter) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


@dataclass(frozen=True)
class WatchCounts:
    """What ``watch`` has counted so far; read at each scrape."""

    frames: int
    scored: int
    dropped: int
    events: int
    reconnects: int
    webhook_failures: int
    lag_seconds: float
    connected: bool


class _WatchCollector:
    def __init__(self, read: Callable[[], WatchCounts]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self._read()
        counters = {
            "frames": (c.frames, "Frames decoded from the source."),
            "frames_scored": (c.scored, "Frames scored by the model."),
            "frames_dropped": (c.dropped, "Sampled frames dropped because scoring lagged."),
            "events": (c.events, "Smoking events that ended."),
            "reconnects": (c.reconnects, "Times the source was opened again after it dropped."),
            "webhook_failures": (c.webhook_failures, "Webhook posts that failed for good."),
        }
        for name, (value, doc) in counters.items():
            yield CounterMetricFamily(f"smokerdet_watch_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "smokerdet_watch_lag_seconds",
            "Age of the last scored frame when its score was ready.",
            value=c.lag_seconds,
        )
        yield GaugeMetricFamily(
            "smokerdet_watch_connected", "1 while the source delivers frames.", value=c.connected
        )


def watch_registry(
    read: Callable[[], WatchCounts], model_name: str, threshold: float
) -> CollectorRegistry:
    """A fresh registry exposing ``watch``'s counts, read from ``read()`` at each scrape."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_WatchCollector(read))  # type: ignore[arg-type]
    _model_info(registry, model_name, threshold)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def token_ok(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (always, without a token)."""
    if token is None:
        return True
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())


class MetricsServer:
    """``GET /metrics`` on a port, in a thread; :meth:`close` stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, token: str | None):
        handler = _handler(registry, token)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise ConfigError(
                f"--metrics-port {port}: cannot listen on {host}:{port} ({e.strerror or e})",
                hint="pick a free port, or 0 for any",
            ) from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # close() waits for one poll
            name="smokerdet-metrics",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler(registry: CollectorRegistry, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self._answer(404, b"not found: try /metrics\n", "text/plain")
            elif not token_ok(self.headers.get("Authorization"), token):
                self._answer(
                    401,
                    b"missing or wrong token: send 'Authorization: Bearer <token>'\n",
                    "text/plain",
                )
            else:
                self._answer(200, *render(registry))

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    return Handler


def start_metrics_server(
    registry: CollectorRegistry, port: int, *, host: str = "127.0.0.1", token: str | None = None
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics``; ``port`` 0 picks a free one.

    Raises:
        ConfigError: the port cannot be listened on (in use, not allowed); names --metrics-port.
    """
    return MetricsServer(registry, host, port, token)
