"""Is an extracted folder the Smoker Detection dataset? Structure, then SHA-256 per file.

The manifest shipped in the package lists the 1,120 files of the public archive with their
SHA-256; a copy whose structure is right but whose bytes differ (a re-encoded mirror) is
reported, not refused.

Example:
    >>> from smokerdet.download.manifest import read_manifest
    >>> len(read_manifest())
    1120
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smokerdet._io import sha256_file
from smokerdet.data import SPLITS, is_image_file, label_from_name

MANIFEST = Path(__file__).resolve().parent.parent / "assets" / "smoker-detection.sha256"
EXPECTED_SPLITS = {"train": 716, "val": 180, "test": 224}
EXPECTED_TOTAL = 1120
SPLIT_FOLDERS = {"train": "Training", "val": "Validation", "test": "Testing"}


@dataclass
class VerifyReport:
    """Structure and content checks of an extracted dataset."""

    root: str
    total: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)
    hashes_matched: int = 0
    hashes_total: int = EXPECTED_TOTAL
    structure_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.structure_ok and self.hashes_matched == self.hashes_total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verified": self.verified}


def find_split_root(folder: Path) -> Path | None:
    """The folder holding ``Training``/``Validation``/``Testing`` somewhere under ``folder``."""
    names = {v.lower() for v in SPLIT_FOLDERS.values()}
    for dirpath, dirnames, _ in os.walk(folder):
        if names & {d.lower() for d in dirnames}:
            return Path(dirpath)
    return None


def read_manifest() -> dict[str, str]:
    """``relative path -> sha256`` of the 1,120 files of the public archive."""
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip("*")] = digest
    return out


def verify_dataset(folder: Path) -> VerifyReport:
    """Check structure (1,120 images, 560 per class, 716/180/224) and SHA-256 per file."""
    root = find_split_root(folder)
    report = VerifyReport(root=str(root or folder))
    if root is None:
        images = [p for p in folder.rglob("*") if p.is_file() and is_image_file(p)]
        prefixed = sum(1 for p in images if label_from_name(p.name) is not None)
        report.problems.append(
            f"no Training/Validation/Testing folders: found {len(images)} images, "
            f"{prefixed} with a class prefix"
        )
        return report
    manifest = read_manifest()
    report.per_class = {"smoking": 0, "not_smoking": 0}
    for split in SPLITS:
        name = SPLIT_FOLDERS[split]
        folder_split = next(
            (d for d in root.iterdir() if d.is_dir() and d.name.lower() == name.lower()), None
        )
        files: list[Path] = []
        if folder_split is not None:
            files = [p for p in folder_split.rglob("*") if p.is_file() and is_image_file(p)]
        labelled = [p for p in files if label_from_name(p.name) is not None]
        report.per_split[split] = len(labelled)
        for p in labelled:
            report.per_class["smoking" if label_from_name(p.name) else "not_smoking"] += 1
            rel = p.relative_to(root).as_posix()
            if manifest.get(rel) == sha256_file(p):
                report.hashes_matched += 1
    report.total = sum(report.per_split.values())
    for split, expected in EXPECTED_SPLITS.items():
        if report.per_split.get(split, 0) != expected:
            report.problems.append(
                f"{SPLIT_FOLDERS[split]}: {report.per_split.get(split, 0)} of {expected}"
            )
    if report.per_class != {"smoking": 560, "not_smoking": 560}:
        report.problems.append(
            f"classes: {report.per_class['smoking']} smoking + "
            f"{report.per_class['not_smoking']} not smoking, expected 560 + 560"
        )
    report.structure_ok = not report.problems
    return report
