"""timm's ImageNet weights through the Hugging Face Hub client, cached in smokerdet's data dir.

``huggingface_hub`` does the fetching, so ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``,
proxies, resume after a dropped connection and the cache layout are the Hub's own. The cache is
``paths.weights_dir()`` (``models--timm--resnet50.a1_in1k/{blobs,refs,snapshots}``). Once a file
is there it is used without any request, so later runs work offline. Each use checks the
cached blob against its name (the SHA-256 the Hub gave as its ETag) and fetches a corrupt one
again. ``import_weights`` puts a file brought in by hand (``--from``) into the same layout.

A file that is not an ImageNet classifier (a smokerdet model, a backbone without its head) can
still be imported with ``--force``: it is kept apart from the Hub's layout, under
``forced/<arch>/`` with an ``import.json`` saying where it came from and why it is not ImageNet,
so it is never taken for (or recorded as) the ``a1_in1k`` weights. ``--pretrained`` uses it,
with a warning, until ``smokerdet download weights ARCH`` installs ImageNet weights again.

Example:
    >>> from smokerdet.models.hub import hub_repo
    >>> hub_repo("resnet50")  # doctest: +SKIP
    'timm/resnet50.a1_in1k'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from smokerdet._io import atomic_write_bytes, atomic_write_json, sha256_file
from smokerdet.errors import WeightsError
from smokerdet.paths import weights_dir

log = logging.getLogger("smokerdet")

FILENAME = "model.safetensors"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "ON", "YES", "TRUE"}
DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds to wait for a TCP connection to the Hub before saying it cannot be reached.
PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")  # fmt: skip
#: Weights imported with ``--force`` (not ImageNet): ``weights_dir()/forced/<arch>/``.
FORCED = "forced"
IMPORT_RECORD = "import.json"


def hub_repo(arch: str) -> str:
    """The Hub repo timm takes ``arch``'s default ImageNet weights from (``timm/resnet50.a1_in1k``).

    Raises:
        UnknownArchError: timm has no such model.
        WeightsError: timm knows no Hub weights for it.
    """
    from timm.models import get_pretrained_cfg

    from smokerdet.models.archs import check_arch

    check_arch(arch)
    cfg = get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not repo:
        raise WeightsError(
            f"timm knows no Hub weights for {arch}",
            hint=f"import a file: smokerdet download weights {arch} --from FILE",
        )
    return str(repo)


def tag_of(repo: str) -> str:
    """``timm/resnet50.a1_in1k`` -> ``resnet50.a1_in1k``."""
    return repo.removeprefix("timm/")


def hub_settings() -> tuple[str | None, bool]:
    """``(endpoint, offline)`` read from the environment now, not when the Hub was imported.

    ``huggingface_hub.constants`` reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, at import
    (timm imports it early). So that a variable set or cleared later (by a library user, or a
    test) still counts, the endpoint is passed to each call as ``endpoint=``, and offline means
    the Hub's own flag or the variable as it is now. Everything else (``HF_TOKEN``, proxies) the
    Hub reads at call time itself.
    """
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or None
    offline = constants.is_offline_mode() or (
        os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    )
    return (endpoint.rstrip("/") if endpoint else None), offline


def cached_file(repo: str) -> Path | None:
    """The cached weights file of ``repo``, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, FILENAME, cache_dir=weights_dir())
    return Path(found) if isinstance(found, str) else None


def is_intact(path: Path) -> bool:
    """Whether a cached file still has the bytes its blob name (a SHA-256) promises.

    A blob named otherwise (a git SHA-1, or a copy where symlinks are not supported) can't be
    checked this way and counts as intact; loading it still checks every tensor.
    """
    blob = path.resolve()
    if not _SHA256.fullmatch(blob.name):
        return True
    return sha256_file(blob) == blob.name


