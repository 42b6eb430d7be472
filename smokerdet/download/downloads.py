"""``smokerdet download``: the dataset and pretrained weights, fetched or imported, verified.

The jobs live in their own modules: :mod:`smokerdet.sources` (where the dataset comes from),
:mod:`smokerdet.fetch` (HTTP), :mod:`smokerdet.archives` (safe extraction),
:mod:`smokerdet.manifest` (verification) and :mod:`smokerdet.weights` (the Hugging Face Hub
client). This stage puts them together: a dataset is staged in a temp dir, verified and renamed
into place last; weights are checked to load into their architecture before they are cached.
:func:`download_all` tries every requested part and reports each, so one failure never hides
the others. Nothing half-done is ever where ``train`` looks.

Example:
    >>> from smokerdet.download.downloads import download_dataset
    >>> report = download_dataset(from_path="smoker-detection.zip")  # doctest: +SKIP
    >>> report.verify.hashes_matched  # doctest: +SKIP
    1120
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smokerdet._io import sha256_file
from smokerdet.download.archives import MAX_EXTRACT_BYTES, extract_archive, inner_archives
from smokerdet.download.fetch import HttpOptions
from smokerdet.download.manifest import EXPECTED_SPLITS, VerifyReport, verify_dataset
from smokerdet.download.sources import SOURCES, Source, copy_folder, fetch_dataset, pick_sources
from smokerdet.errors import DownloadError, SmokerdetError, WeightsError
from smokerdet.paths import datasets_dir, default_dataset_dir

__all__ = [
    "MAX_EXTRACT_BYTES",
    "SOURCES",
    "DatasetResult",
    "DownloadReport",
    "HttpOptions",
    "PartResult",
    "Source",
    "WeightsResult",
    "download_all",
    "download_dataset",
    "download_weights",
    "extract_archive",
    "list_status",
]

#: Architectures listed by ``download --list`` (any timm name with Hub weights works).
LISTED_ARCHS = (
    "resnet18", "resnet26d", "resnet34", "resnet50", "resnet50d", "resnet101", "resnet152",
    "tf_efficientnet_lite0",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The dataset


@dataclass
class DatasetResult:
    """What ``download dataset`` did."""

    path: str
    source: str
    already_present: bool
    verify: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verify"] = self.verify.to_dict() if self.verify else None
        return d


def _marker(folder: Path) -> Path:
    return folder / ".smokerdet-dataset.json"


def dataset_status() -> dict[str, Any]:
    """Whether the dataset is present, where, how big and whether it was verified."""
    folder = default_dataset_dir()
    info: dict[str, Any] = {"path": str(folder), "present": folder.is_dir()}
    if folder.is_dir():
        info["size_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        try:
            meta = json.loads(_marker(folder).read_text())
            info["verified"] = meta.get("verify", {}).get("verified", False)
            info["source"] = meta.get("source")
        except (OSError, ValueError):
            info["verified"] = False
    return info


def download_dataset(
    *,
    source: str | None = None,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_partial: bool = False,
    options: HttpOptions | None = None,
    max_extract_bytes: int = MAX_EXTRACT_BYTES,
    sources: list[Source] | None = None,
) -> DatasetResult:
    """Fetch (or import) the Smoker Detection dataset into the data dir, verified.

    Args:
        source: a source id (``kaggle``, ``github``, ``mendeley``) or an archive URL; by default
            the sources are tried in order.
        from_path: import a local ``.zip``/``.tar``/``.tar.gz``/``.rar`` or folder instead.
        force: fetch (or import) again even when the dataset is present.
        allow_partial: accept a copy missing whole splits (e.g. without the Testing split).
        options: HTTP behaviour (timeouts, retries, a size cap, a progress callback).
        max_extract_bytes: cap on what an archive may expand to.
        sources: the sources to try (default :data:`SOURCES`).

    Raises:
        DownloadError: every source failed, the data is not the dataset, or ``--from`` names
            another copy than the installed one without ``force``.
    """
    target = default_dataset_dir()
    used = f"--from {Path(from_path).expanduser().resolve()}" if from_path is not None else None
    if target.is_dir() and not force:
        installed_from = dataset_status().get("source")
        if used is None or used == installed_from:
            return DatasetResult(path=str(target), source="already present", already_present=True)
        raise DownloadError(
            f"a dataset is already installed at {target} (from {installed_from}); "
            f"{from_path} was not imported",
            hint="add --force to replace it with this copy",
        )
    datasets_dir().mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=datasets_dir()) as tmp:
            extracted = Path(tmp) / "extracted"
            extracted.mkdir()
            if from_path is not None:
                _import_copy(Path(from_path).expanduser(), extracted, max_extract_bytes)
            else:
                used = fetch_dataset(
                    source, sources or SOURCES, extracted, options, max_extract_bytes
                )
            for inner in inner_archives(extracted):
                extract_archive(inner, inner.parent, max_extract_bytes)
                inner.unlink()
            return _install(extracted, str(used), target, allow_partial)
    finally:
        _remove_if_empty(datasets_dir())


def _remove_if_empty(folder: Path) -> None:
    """A failed first download leaves no empty ``datasets/`` behind (a ``.part`` stays)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _import_copy(src: Path, extracted: Path, max_bytes: int) -> None:
    if not src.exists():
        raise DownloadError(f"--from {src}: no such file or folder")
    if src.is_dir():
        copy_folder(src, extracted)
    else:
        extract_archive(src, extracted, max_bytes)


