"""The HTTP API and review page of `smokerdet serve`.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.serving.app import serve
from smokerdet.serving.config import ServeConfig

__all__ = [
    "ServeConfig",
    "serve",
]