def pretrained_file(arch: str, *, force: bool = False) -> Path:
    """Path of ``arch``'s ImageNet weights, downloading them through the Hub on first use.

    A cached, intact file is returned without any request. A corrupt one is fetched again.

    Raises:
        WeightsError: offline without a cache, no network, the Hub refused (401/403) or has no
            such repo (404); each with a hint.
    """
    repo = hub_repo(arch)
    cached = cached_file(repo)
    if cached is not None and not force:
        if is_intact(cached):
            return cached
        log.warning("the cached weights for %s are corrupt; fetching them again", arch)
        force = True
    endpoint, offline = hub_settings()
    if offline:
        state = "corrupt in the cache" if cached is not None else "not cached"
        raise WeightsError(
            f"ImageNet weights for {arch} are {state} and HF_HUB_OFFLINE is set",
            hint=f"unset HF_HUB_OFFLINE, or import a file: smokerdet download weights {arch} "
            "--from FILE",
        )
    if not reachable(endpoint):
        raise _unreachable(arch, endpoint)
    path = _hub_download(arch, repo, endpoint, force)
    if not is_intact(path):
        _forget(repo)
        raise WeightsError(
            f"the weights downloaded for {arch} do not match their SHA-256; they were deleted",
            hint="run the command again; if it persists, check HF_ENDPOINT",
        )
    return path


