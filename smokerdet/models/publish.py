"""``smokerdet models push NAME ORG/NAME``: share a model on the Hugging Face Hub.

One commit puts the model folder's files in the repo (created if needed, private on request):
``model.json`` without local paths, the weights, the ONNX file (exported on the way when the
folder has none, or a stale one), the familiarity, rehearsal and training-photo files when the
folder has them (the rehearsal file holds pooled *features* of training photos, not photos), the
training curves, a model card (``README.md``) that says of each figure what kind it is, and
``smokerdet.json``: every file's SHA-256, which every pull checks
(:mod:`smokerdet.models.share`). ``HF_TOKEN`` (or ``hf auth login``) gives write access.

Example:
    >>> from smokerdet.models.publish import push_model
    >>> result = push_model("my-site", "acme/smokerdet-site", private=True)  # doctest: +SKIP
    >>> result.spec  # doctest: +SKIP
    'hf://acme/smokerdet-site@1f0c...'
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smokerdet.__about__ import __version__
from smokerdet._io import sha256_file
from smokerdet.errors import ConfigError, SmokerdetError
from smokerdet.models.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    ModelMeta,
    matching_weights,
    read_meta,
)
from smokerdet.models.hub import DEFAULT_ENDPOINT, hub_settings, reachable, status_of
from smokerdet.models.onnx_format import ONNX_FILE
from smokerdet.models.registry import resolve_model
from smokerdet.models.rehearsal import REHEARSAL_FILE
from smokerdet.models.share import CARD, MANIFEST, MANIFEST_FORMAT, REPO_ID, SCHEME
from smokerdet.plots import TRAINING_FILE

#: Files of a model folder that go to the Hub when present, beside model.json, the weights
#: and the ONNX file. (``familiarity.safetensors`` is named by smokerdet.inference, which this
#: package does not import.)
OPTIONAL_FILES = ("familiarity.safetensors", REHEARSAL_FILE, "training_photos.json", TRAINING_FILE)
#: ``train_args`` entries that hold local paths; only their last part is shared.
_PATH_ARGS = ("data", "weights", "init")


class ShareError(SmokerdetError):
    """A model could not be pushed to the Hub: refused, unreachable, or offline."""


@dataclass
class PushResult:
    """What :func:`push_model` did.

    Attributes:
        model: the model's name here.
        repo_id: ``ORG/NAME`` on the Hub.
        commit: the commit id the files landed in.
        commit_url: the commit's page.
        private: whether ``--private`` was asked (an existing repo keeps its visibility).
        files: every file of the model with its SHA-256, as the manifest lists them.
        exported: whether the ONNX file was exported for the push (the folder had none, or a
            stale one).
    """

    model: str
    repo_id: str
    commit: str
    commit_url: str
    private: bool
    files: dict[str, str] = field(default_factory=dict)
    exported: bool = False

    @property
    def spec(self) -> str:
        """``hf://ORG/NAME@COMMIT``: this very upload, whatever is pushed later."""
        return f"{SCHEME}{self.repo_id}@{self.commit}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spec": self.spec}


def push_model(
    model: str | None, repo_id: str, *, private: bool = False, message: str | None = None
) -> PushResult:
    """Upload a model folder to the Hub repo ``repo_id`` in one commit, with its card and manifest.

    Args:
        model: a model name, folder, ``latest``, ``default`` or ``hf://`` spec; None for the
            model that answers by default.
        repo_id: ``ORG/NAME`` (a user name counts as an ORG).
        private: create the repo private (``HF_TOKEN`` then reads it too).
        message: the commit message (default: ``smokerdet models push NAME``).

    Raises:
        ConfigError: ``repo_id`` is not ``ORG/NAME``.
        ModelNotFoundError, CheckpointError: no such model, or a torn folder.
        ShareError: offline, the Hub unreachable, or it refused (no token, no write access).
    """
    if not REPO_ID.fullmatch(repo_id):
        raise ConfigError(
            f"REPO_ID {repo_id!r} is not ORG/NAME",
            hint="e.g. smokerdet models push my-site acme/smokerdet-site",
        )
    name, folder = resolve_model(
        model, how="give NAME as a model folder: smokerdet models push PATH ORG/NAME"
    )
    meta = read_meta(folder)
    weights, _ = matching_weights(folder, meta.weights_sha256)
    endpoint = _online()
    with tempfile.TemporaryDirectory(prefix="smokerdet-push-") as tmp:
        stage = Path(tmp)
        onnx, exported = _onnx_file(folder, meta, stage)
        files = {META_FILE: _write(stage / META_FILE, _shared_meta(meta)), WEIGHTS_FILE: weights}
        if onnx is not None:
            files[ONNX_FILE] = onnx
        files.update({n: folder / n for n in OPTIONAL_FILES if (folder / n).is_file()})
        sums = {n: sha256_file(p) for n, p in files.items()}
        manifest = {"format": MANIFEST_FORMAT, "smokerdet": __version__, "files": sums}
        files[MANIFEST] = _write(stage / MANIFEST, manifest)
        card = model_card(meta, repo_id, sums)
        files[CARD] = stage / CARD
        files[CARD].write_text(card, encoding="utf-8")
        commit, url = _upload(
            repo_id, files, endpoint, private, message or f"smokerdet models push {name}"
        )
    return PushResult(name, repo_id, commit, url, private, sums, exported)