def _install(extracted: Path, used: str, target: Path, allow_partial: bool) -> DatasetResult:
    report = verify_dataset(extracted)
    # Partial: every split is complete or absent, and the classes are balanced.
    missing_only = (
        report.total > 0
        and all(report.per_split.get(k, 0) in (0, n) for k, n in EXPECTED_SPLITS.items())
        and report.per_class.get("smoking") == report.per_class.get("not_smoking")
    )
    if not report.structure_ok and not (allow_partial and missing_only):
        raise DownloadError(
            f"{used} is not the Smoker Detection dataset as published: "
            + "; ".join(report.problems),
            hint="--allow-partial accepts a copy that lacks whole splits"
            if missing_only
            else "check the archive or use another --source",
        )
    notes = []
    if report.hashes_matched < report.total:
        notes.append(
            f"{report.total - report.hashes_matched} of {report.total} files differ from the "
            "published bytes (a re-encoded mirror?); structure is as expected"
        )
    if report.problems:
        notes.append("partial copy accepted (--allow-partial): " + "; ".join(report.problems))
    root = Path(report.root)
    _marker(root).write_text(json.dumps({"source": used, "verify": report.to_dict()}, indent=2))
    if target.exists():
        shutil.rmtree(target)
    os.replace(root, target)
    report.root = str(target)
    return DatasetResult(
        path=str(target), source=used, already_present=False, verify=report, notes=notes
    )


# ---------------------------------------------------------------------------------------------
# Pretrained weights