def reachable(endpoint: str | None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub's host opens within ``timeout`` seconds.

    Offline, the Hub client retries for about half a minute (five tries, backing off 1 to 8 s)
    before it gives up, saying nothing meanwhile; one failed connection here says it at once.
    Behind a proxy the Hub's host is not ours to reach, so nothing is probed.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    url = urlsplit(endpoint or DEFAULT_ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:  # no route, refused, DNS failed (gaierror), timed out
        return False
    return True


def _hub_download(arch: str, repo: str, endpoint: str | None, force: bool) -> Path:
    from huggingface_hub import hf_hub_download

    from smokerdet.__about__ import __version__

    existed = weights_dir().exists()
    try:
        with _quiet_hub_retries():
            return Path(
                hf_hub_download(
                    repo,
                    FILENAME,
                    cache_dir=weights_dir(),
                    endpoint=endpoint,
                    force_download=force,
                    library_name="smokerdet",
                    library_version=__version__,
                    tqdm_class=_progress_bar(),
                )
            )
    except Exception as e:
        if cached_file(repo) is None:
            _forget(repo, remove_root=not existed)
        raise _hub_error(e, arch, repo, endpoint) from None


@contextlib.contextmanager
def _quiet_hub_retries() -> Iterator[None]:
    """Silence the Hub client's per-retry warnings (raw socket errors, one line per try):
    smokerdet reports the outcome once, as an ``Error:`` with a hint."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)


def _progress_bar() -> Any:
    """tqdm on stderr, shown even when stderr is not a terminal (the Hub's own bar is not)."""
    from huggingface_hub import constants

    if constants.HF_HUB_DISABLE_PROGRESS_BARS:
        return None  # the Hub's bar, which honours the variable
    from tqdm.std import tqdm

    return tqdm


def status_of(e: BaseException) -> int | None:
    """The HTTP status behind a Hub error, looking through the chain it was raised from."""
    seen: BaseException | None = e
    while seen is not None:
        response = getattr(seen, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return int(response.status_code)
        seen = seen.__cause__ or seen.__context__
    return None


def _hub_error(e: Exception, arch: str, repo: str, endpoint: str | None) -> WeightsError:
    where = endpoint or DEFAULT_ENDPOINT
    from_hint = f"smokerdet download weights {arch} --from FILE"
    status = status_of(e)
    if status in (401, 403):
        return WeightsError(
            f"the Hub at {where} refused {repo} (HTTP {status}): the repo is gated or private",
            hint=f"accept its terms and set HF_TOKEN (or `hf auth login`), or import a file: "
            f"{from_hint}",
        )
    if status == 404:
        return WeightsError(
            f"the Hub at {where} has no {repo}/{FILENAME} (HTTP 404)",
            hint=f"check HF_ENDPOINT if it points to a mirror, or import a file: {from_hint}",
        )
    if status is not None:
        return WeightsError(
            f"the Hub at {where} answered HTTP {status} for {repo}",
            hint=f"try again later, or import a file: {from_hint}",
        )
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return WeightsError(
            f"the download of {repo} was cut short", hint="run the command again; it starts over"
        )
    return _unreachable(arch, endpoint)


def _unreachable(arch: str, endpoint: str | None) -> WeightsError:
    return WeightsError(
        f"cannot reach the Hub at {endpoint or DEFAULT_ENDPOINT} for {arch}'s ImageNet weights "
        "(no network?)",
        hint=f"import a file: smokerdet download weights {arch} --from FILE; or set "
        "HF_ENDPOINT to a reachable mirror",
    )


def _repo_folder(repo: str) -> Path:
    return weights_dir() / ("models--" + repo.replace("/", "--"))


def _forget(repo: str, remove_root: bool = False) -> None:
    """Remove what a failed download left of ``repo`` (and the cache itself if it was new)."""
    shutil.rmtree(_repo_folder(repo), ignore_errors=True)
    shutil.rmtree(weights_dir() / ".locks" / _repo_folder(repo).name, ignore_errors=True)
    if remove_root:
        shutil.rmtree(weights_dir(), ignore_errors=True)


def import_weights(repo: str, state_dict: dict[str, Any], raw: Path | None) -> Path:
    """Install verified weights as ``repo``'s cached file, replacing any cached one atomically.

    Args:
        repo: the Hub repo the file stands in for.
        state_dict: the tensors, already checked to fit the architecture.
        raw: the user's ``.safetensors`` file, copied byte for byte; None to write
            ``state_dict`` as safetensors (a ``.pth`` import).

    The layout is the Hub's: ``blobs/<sha256>``, ``snapshots/<commit>/model.safetensors`` (a
    link to the blob) and ``refs/main``. The commit id is derived from the file's SHA-256, as
    an import has no real one.
    """
    folder = _repo_folder(repo)
    existed = weights_dir().exists()
    staged: Path | None = None
    try:
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder / "blobs", delete=False) as tmp:
            staged = Path(tmp.name)
        if raw is not None:
            shutil.copyfile(raw, staged)
        else:
            staged.write_bytes(_safetensors_bytes(state_dict))
        digest = sha256_file(staged)
        os.replace(staged, folder / "blobs" / digest)
        commit = hashlib.sha1(f"smokerdet import {digest}".encode()).hexdigest()
        pointer = folder / "snapshots" / commit / FILENAME
        pointer.parent.mkdir(parents=True, exist_ok=True)
        _link(Path("..") / ".." / "blobs" / digest, folder / "blobs" / digest, pointer)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main.tmp").write_text(commit)
        os.replace(folder / "refs" / "main.tmp", folder / "refs" / "main")
    except OSError as e:
        if staged is not None:
            staged.unlink(missing_ok=True)
        if cached_file(repo) is None:
            _forget(repo, remove_root=not existed)
        raise WeightsError(f"cannot write the weights cache {weights_dir()}: {e}") from None
    return pointer


def _link(relative: Path, blob: Path, pointer: Path) -> None:
    """Point ``pointer`` at the blob: a relative symlink, or a copy where links fail."""
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(relative)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, pointer)


def _safetensors_bytes(state_dict: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state_dict.items()})


# ---------------------------------------------------------------------------------------------
# Weights imported with --force, and what --pretrained uses


@dataclass(frozen=True)
class Backbone:
    """The weights ``--pretrained`` starts an architecture from, and what they are.

    Attributes:
        path: the safetensors file.
        tag: the timm tag (``resnet50.a1_in1k``), or ``resnet50 (forced import, not ImageNet)``.
        kind: ``imagenet``, or ``forced-import`` for a file imported with ``--force``.
        sha256: of the file's bytes.
        reason: why a forced import is not ImageNet weights ("" for ImageNet).
    """

    path: Path
    tag: str
    kind: str
    sha256: str
    reason: str = ""

    def provenance(self) -> dict[str, Any]:
        """What ``model.json`` records about the start of a ``--pretrained`` run."""
        return {"weights": self.tag, "weights_kind": self.kind, "weights_sha256": self.sha256}


