"""``smokerdet serve``: an HTTP API for cameras and a review page for people.

``POST /v1/predict`` takes one or many images (multipart files, or raw bytes with an image
content type) and answers, per image, the fields of ``predict --json``. ``GET /`` is a review
page (one static file, nothing loaded from the internet). With ``collect`` set, reviewed
photos are saved content-addressed into ``collect/smoking/`` and ``collect/not_smoking/``.
``GET /metrics`` gives Prometheus metrics (:mod:`smokerdet.telemetry`): requests by route and
status, latency, photos by label, the unfamiliar share, the model; ``--token`` guards it too.

No path or URL from a request is ever opened; every request body is read with a size cap;
inference runs in worker threads, never on the event loop.

Example:
    >>> from smokerdet.serving.app import ServeConfig, create_app
    >>> app = create_app(ServeConfig(model="default"))  # doctest: +SKIP
"""

import base64
import hashlib
import io
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from smokerdet.data import CLASS_NAMES, load_image
from smokerdet.errors import ConfigError, ImageLoadError, SmokerdetError
from smokerdet.inference import (
    Engine,
    Familiarity,
    Prediction,
    decode_upload,
    load_for,
    open_engine,
    score_decoded,
)
from smokerdet.serving.config import ServeConfig
from smokerdet.telemetry import ServeMetrics, render, serve_metrics, token_ok

log = logging.getLogger("smokerdet")

#: What error messages call an upload: a client's file name is never a path here.
UPLOAD = "upload"

#: Bytes read and thrown away past the body limit, so that the client reads our 413 instead
#: of a connection reset; a body declared larger than limit + this is refused unread.
_DRAIN_BYTES = 32 * 1024 * 1024
_RAW_TYPES = ("image/", "application/octet-stream")
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
_META_HIDDEN = ("train_args", "data_fingerprint", "provenance")  # local paths stay local


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    """One image of a request: a display name (never opened) and its bytes."""

    name: str
    data: bytes


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_name(raw: str | None, fallback: str) -> str:
    """A client's file name for display only: last component, no control characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:200]
    return name if name not in ("", ".", "..") else fallback


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, or :class:`ApiError` 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _DRAIN_BYTES:
        raise ApiError(413, f"request body over the limit of {limit:,} bytes (--max-body-mb)")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + _DRAIN_BYTES:
            break
        if total <= limit:
            chunks.append(chunk)
    if total > limit:
        raise ApiError(413, f"request body over the limit of {limit:,} bytes (--max-body-mb)")
    return b"".join(chunks)


async def parse_uploads(request: Any, config: ServeConfig) -> list[Upload]:
    """The images of a predict or review request, within every limit."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = ctype == "multipart/form-data"
    if not is_form and not ctype.startswith(_RAW_TYPES):
        raise ApiError(
            415,
            f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data files "
            "or raw bytes with an image/* content type",
        )
    body = await read_body(request, config.max_body_bytes)
    if not body:
        raise ApiError(400, "empty request body: send an image")
    if not is_form:
        return [Upload("upload", body)]

    async def replay() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(
        request.headers,
        replay(),
        max_files=config.max_files,
        max_fields=32,
        max_part_size=64 * 1024,
    )
    try:
        form = await parser.parse()
    except MultiPartException as e:
        if "Too many files" in e.message:
            raise ApiError(413, f"more than {config.max_files} files (--max-files)") from None
        raise ApiError(400, f"malformed multipart body: {e.message}") from None
    uploads = []
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                name = safe_name(value.filename, f"upload-{len(uploads) + 1}")
                uploads.append(Upload(name, await value.read()))
    finally:
        await form.close()
    if not uploads:
        raise ApiError(400, "no files in the form: send images as multipart file fields")
    return uploads


