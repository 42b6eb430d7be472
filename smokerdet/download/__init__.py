"""Downloads: the dataset from its sources, HTTP with resume, safe extraction, the SHA-256 manifest.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.download.downloads import DownloadReport, download_all, list_status

__all__ = [
    "DownloadReport",
    "download_all",
    "list_status",
]
