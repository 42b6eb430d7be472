"""Models shared through the Hugging Face Hub: ``--model hf://ORG/NAME[@REVISION]``.

A shared model is a Hub repo holding a model folder's files (``model.json``, the weights, the
ONNX file, the familiarity and rehearsal files), a model card (``README.md``) and
``smokerdet.json``, the manifest: every file's SHA-256 (``smokerdet models push`` writes them,
see :mod:`smokerdet.models.publish`). Pulling one downloads the manifest, then every file it
lists at the manifest's commit, into ``<data dir>/hub`` (the Hub's cache layout), and checks
each file against its SHA-256 on every use. A file that does not match is removed from the
cache and refused: a corrupt or tampered download is never used.

``huggingface_hub`` does the transfers, so ``HF_ENDPOINT``, ``HF_TOKEN`` (private repos),
``HF_HUB_OFFLINE`` and proxies are the Hub's own. Once pulled, a model works offline: the
cache answers for the revision it was pulled at. Only ``huggingface_hub`` is imported here,
never torch, so ``predict`` stays on ONNX Runtime.

Example:
    >>> from smokerdet.models.share import parse_hf
    >>> parse_hf("hf://acme/smokerdet-site@v2")
    ('acme/smokerdet-site', 'v2')
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from smokerdet._io import sha256_file
from smokerdet.errors import CheckpointError, ConfigError, ModelNotFoundError
from smokerdet.models.hub import DEFAULT_ENDPOINT, hub_settings, reachable, status_of
from smokerdet.paths import hub_dir

SCHEME = "hf://"
MANIFEST = "smokerdet.json"
MANIFEST_FORMAT = 1
CARD = "README.md"
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
#: A file a manifest may list: a plain name in the repo's top folder.
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_hf(spec: object) -> bool:
    """Whether a model spec names a model on the Hub (``hf://ORG/NAME[@REVISION]``)."""
    return isinstance(spec, str) and spec.startswith(SCHEME)


def parse_hf(spec: str) -> tuple[str, str | None]:
    """``hf://ORG/NAME[@REVISION]`` -> ``(ORG/NAME, REVISION or None)``.

    Raises:
        ConfigError: not of that form.
    """
    repo, _, revision = spec.removeprefix(SCHEME).partition("@")
    if not REPO_ID.fullmatch(repo) or (revision and not _REVISION.fullmatch(revision)):
        raise ConfigError(
            f"{spec!r} is not a Hub model: expected hf://ORG/NAME or hf://ORG/NAME@REVISION",
            hint="REVISION is a branch, a tag or a commit id",
        )
    return repo, revision or None


def pull(spec: str) -> tuple[str, Path]:
    """Fetch a shared model (or find it in the cache) and check every file; its folder.

    Returns:
        ``(name, folder)``: the name is ``hf://ORG/NAME@<commit>`` (the first 7 hex digits of
        the commit it was pulled at), the folder the cache's snapshot of that commit.

    Raises:
        ConfigError: ``spec`` is not ``hf://ORG/NAME[@REVISION]``.
        ModelNotFoundError: no such repo, revision or manifest; a private repo without a
            token; offline without a cached copy; the Hub unreachable.
        CheckpointError: the manifest is invalid, or a file does not match its SHA-256 (it is
            removed from the cache).
    """
    repo, revision = parse_hf(spec)
    endpoint, offline = hub_settings()
    local = offline or not reachable(endpoint)
    manifest_path = _download(spec, repo, MANIFEST, revision, endpoint, local)
    folder = manifest_path.parent  # snapshots/<commit>/
    files = _read_manifest(spec, manifest_path)
    for name, sha in files.items():
        path = _download(spec, repo, name, folder.name, endpoint, local)
        if sha256_file(path) != sha:
            _forget(path)
            raise CheckpointError(
                f"{name} from {spec} does not match its SHA-256 in {MANIFEST}; it was removed "
                "from the cache and not used",
                hint="pull it again (run the command again); if it persists, the repo or a "
                "mirror in HF_ENDPOINT serves altered files",
            )
    return f"{SCHEME}{repo}@{folder.name[:7]}", folder


def _read_manifest(spec: str, path: Path) -> dict[str, str]:
    """The manifest's ``{file: sha256}``; an invalid manifest is removed from the cache."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        files = raw["files"]
        ok = (
            raw.get("format") == MANIFEST_FORMAT
            and isinstance(files, dict)
            and all(isinstance(n, str) and _FILE.fullmatch(n) and n != MANIFEST for n in files)
            and all(isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h) for h in files.values())
            and "model.json" in files
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        _forget(path)
        raise CheckpointError(
            f"{spec}: {MANIFEST} is not a smokerdet manifest (format {MANIFEST_FORMAT}, files "
            "with their SHA-256, model.json among them)",
            hint="is this repo a model pushed with `smokerdet models push`?",
        )
    return dict(files)


def _download(
    spec: str, repo: str, name: str, revision: str | None, endpoint: str | None, local: bool
) -> Path:
    from huggingface_hub import hf_hub_download

    from smokerdet.__about__ import __version__

    try:
        return Path(
            hf_hub_download(
                repo,
                name,
                revision=revision,
                cache_dir=hub_dir(),
                endpoint=endpoint,
                local_files_only=local,
                library_name="smokerdet",
                library_version=__version__,
            )
        )
    except Exception as e:
        raise _pull_error(e, spec, name, endpoint, local) from None


def _pull_error(
    e: Exception, spec: str, name: str, endpoint: str | None, local: bool
) -> ModelNotFoundError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = endpoint or DEFAULT_ENDPOINT
    if isinstance(e, LocalEntryNotFoundError) or local:
        return ModelNotFoundError(
            f"{spec} is not in the cache, and the Hub is out of reach (HF_HUB_OFFLINE is set, "
            f"or {where} does not answer)",
            hint=f"pull it once while online (any command with --model {spec}), or check the "
            "network and HF_ENDPOINT",
        )
    if isinstance(e, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"the Hub at {where} has no repo {spec.removeprefix(SCHEME).split('@')[0]}, or it "
            f"is private (HTTP {status_of(e)})",
            hint="check the name; for a private repo set HF_TOKEN to a token that can read it",
        )
    if isinstance(e, RevisionNotFoundError):
        return ModelNotFoundError(
            f"{spec}: the Hub at {where} has no such revision",
            hint="give a branch, a tag or a commit id after @, or none for main",
        )
    if isinstance(e, EntryNotFoundError):
        return ModelNotFoundError(
            f"{spec}: the repo has no {name}; it is not a model pushed with smokerdet",
            hint="share a model with `smokerdet models push NAME ORG/NAME`",
        )
    status = status_of(e)
    return ModelNotFoundError(
        f"cannot fetch {name} of {spec} from the Hub at {where}"
        + (f" (HTTP {status})" if status else f": {type(e).__name__}"),
        hint="run the command again; if it persists, check the network and HF_ENDPOINT",
    )


def _forget(path: Path) -> None:
    """Remove a cached file: its snapshot entry and the blob it points to, so that the next
    pull downloads it again instead of linking the same bytes."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)