@dataclass
class WeightsResult:
    """What ``download weights`` did for one architecture.

    ``kind`` is ``imagenet``, or ``forced-import`` for a file that is not an ImageNet
    classifier, imported with ``--force`` (``tag`` then says so, never a timm tag).
    """

    arch: str
    tag: str
    path: str
    already_present: bool
    sha256: str = ""
    size_bytes: int = 0
    source: str = ""
    kind: str = "imagenet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def download_weights(
    arch: str,
    *,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> WeightsResult:
    """Put ImageNet weights for ``arch`` into the weights cache, from the Hub or a local file.

    Either way the file is checked to load into the architecture (every tensor but the
    classifier) before it is cached, so ``train --pretrained`` can rely on it offline. An
    imported file must also be an ImageNet classifier: its head has ImageNet's number of
    classes. One that is not (a smokerdet model, a backbone without its head) is refused, or
    with ``force`` kept apart as a forced import, which ``--pretrained`` then uses and records
    as such. ImageNet weights installed here replace a forced import.

    Args:
        arch: a timm architecture with Hub weights (``resnet50``).
        from_path: import this ``.safetensors`` or state-dict ``.pth`` instead of downloading.
        force: download again; with ``from_path``, replace cached weights that differ, or
            import a file that is not ImageNet weights.

    Raises:
        WeightsError: the Hub path failed, the file does not fit ``arch``, or it is not an
            ImageNet classifier and ``force`` is not given.
        DownloadError: ``from_path`` is missing, or differs from the cached file without
            ``force``.
    """
    from smokerdet.models import (
        cached_file,
        forget_forced,
        hub_repo,
        hub_settings,
        is_intact,
        pretrained_file,
    )

    repo = hub_repo(arch)
    if from_path is not None:
        return _import_weights(arch, repo, Path(from_path).expanduser(), force)
    before = cached_file(repo)
    present = before is not None and not force and is_intact(before)
    path = pretrained_file(arch, force=force)
    replaced = forget_forced(arch)
    endpoint, _ = hub_settings()
    source = "cache" if present else f"Hub {endpoint or 'https://huggingface.co'}"
    return _result(arch, repo, path, present and not replaced, source)


def _result(arch: str, repo: str, path: Path, present: bool, source: str) -> WeightsResult:
    from smokerdet.models import tag_of

    return WeightsResult(
        arch, tag_of(repo), str(path), present, sha256_file(path), path.stat().st_size, source
    )


def not_imagenet(model: Any, sd: dict[str, Any], arch: str, src: Path) -> str | None:
    """Why the state dict ``sd`` (from ``src``) is not ``arch``'s ImageNet classifier, or None.

    A CNN's weights do not show the input size they were trained at, but the head shows what
    they were trained for: ImageNet's has one row per ImageNet class (1000 for in1k tags, as
    many as the default tag's config says), a smokerdet model's one row, a backbone-only file
    none at all. ``model`` is a smokerdet model of ``arch`` (one logit) whose backbone ``sd``
    already fits.
    """
    from timm.models import get_pretrained_cfg

    from smokerdet.models import classifier_prefixes

    classes = int(getattr(get_pretrained_cfg(arch), "num_classes", 0) or 1000)
    own = model.state_dict()
    for prefix in classifier_prefixes(model):
        for key in (f"{prefix}.weight", f"{prefix}.bias"):
            if key not in own:
                continue
            expected = (classes, *own[key].shape[1:])
            imagenet = f"where ImageNet weights have {classes} classes"
            if key not in sd:
                return f"it has no classifier head ({key} is missing), {imagenet}"
            shape = tuple(sd[key].shape)
            if shape != expected:
                head = (
                    f"a {shape[0]}-class head"
                    if shape[1:] == expected[1:]
                    else f"a head of shape {shape}"
                )
                who = "a smokerdet model" if _is_smokerdet(src) else "a classifier"
                return f"it is {who} with {head} ({key}), {imagenet}"
    return None


def _is_smokerdet(src: Path) -> bool:
    """Whether ``src`` is a smokerdet model's weights: beside a ``model.json``, or saved with
    smokerdet's ``arch`` entry in its safetensors metadata."""
    if (src.parent / "model.json").is_file():
        return True
    if src.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with contextlib.suppress(Exception):
        with safe_open(str(src), "pt") as f:
            return "arch" in (f.metadata() or {})
    return False


def _import_weights(arch: str, repo: str, src: Path, force: bool) -> WeightsResult:
    import torch

    from smokerdet.models import (
        cached_file,
        create_model,
        forget_forced,
        import_weights,
        load_backbone_state,
        read_state_dict,
    )

    if not src.is_file():
        raise DownloadError(f"--from {src}: no such file")
    sd = read_state_dict(src)
    model = create_model(arch)
    load_backbone_state(
        model,
        sd,
        str(src),
        hint=f"give the architecture the file was saved from: "
        f"smokerdet download weights ARCH --from {src}",
    )
    problem = not_imagenet(model, sd, arch, src)
    if problem is not None:
        return _import_forced(arch, src, sd, problem, force)
    cached = cached_file(repo)
    if cached is not None:
        old = read_state_dict(cached)
        same = old.keys() == sd.keys() and all(torch.equal(old[k], sd[k]) for k in sd)
        if same:
            replaced = forget_forced(arch)
            return _result(arch, repo, cached, not replaced, f"--from {src}")
        if not force:
            raise DownloadError(
                f"other weights for {arch} are already cached; {src} was not imported",
                hint=f"add --force to replace them: smokerdet download weights {arch} "
                f"--from {src} --force",
            )
    raw = src if src.suffix == ".safetensors" else None
    path = import_weights(repo, sd, raw)
    forget_forced(arch)
    return _result(arch, repo, path, False, f"--from {src}")


