"""What a model carries besides its weights: its familiarity stats and its rehearsal rows.

Both are safetensors files beside the weights in a model folder (``familiarity.safetensors``,
:mod:`smokerdet.inference.familiarity`; ``rehearsal.safetensors``,
:mod:`smokerdet.models.rehearsal`), and both ride inside the model's ONNX file too, in its
``metadata_props`` (fields ``familiarity`` and ``rehearsal``, the file's bytes base64-encoded),
so that the ``.onnx`` file alone is the whole model. Each file's header records the
``weights_sha256`` of the weights whose features it holds: one of other weights is never
carried, and never used.

Metadata rather than ONNX initializers: onnxruntime hands metadata back with the session
(``engine.metadata``) and never exposes initializers, which it would also prune as unused.
Base64 costs a third more than the raw bytes; for the shipped model (1280 features), the
familiarity stats add 0.45 MB and the 512 rehearsal rows (fp16, as in the folder) 1.75 MB to
its 13.5 MB ONNX file.

The list of the model's training photos (``training_photos.json``,
:mod:`smokerdet.models.training_photos`) rides along too, as its JSON text in the field
``training_photos``, when it belongs to the model's ``data_fingerprint``.

numpy-free: only the headers are read here (the stats themselves are parsed where they are
used).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from smokerdet._io import atomic_write_bytes
from smokerdet.models.checkpoint import ModelMeta, read_meta
from smokerdet.models.onnx_format import ONNX_FILE, read_props, with_props
from smokerdet.models.rehearsal import FORMAT as REHEARSAL_FORMAT
from smokerdet.models.rehearsal import REHEARSAL_FILE, backbone_sha256
from smokerdet.models.training_photos import FIELD as PHOTOS_FIELD
from smokerdet.models.training_photos import load as load_training_photos

#: The familiarity stats beside a model's weights.
FAMILIARITY_FILE = "familiarity.safetensors"
FAMILIARITY_FORMAT = "smokerdet-familiarity/1"
#: The ``metadata_props`` field of the ONNX file that carries each file.
FIELDS = {FAMILIARITY_FILE: "familiarity", REHEARSAL_FILE: "rehearsal"}
#: Why a file that is not there is not carried.
MISSING = "is missing"


def header(blob: bytes) -> dict[str, str]:
    """The string metadata in a safetensors file's header, once the header is seen to index
    exactly the bytes that follow it (a truncated file is refused here, not when used).

    Raises:
        ValueError: ``blob`` is not a whole safetensors file.
    """
    try:
        (size,) = struct.unpack("<Q", blob[:8])
        found = json.loads(blob[8 : 8 + size])
        meta = found["__metadata__"]
        ends = [t["data_offsets"][1] for key, t in found.items() if key != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, IndexError):
        raise ValueError("not a safetensors file") from None
    if not isinstance(meta, dict) or max(ends, default=0) != len(blob) - 8 - size:
        raise ValueError("not a safetensors file, or a truncated one")
    return meta


def check(blob: bytes, name: str, meta: ModelMeta) -> dict[str, str]:
    """The header of the sidecar ``name``, checked to be of its kind and of ``meta``'s weights
    (for rehearsal rows: of its backbone's weights).

    Raises:
        ValueError: what is wrong, as the rest of a sentence about the file ("is not valid
            (...)", "belongs to other weights (...)").
    """
    try:
        found = header(blob)
    except ValueError as e:
        raise ValueError(f"is not valid ({e})") from None
    if name == FAMILIARITY_FILE:
        want, sha = FAMILIARITY_FORMAT, meta.weights_sha256
    else:
        want, sha = REHEARSAL_FORMAT, backbone_sha256(meta)
    if found.get("format") != want:
        raise ValueError(f"is not valid (field 'format' is {found.get('format')!r}, want {want!r})")
    theirs = str(found.get("weights_sha256", ""))
    if theirs != sha:
        raise ValueError(
            f"belongs to other weights (weights_sha256 {theirs[:12]}..., "
            f"the model's is {sha[:12]}...)"
        )
    return found


def encode(blob: bytes) -> str:
    """A sidecar's bytes as the string an ONNX metadata field holds."""
    return base64.b64encode(blob).decode("ascii")


def decode(text: str) -> bytes:
    """The bytes an ONNX metadata field carries.

    Raises:
        ValueError: the field is not base64.
    """
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64") from None


@dataclass
class Carried:
    """The sidecars of a model folder that belong to its weights.

    Attributes:
        props: the ONNX metadata fields that carry them (field -> base64 bytes).
        headers: the header of each carried file, by file name.
        problems: why each other file is not carried, by file name, as the rest of a
            sentence about it: :data:`MISSING`, ``is not valid (...)``, ``belongs to other
            weights (...)``.
    """

    props: dict[str, str] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def carried(folder: Path, meta: ModelMeta) -> Carried:
    """The sidecars in ``folder`` that an ONNX file of ``meta``'s weights should carry (and
    its training photos, when they are of ``meta``)."""
    out = Carried()
    for name, prop in FIELDS.items():
        try:
            blob = (Path(folder) / name).read_bytes()
            out.headers[name] = check(blob, name, meta)
        except FileNotFoundError:
            out.problems[name] = MISSING
            continue
        except OSError as e:
            out.problems[name] = f"is unreadable ({e.strerror or e})"
            continue
        except ValueError as e:
            out.problems[name] = str(e)
            continue
        out.props[prop] = encode(blob)
    photos = load_training_photos(Path(folder), meta.data_fingerprint.get("sha256"))
    if photos is not None:  # an old model has none: nothing to say about it
        out.props[PHOTOS_FIELD] = photos.to_json()
    return out


def embed(folder: Path) -> bool:
    """Make the folder's ``model.onnx`` carry the folder's current sidecars (its metadata
    rewritten, atomically; the graph unchanged).

    Returns:
        False when the folder has no ``model.onnx`` made from its weights (a stale file is
        refused when opened anyway, and re-exporting it embeds the sidecars).
    """
    path = Path(folder) / ONNX_FILE
    try:
        blob = path.read_bytes()
        props = read_props(blob)
    except (OSError, ValueError):
        return False
    meta = read_meta(Path(folder))
    if props.get("weights_sha256") != meta.weights_sha256:
        return False
    kept = {k: v for k, v in props.items() if k not in (*FIELDS.values(), PHOTOS_FIELD)}
    atomic_write_bytes(path, with_props(blob, {**kept, **carried(Path(folder), meta).props}))
    return True


def familiarity_in(folder: Path, meta: ModelMeta) -> bool:
    """Whether a model folder has familiarity stats of its weights: beside them, or inside
    its ``model.onnx`` (what predict uses; the stats' tensors are checked when they are)."""
    try:
        check((Path(folder) / FAMILIARITY_FILE).read_bytes(), FAMILIARITY_FILE, meta)
        return True
    except (OSError, ValueError):
        pass
    try:
        props = read_props((Path(folder) / ONNX_FILE).read_bytes())
        check(decode(props[FIELDS[FAMILIARITY_FILE]]), FAMILIARITY_FILE, meta)
    except (OSError, ValueError, KeyError):
        return False
    return props.get("weights_sha256") == meta.weights_sha256