def _online() -> str | None:
    """The Hub's endpoint, checked reachable; a push has no offline fallback."""
    endpoint, offline = hub_settings()
    where = endpoint or DEFAULT_ENDPOINT
    if offline:
        raise ShareError(
            "models push needs the Hub, and HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE and run it again",
        )
    if not reachable(endpoint):
        raise ShareError(
            f"cannot reach the Hub at {where} (no network?)",
            hint="check the network, or set HF_ENDPOINT to a reachable Hub",
        )
    return endpoint


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def _shared_meta(meta: ModelMeta) -> dict[str, Any]:
    """``model.json`` as shared: the paths of this machine cut to their last part."""
    d = meta.to_dict()
    args = d.get("train_args") or {}
    provenance = d.get("provenance") or {}
    provenance.pop("init_path", None)
    places = [(args, key) for key in _PATH_ARGS] + [(provenance, "weights")]
    places.append((d.get("data_fingerprint") or {}, "root"))
    for where, key in places:
        if key in where:
            where[key] = _last_part(where[key])
    return d


def _last_part(value: Any) -> Any:
    """A local path's last part; anything else (a name, an hf:// spec, None) as it is."""
    if isinstance(value, str) and not value.startswith(SCHEME) and ("/" in value or "\\" in value):
        return Path(value.replace("\\", "/")).name
    return value


def _onnx_file(folder: Path, meta: ModelMeta, stage: Path) -> tuple[Path | None, bool]:
    """The folder's ONNX file when it was made from these weights, else one exported into
    ``stage`` (the folder is left as it is); None when the architecture can't be exported."""
    current = folder / ONNX_FILE
    if current.is_file() and _onnx_weights(current) == meta.weights_sha256:
        return current, False
    from smokerdet.models.export import ExportError, export_onnx

    try:
        return export_onnx(folder, out=stage / ONNX_FILE).path, True
    except ExportError:
        return None, False


def _onnx_weights(path: Path) -> str | None:
    """The weights SHA-256 an ONNX file says it was made from, None if unreadable."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # any parse failure: the file is exported again
        return None
    return {p.key: p.value for p in proto.metadata_props}.get("weights_sha256")


def _upload(
    repo_id: str,
    files: dict[str, Path],
    endpoint: str | None,
    private: bool,
    message: str,
) -> tuple[str, str]:
    """Create the repo if needed and commit every file; ``(commit id, commit URL)``."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, library_name="smokerdet", library_version=__version__)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
        for name, path in files.items()
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=message)
    except Exception as e:
        raise _push_error(e, repo_id, endpoint) from None
    return str(info.oid), str(info.commit_url)


def _push_error(e: Exception, repo_id: str, endpoint: str | None) -> ShareError:
    where = endpoint or DEFAULT_ENDPOINT
    status = status_of(e)
    if status in (401, 403):
        return ShareError(
            f"the Hub at {where} refused to write {repo_id} (HTTP {status})",
            hint="set HF_TOKEN (or `hf auth login`) to a token with write access to it",
        )
    if status is not None:
        return ShareError(
            f"the Hub at {where} answered HTTP {status} while pushing {repo_id}",
            hint="run it again later; nothing is half-pushed (one commit, or none)",
        )
    return ShareError(
        f"pushing {repo_id} to the Hub at {where} failed: {type(e).__name__}: "
        f"{str(e).splitlines()[0][:200] if str(e) else ''}",
        hint="run it again; nothing is half-pushed (one commit, or none)",
    )


# ---------------------------------------------------------------------------------------------
# The model card