def forced_tag(arch: str) -> str:
    return f"{arch} (forced import, not ImageNet)"


def _forced_dir(arch: str) -> Path:
    return weights_dir() / FORCED / arch


def forced_import(arch: str) -> Backbone | None:
    """The weights imported for ``arch`` with ``--force``, or None; reads no weights."""
    folder = _forced_dir(arch)
    try:
        record = json.loads((folder / IMPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not (folder / FILENAME).is_file():
        return None
    return Backbone(
        folder / FILENAME,
        forced_tag(arch),
        "forced-import",
        str(record.get("sha256", "")),
        str(record.get("reason", "")),
    )


def import_forced(
    arch: str, state_dict: dict[str, Any], raw: Path | None, source: str, reason: str
) -> Backbone:
    """Keep a file that is not ImageNet weights as ``arch``'s backbone, apart from the Hub cache.

    Args:
        arch: the architecture it fits.
        state_dict: its tensors, already checked to fit ``arch``'s backbone.
        raw: the user's ``.safetensors`` file, kept byte for byte; None to write ``state_dict``.
        source: where it came from (``--from FILE``).
        reason: why it is not ImageNet weights, as the check said.
    """
    folder = _forced_dir(arch)
    blob = raw.read_bytes() if raw is not None else _safetensors_bytes(state_dict)
    digest = hashlib.sha256(blob).hexdigest()
    imported = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {"arch": arch, "sha256": digest, "source": source, "imported": imported,
              "reason": reason}  # fmt: skip
    try:
        atomic_write_bytes(folder / FILENAME, blob)
        atomic_write_json(folder / IMPORT_RECORD, record)
    except OSError as e:
        raise WeightsError(f"cannot write the weights cache {weights_dir()}: {e}") from None
    return Backbone(folder / FILENAME, forced_tag(arch), "forced-import", digest, reason)


def forced_archs() -> list[str]:
    """The architectures with a forced import, sorted."""
    root = weights_dir() / FORCED
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def forget_forced(arch: str) -> bool:
    """Remove ``arch``'s forced import, if any (ImageNet weights answer again); True if one was."""
    folder = _forced_dir(arch)
    if not folder.exists():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # forced/ itself, once empty
    return True


def pretrained_weights(arch: str) -> Backbone:
    """What ``--pretrained`` starts ``arch`` from: a forced import if there is one, said with a
    warning, else its ImageNet weights (:func:`pretrained_file`, which may download them).

    Raises:
        WeightsError: the forced import no longer matches its SHA-256, or what
            :func:`pretrained_file` raises.
    """
    forced = forced_import(arch)
    if forced is not None:
        if sha256_file(forced.path) != forced.sha256:
            raise WeightsError(
                f"the weights imported with --force for {arch} do not match their SHA-256 in "
                f"{forced.path.parent / IMPORT_RECORD}",
                hint=f"import them again: smokerdet download weights {arch} --from FILE "
                f"--force, or go back to ImageNet weights: smokerdet download weights {arch}",
            )
        log.warning(
            "--pretrained uses weights imported with --force (not ImageNet) for %s: %s",
            arch,
            forced.reason,
        )
        return forced
    return _imagenet(arch, pretrained_file(arch))


def pretrained_provenance(arch: str) -> dict[str, Any]:
    """What ``model.json`` records for a run that just loaded ``--pretrained`` weights for
    ``arch``: the same choice as :func:`pretrained_weights`, read from the cache without any
    request or warning."""
    forced = forced_import(arch)
    if forced is not None:
        return forced.provenance()
    cached = cached_file(hub_repo(arch))
    if cached is None:
        return {"weights": tag_of(hub_repo(arch)), "weights_kind": "imagenet"}
    return _imagenet(arch, cached).provenance()


def _imagenet(arch: str, path: Path) -> Backbone:
    blob = path.resolve().name  # the Hub names a blob by its SHA-256 (so does import_weights)
    sha = blob if _SHA256.fullmatch(blob) else sha256_file(path)
    return Backbone(path, tag_of(hub_repo(arch)), "imagenet", sha)