def _import_forced(
    arch: str, src: Path, sd: dict[str, Any], problem: str, force: bool
) -> WeightsResult:
    """Refuse a file that is not ImageNet weights, or with ``force`` keep it apart."""
    from smokerdet.models import import_forced

    if not force:
        if (src.parent / "model.json").is_file():
            start = f"start from its model with `smokerdet train --init {src.parent}`"
        elif _is_smokerdet(src):
            start = "start from its model with `smokerdet train --init MODEL_FOLDER`"
        else:
            start = f"use it for one run with `smokerdet train --weights {src}`"
        raise WeightsError(
            f"{src} is not ImageNet weights for {arch}: {problem}; it was not imported",
            hint=f"{start}; or add --force to make it {arch}'s --pretrained backbone anyway "
            "(recorded as a forced import)",
        )
    raw = src if src.suffix == ".safetensors" else None
    kept = import_forced(arch, sd, raw, f"--from {src}", problem)
    size = kept.path.stat().st_size
    return WeightsResult(
        arch, kept.tag, str(kept.path), False, kept.sha256, size, f"--from {src}", kept.kind
    )


def weights_status() -> list[dict[str, Any]]:
    """What ``--pretrained`` would use for each documented architecture and each one with a
    forced import: the default ImageNet tag and whether it is cached, or the forced import."""
    from smokerdet.models import cached_file, forced_archs, forced_import, hub_repo, tag_of

    out = []
    for arch in dict.fromkeys([*LISTED_ARCHS, *forced_archs()]):
        path: Path | None
        forced = forced_import(arch)
        if forced is not None:
            tag, path, kind = forced.tag, forced.path, forced.kind
        else:
            repo = hub_repo(arch)
            tag, path, kind = tag_of(repo), cached_file(repo), "imagenet"
        out.append(
            {
                "arch": arch,
                "tag": tag,
                "kind": kind,
                "path": str(path) if path else "",
                "present": path is not None,
                "size_bytes": path.stat().st_size if path else 0,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Every part of one command


@dataclass
class PartResult:
    """One row of ``smokerdet download``'s report: a part, where it came from, how it went."""

    part: str
    """``dataset`` or ``weights ARCH``."""
    source: str
    """Where it came from, or what was tried (``github (https://…)``, ``--from FILE``)."""
    result: str
    """``installed``, ``already present`` or ``failed``."""
    message: str
    """One line: where it is now, or what went wrong."""
    hint: str | None = None
    exit_code: int = 0
    dataset: DatasetResult | None = None
    weights: WeightsResult | None = None
    error: SmokerdetError | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "source": self.source,
            "result": self.result,
            "message": self.message,
            "hint": self.hint,
            "dataset": self.dataset.to_dict() if self.dataset else None,
            "weights": self.weights.to_dict() if self.weights else None,
        }


@dataclass
class DownloadReport:
    """Every part ``smokerdet download`` was asked for, in order, each tried."""

    parts: list[PartResult]

    @property
    def ok(self) -> bool:
        return all(p.result != "failed" for p in self.parts)

    @property
    def exit_code(self) -> int:
        """0 when every part is in place, else the first failure's exit code."""
        return next((p.exit_code for p in self.parts if p.result == "failed"), 0)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "parts": [p.to_dict() for p in self.parts]}


