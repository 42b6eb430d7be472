"""``smokerdet serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from smokerdet.cli._options import DEFAULT_DEVICE, DeviceOpt, option
from smokerdet.serving import ServeConfig

ServeModelOpt = Annotated[
    str | None, option(ServeConfig, "model", "--model", "-m", metavar="NAME|PATH")
]
HostOpt = Annotated[str, option(ServeConfig, "host", metavar="ADDRESS")]
PortOpt = Annotated[int, option(ServeConfig, "port", "--port", "-p")]
TokenOpt = Annotated[
    str | None, option(ServeConfig, "token", envvar="SMOKERDET_TOKEN", metavar="TOKEN")
]
CollectOpt = Annotated[Path | None, option(ServeConfig, "collect", metavar="DIR")]
MaxBodyOpt = Annotated[float, option(ServeConfig, "max_body_mb")]
MaxFilesOpt = Annotated[int, option(ServeConfig, "max_files")]
MaxPixelsOpt = Annotated[int, option(ServeConfig, "max_pixels")]
ThreadsOpt = Annotated[int, option(ServeConfig, "threads")]


def serve(
    model: ServeModelOpt = ServeConfig.model,
    host: HostOpt = ServeConfig.host,
    port: PortOpt = ServeConfig.port,
    token: TokenOpt = ServeConfig.token,
    collect: CollectOpt = ServeConfig.collect,
    max_body_mb: MaxBodyOpt = ServeConfig.max_body_mb,
    max_files: MaxFilesOpt = ServeConfig.max_files,
    max_pixels: MaxPixelsOpt = ServeConfig.max_pixels,
    threads: ThreadsOpt = ServeConfig.threads,
    device: DeviceOpt = DEFAULT_DEVICE,
) -> None:
    """Serve the model over HTTP: an API for cameras and a review page at /.

    Binds to 127.0.0.1 by default. The API is documented at /docs. SIGTERM or Ctrl-C
    finishes the requests in flight and exits 0.

    Example:

    \b
        smokerdet serve --port 8000
        curl -s -H 'Content-Type: image/jpeg' --data-binary @photo.jpg \\
            http://127.0.0.1:8000/v1/predict
    """
    from smokerdet.serving import serve as run_server

    run_server(
        ServeConfig(
            model=model,
            host=host,
            port=port,
            token=token,
            collect=collect,
            max_body_mb=max_body_mb,
            max_files=max_files,
            max_pixels=max_pixels,
            threads=threads,
            device=device.value,
        )
    )