def heatmap_png(heat: Any) -> str:
    """A [0, 1] heatmap as an RGBA PNG data URL: transparent where cold, red-yellow where hot."""
    import numpy as np
    from PIL import Image

    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    rgba = np.stack(
        [
            np.full_like(h, 255.0),
            np.clip(h * 2 - 0.6, 0, 1) * 255,
            np.zeros_like(h),
            np.clip(h * 1.2 - 0.15, 0, 0.85) * 255,
        ],
        axis=-1,
    ).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def heatmap_url(name: str, image: Any, heat: Any) -> str:
    """The heatmap sink of ``?heatmap=1``: the heatmap as a PNG data URL."""
    return heatmap_png(heat)


class Scorer:
    """Decodes and scores uploads with one engine; runs in worker threads."""

    def __init__(
        self, engine: Engine, config: ServeConfig, familiarity: Familiarity | None = None
    ) -> None:
        self.engine, self.config, self.familiarity = engine, config, familiarity
        self.names = list(engine.meta.class_names or CLASS_NAMES)

    def decode(self, data: bytes) -> Any:
        """The upload as an upright RGB image, with ``predict``'s guards and JPEG draft."""
        draft = self.engine.meta.data_config.input_size
        return load_image(data, max_pixels=self.config.max_pixels, draft_size=draft, name=UPLOAD)

    def run(self, uploads: list[Upload], threshold: float, heatmap: bool) -> list[Prediction]:
        """One row per upload, in order, as ``predict`` makes them; a bad image is a row
        with its error."""
        cfg, limit = self.engine.meta.data_config, self.config.max_pixels
        items = [decode_upload(up.name, up.data, cfg, heatmap, limit) for up in uploads]
        sink = heatmap_url if heatmap else None
        scored = score_decoded(self.engine, items, heatmap=sink, familiarity=self.familiarity)
        return [
            Prediction.of(
                s,
                path=s.path,
                threshold=threshold,
                model=self.engine.name,
                names=self.names,
                heatmaps_asked=heatmap,
            )  # fmt: skip
            for s in scored
        ]


class Collector:
    """Saves reviewed photos as ``<dir>/<label>/<sha256>.<ext>``; a re-review moves the file."""

    def __init__(self, root: Path, labels: list[str]) -> None:
        self.root, self.labels = root, labels
        self._lock = threading.Lock()
        for label in labels:
            (root / label).mkdir(parents=True, exist_ok=True)

    def counts(self) -> dict[str, int]:
        return {
            label: sum(1 for p in (self.root / label).iterdir() if not p.name.startswith("."))
            for label in self.labels
        }

    def save(self, data: bytes, image_format: str | None, label: str) -> dict[str, Any]:
        from smokerdet._io import atomic_write_bytes

        digest = hashlib.sha256(data).hexdigest()
        target = self.root / label / f"{digest}.{_FORMAT_EXT.get(image_format or '', 'img')}"
        with self._lock:
            moved = False
            for other in self.labels:
                for old in (self.root / other).glob(f"{digest}.*"):
                    if old != target:
                        old.unlink(missing_ok=True)
                        moved = True
            if not target.exists():
                atomic_write_bytes(target, data)
            return {"sha256": digest, "label": label, "moved": moved, "counts": self.counts()}