def _failed(part: str, source: str, e: SmokerdetError) -> PartResult:
    return PartResult(part, source, "failed", e.message, e.hint, e.exit_code, error=e)


def _dataset_part(source: str | None, from_path: Any, **kwargs: Any) -> PartResult:
    tried = f"--from {from_path}" if from_path is not None else (source or "every source")
    try:
        ds = download_dataset(source=source, from_path=from_path, **kwargs)
    except SmokerdetError as e:
        return _failed("dataset", tried, e)
    if ds.already_present:
        return PartResult("dataset", "-", "already present", ds.path, dataset=ds)
    v = ds.verify
    summary = f"{ds.path} ({v.total} images, SHA-256 matched {v.hashes_matched})" if v else ds.path
    return PartResult("dataset", ds.source, "installed", summary, dataset=ds)


def _weights_part(arch: str, from_path: Any, force: bool) -> PartResult:
    tried = f"--from {from_path}" if from_path is not None else "Hugging Face Hub"
    try:
        w = download_weights(arch, from_path=from_path, force=force)
    except SmokerdetError as e:
        return _failed(f"weights {arch}", tried, e)
    result = "already present" if w.already_present else "installed"
    return PartResult(f"weights {arch}", w.source, result, w.path, weights=w)


def _dataset_errand(source: str | None, from_path: Any, force: bool) -> str | None:
    """What fetching the dataset is about to do, when it is more than finding it present."""
    if from_path is not None:
        return f"dataset: importing {from_path}"
    if default_dataset_dir().is_dir() and not force:
        return None
    tried = source or ", then ".join(s.id for s in SOURCES)
    return f"dataset: downloading from {tried}"


def _weights_errand(arch: str, from_path: Any, force: bool) -> str | None:
    """What fetching ``arch``'s weights is about to do, when it is more than a cache hit."""
    from smokerdet.models import cached_file, hub_repo, hub_settings

    if from_path is not None:
        return f"weights {arch}: importing {from_path}"
    try:
        cached = cached_file(hub_repo(arch))
    except SmokerdetError:
        return None  # an unknown arch: its part says so
    if cached is not None and not force:
        return None
    endpoint, _ = hub_settings()
    return f"weights {arch}: asking the Hub at {endpoint or 'https://huggingface.co'}"


def download_all(
    what: str | None,
    archs: list[str],
    *,
    source: str | None = None,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_partial: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    on_part: Callable[[str], None] | None = None,
) -> DownloadReport:
    """``smokerdet download``: the dataset and/or weights (``resnet50`` by default), each tried.

    A failed part is reported (its message, hint and exit code) and the next part is tried
    all the same. Usage errors (an unknown ``--source``) are raised before anything is tried.

    Args:
        on_part: told one line before a part goes to the network or imports a file
            (``weights resnet50: asking the Hub at https://huggingface.co``), so a slow
            network is never silence; not told of a part already present.

    Raises:
        ConfigError: ``source`` is neither a known source id nor a URL.
    """
    from smokerdet.models import DEFAULT_ARCH

    def tell(line: str | None) -> None:
        if line is not None and on_part is not None:
            on_part(line)

    parts = []
    if what in (None, "dataset"):
        if from_path is None or what is None:
            pick_sources(source, SOURCES)  # an unknown --source is a usage error, not a failure
        tell(_dataset_errand(source, from_path if what == "dataset" else None, force))
        parts.append(
            _dataset_part(
                source,
                from_path if what == "dataset" else None,
                force=force,
                allow_partial=allow_partial,
                options=HttpOptions(progress=progress),
            )
        )
    if what in (None, "weights"):
        imported = from_path if what == "weights" else None
        for arch in archs or [DEFAULT_ARCH]:
            tell(_weights_errand(arch, imported, force))
            parts.append(_weights_part(arch, imported, force))
    return DownloadReport(parts)


def list_status() -> dict[str, Any]:
    """``download --list``: sources, architectures, and what is present."""
    return {
        "sources": [asdict(s) for s in SOURCES],
        "dataset": dataset_status(),
        "weights": weights_status(),
    }