def model_card(meta: ModelMeta, repo_id: str, files: dict[str, str]) -> str:
    """``README.md`` for the Hub: front matter, what the model is, how to use it, its figures
    each with its kind, its data, its files with their SHA-256, and its limits."""
    size = meta.data_config.input_size
    lines = [*_front_matter(meta), "", f"# {repo_id}", ""]
    lines += [
        f"A [smokerdet](https://pypi.org/project/smokerdet/) model: does a photo show a person "
        f"smoking? `{meta.arch}` at {size} x {size} px, one logit; `smoking` from "
        f"p >= {meta.threshold:.3f}.",
        "",
        "## Use",
        "",
        "```bash",
        "pip install smokerdet",
        f"smokerdet predict --model {SCHEME}{repo_id} photos/",
        f"smokerdet eval --model {SCHEME}{repo_id} --data YOUR_LABELLED_PHOTOS",
        "```",
        "",
        f"smokerdet checks every file against `{MANIFEST}` (SHA-256) when it pulls the model, "
        "and refuses one that does not match. Add `@REVISION` (a commit id) to pin a version.",
        "",
        "## Figures",
        "",
        *_figures(meta),
        "",
        "## Data",
        "",
        *_data(meta),
        "",
        "## Files",
        "",
        "| file | SHA-256 |",
        "|---|---|",
        *(f"| `{name}` | `{sha}` |" for name, sha in files.items()),
        "",
        "## Limits",
        "",
        "- It labels photos like those it was trained on; how well it does on yours is unknown "
        "until you check it: `smokerdet eval --data YOUR_LABELLED_PHOTOS`.",
        "- `predict` warns when photos look unlike the training photos (familiarity); adapt "
        f"the model to a site with `smokerdet train --init {SCHEME}{repo_id} --data PHOTOS`.",
        "- Smoking look-alikes (a pen, a straw, steam, a vape) and small or hidden cigarettes "
        "are hard cases. Do not use it to make decisions about people without human review.",
        "",
    ]
    return "\n".join(lines)


def _front_matter(meta: ModelMeta) -> list[str]:
    lines = ["---", "library_name: smokerdet", "pipeline_tag: image-classification"]
    lines += ["tags:", "- smokerdet", "- timm", "- image-classification", "- smoking"]
    tag = meta.provenance.get("weights")
    if meta.provenance.get("weights_kind") == "imagenet" and isinstance(tag, str):
        lines.append(f"base_model: timm/{tag}")
    return [*lines, "---"]


VALIDATION = "validation: these photos chose the epoch and the threshold (optimistic)"
#: The figures a card shows, in this order, with their names.
_FIGURES = {
    "f1": "F1",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "roc_auc": "ROC AUC",
}


def _figures(meta: ModelMeta) -> list[str]:
    """The metrics table: each figure with its kind, none passed off as a test result."""
    rows = []
    cv = meta.cv_metrics or {}
    if isinstance(cv.get("pooled_oof"), dict):
        kind = str(cv.get("kind") or "cross-validated (out-of-fold)")
        if cv.get("k") and f"{cv['k']} folds" not in kind:
            kind += f", k = {cv['k']}"
        rows += _rows(cv["pooled_oof"], kind)
    if meta.val_metrics:
        rows += _rows(meta.val_metrics, str(meta.val_metrics.get("kind") or VALIDATION))
    if not rows:
        return ["No held-out figure was recorded: measure it on your photos with `smokerdet eval`."]
    return [
        "| figure | value | kind |",
        "|---|---|---|",
        *rows,
        "",
        "None of these is a held-out test. A figure measured on the training photos themselves "
        "(in-sample) is not an estimate of accuracy at all, and is not listed.",
    ]


def _rows(metrics: dict[str, Any], kind: str) -> list[str]:
    return [
        f"| {label} | {metrics[key]:.4f} | {kind} |"
        for key, label in _FIGURES.items()
        if isinstance(metrics.get(key), (int, float))
    ]


def _data(meta: ModelMeta) -> list[str]:
    fp = meta.data_fingerprint or {}
    lines = []
    if fp:
        lines.append(
            f"Trained on {fp.get('n_files', '?')} photos; their fingerprint (SHA-256 over every "
            f"file's name, label and bytes) is `{fp.get('sha256', '?')}`."
        )
    adaptation = meta.provenance.get("adaptation")
    if isinstance(adaptation, dict):
        lines.append(
            f"Adapted from `{adaptation.get('init')}` to {adaptation.get('photos')} site photos "
            "(head recipe, with rehearsal of the original training photos' features)."
        )
    return lines or ["No record of the training data."]