def _image_format(data: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:  # already decoded once by the scorer's guards; this is only the name
        return None


def model_info(engine: Engine) -> dict[str, Any]:
    """What ``GET /v1/model`` answers: the model's metadata without local paths.

    An ONNX file carries only what scoring needs; when it sits in a model folder whose
    weights it was made from (``open_engine`` checks that), the folder's ``model.json`` adds
    the validation metrics and versions.
    """
    from smokerdet.__about__ import __version__
    from smokerdet.models import META_FILE, read_meta

    full = engine.meta
    folder = engine.path if engine.path.is_dir() else engine.path.parent
    if (folder / META_FILE).is_file():
        on_disk = read_meta(folder)
        if on_disk.weights_sha256 == engine.meta.weights_sha256:
            full = on_disk
    meta = {k: v for k, v in full.to_dict().items() if k not in _META_HIDDEN}
    meta["input_size"] = full.data_config.input_size
    return {"name": engine.name, "backend": engine.backend, "server_version": __version__, **meta}


def create_app(config: ServeConfig, engine: Engine | None = None) -> Any:
    """The FastAPI app: API under ``/v1``, health probes, the review page at ``/``.

    Args:
        config: the server's options (checked here).
        engine: a loaded engine; by default ``config.model`` is loaded now.

    Raises:
        ConfigError: an option is out of range.
        ModelNotFoundError, CheckpointError: the model cannot be loaded.
    """
    config.check()
    engine = engine if engine is not None else open_engine(config.model, device=config.device)
    return _build_app(config, engine)


def _build_app(config: ServeConfig, engine: Engine) -> Any:
    import anyio
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.responses import JSONResponse, Response

    from smokerdet.__about__ import __version__

    scorer = Scorer(engine, config, load_for(engine))
    info = model_info(engine)  # read once: the model does not change while serving
    collector = Collector(config.collect, scorer.names) if config.collect else None
    limiter = anyio.CapacityLimiter(config.threads)
    app = FastAPI(
        title="smokerdet",
        version=__version__,
        summary="Tell whether people in photos are smoking.",
        docs_url=None,
        redoc_url=None,
    )

    _error_handlers(app)
    metrics = serve_metrics(engine.name, engine.meta.threshold)
    app.add_middleware(_CountRequests, metrics=metrics)

    def authorize(request: Request) -> None:
        if not token_ok(request.headers.get("authorization"), config.token):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")

    api = [Depends(authorize)]

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict[str, str]:
        """Readiness: the model is loaded (serve loads it before it listens)."""
        return {"status": "ready", "model": engine.name}

    @app.get("/metrics", dependencies=api, include_in_schema=False)
    async def get_metrics() -> Response:
        """Prometheus metrics, in the text format."""
        body, content_type = render(metrics.registry)
        return Response(body, media_type=content_type)

    @app.get("/v1/model", dependencies=api, tags=["api"])
    async def get_model() -> dict[str, Any]:
        """The model's metadata: arch, input size, threshold, validation metrics, versions."""
        return info

    @app.post("/v1/predict", dependencies=api, tags=["api"])
    async def post_predict(
        request: Request,
        heatmap: bool = Query(False, description="Add each image's heatmap as a PNG data URL."),
        threshold: float | None = Query(None, ge=0.0, le=1.0, description="Default: the model's."),
    ) -> JSONResponse:
        """Label images sent as multipart files or as one raw image body.

        Every image gets the row of ``smokerdet predict --json``, ``familiar`` and
        ``familiarity`` included (and ``heatmap``, a PNG data URL, when asked for). A bad image
        gets its ``error`` and the others are still labelled (200); when no image could be
        read the answer is 413 (over --max-pixels) or 422.
        """
        uploads = await parse_uploads(request, config)
        cut = engine.meta.threshold if threshold is None else threshold
        rows = await anyio.to_thread.run_sync(scorer.run, uploads, cut, heatmap, limiter=limiter)
        for r in rows:
            if r.label is not None:
                metrics.observe_photo(r.label, unfamiliar=r.familiar is False)
        body = {"model": engine.name, "threshold": cut, "results": [r.to_dict() for r in rows]}
        if any(r.label is not None for r in rows):
            return JSONResponse(body)
        too_big = any((r.error or "").startswith("too large") for r in rows)
        first = (rows[0].error or "") + (" (--max-pixels)" if too_big else "")
        return json_error(413 if too_big else 422, f"no image could be labelled: {first}", **body)

    @app.get("/v1/review", dependencies=api, tags=["review"])
    async def get_review() -> dict[str, Any]:
        """Whether reviews are collected (``--collect``) and how many photos per label."""
        if collector is None:
            return {"enabled": False, "labels": scorer.names, "counts": {}}
        counts = await anyio.to_thread.run_sync(collector.counts)
        return {"enabled": True, "labels": scorer.names, "counts": counts}

    @app.post("/v1/review", dependencies=api, tags=["review"])
    async def post_review(
        request: Request, label: str = Query(..., description="The label the reviewer gives.")
    ) -> dict[str, Any]:
        """Save one reviewed photo under its label (content-addressed; a re-review moves it)."""
        if collector is None:
            raise ApiError(404, "reviews are not collected: start serve with --collect DIR")
        if label not in scorer.names:
            raise ApiError(422, f"invalid label {label!r}: use one of {', '.join(scorer.names)}")
        uploads = await parse_uploads(request, config)
        if len(uploads) != 1:
            raise ApiError(400, "send exactly one photo per review")
        data = uploads[0].data
        try:
            await anyio.to_thread.run_sync(scorer.decode, data, limiter=limiter)
        except ImageLoadError as e:
            status = 413 if e.reason.startswith("too large") else 422
            raise ApiError(status, f"not saved: {e.reason}") from None
        fmt = _image_format(data)
        return await anyio.to_thread.run_sync(collector.save, data, fmt, label)

    _pages(app)
    return app


class _CountRequests:
    """ASGI middleware: count every answered request by its route's pattern (never the raw
    path, so a client cannot grow the metrics) and status, and time it. Pure ASGI, unlike
    ``@app.middleware``, so request bodies stream through untouched."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router writes the matched route into this same scope.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, status, time.perf_counter() - began)


def json_error(status: int, message: str, **extra: Any) -> Any:
    """A JSON error answer: ``{"error": message, ...}``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=status)


def _error_handlers(app: Any) -> None:
    """Every error, ours or the framework's, answers ``{"error": ...}`` with its status."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return json_error(e.status, e.message)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, e: HTTPException) -> JSONResponse:
        return json_error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "body"))
        return json_error(422, f"invalid {where or 'request'}: {first.get('msg', 'bad value')}")


#: The pages' icon: a red dot (the review page inlines the same one as a data URL).
FAVICON = (
    b"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"
    b"<circle cx='8' cy='8' r='7' fill='#b3261e'/></svg>"
)


def _pages(app: Any) -> None:
    """The review page and the API reference: package files, no third-party origin allowed."""
    from fastapi.responses import HTMLResponse, Response

    page_headers = {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html"), headers=page_headers)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_static("docs.html"), headers=page_headers)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it on any page without a <link rel="icon">: an answer, not a 404.
        return Response(FAVICON, media_type="image/svg+xml")


def _static(name: str) -> str:
    return resources.files("smokerdet").joinpath("static", name).read_text(encoding="utf-8")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`SmokerdetError` that says why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} is not an address here ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise SmokerdetError(
                f"port {port} on {host} is already in use (--port)",
                hint="stop the other server or pick another --port (0 picks a free one)",
            ) from None
        raise SmokerdetError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(config: ServeConfig) -> None:
    """Load the model, listen, and serve until SIGTERM or Ctrl-C, which drain and return.

    Raises:
        ConfigError: a bad option.
        SmokerdetError: the port is in use or cannot be bound (exit code 1).
        ModelNotFoundError, CheckpointError: the model cannot be loaded (before listening).
    """
    import sys

    import uvicorn

    config.check()
    engine = open_engine(config.model, device=config.device)
    app = create_app(config, engine)
    if not is_loopback(config.host) and config.token is None:
        log.warning(
            f"listening on {config.host} without --token: anyone who can reach this machine "
            "can use the API and the page"
        )
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"Serving model {engine.name} on http://{shown}:{port}/ (Ctrl-C to stop)\n")
    sys.stderr.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=30,
        )
    )

    # Until uvicorn installs its own handlers, a signal asks it to stop as soon as it starts;
    # once it has drained it re-raises the signal, which this handler turns into a clean
    # return (exit 0) instead of death by SIGTERM or a KeyboardInterrupt.
    def stop(*_: Any) -> None:
        server.should_exit = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    if not server.started:
        raise SmokerdetError("the server did not start", hint="rerun with SMOKERDET_DEBUG=1")


__all__ = ["ServeConfig", "bind", "create_app", "is_loopback", "safe_name", "serve"]
