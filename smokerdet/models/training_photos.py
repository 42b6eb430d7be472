"""Which photos a model was trained on, by content, so that ``eval`` can say when it scores them.

A model folder keeps ``training_photos.json``: the SHA-256 of the bytes of every photo that
shaped the model, each with its role:

* ``fit``: its gradients (or the head's refit) trained the weights;
* ``val``: it chose the epoch and the threshold (the validation split of a run);
* ``init``: the ``--init`` model's own photos, whose imprint the backbone keeps.

Names are not stored: a photo is recognised wherever it lies and whatever it is called, but
only as a byte-identical copy (a re-encoded or resized copy is not). The file also records
``data_sha256``, the ``data_fingerprint`` of ``model.json`` it belongs to; a file of another
fingerprint (a stale one) is not used. The exported ONNX file carries the same JSON in its
metadata field ``training_photos``, so that an ``.onnx`` file alone still knows its photos.

About 70 bytes a photo: 60 KB for the shipped model's 896.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smokerdet._io import atomic_write_bytes

#: The file in a model folder.
TRAINING_PHOTOS_FILE = "training_photos.json"
#: The ``metadata_props`` field of an exported ONNX file that carries it.
FIELD = "training_photos"
FORMAT = "smokerdet-training-photos/1"
#: The roles, in the order the file lists them.
ROLES = ("fit", "val", "init")
#: The roles whose photos count as in-sample: they trained the weights.
TRAINED = ("fit", "init")


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's bytes; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainingPhotos:
    """The photos of a model, as content hashes.

    Attributes:
        data_sha256: the ``data_fingerprint.sha256`` of the model these photos belong to.
        roles: SHA-256 of a photo's bytes -> its role (one of :data:`ROLES`).
    """

    data_sha256: str
    roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def record(
        cls,
        data_sha256: str,
        photos: Mapping[str, Iterable[Path]],
        inherited: TrainingPhotos | None = None,
    ) -> TrainingPhotos:
        """Hash the photos of each role; ``inherited`` (the ``--init`` model's) come in as
        ``init``, and a photo keeps the strongest of its roles (fit, then val, then init)."""
        roles = dict.fromkeys(inherited.roles if inherited else (), "init")
        for role in reversed(ROLES[:2]):  # val first, so that fit overrides it
            for path in photos.get(role, ()):
                sha = file_sha256(path)
                if sha is not None:
                    roles[sha] = role
        return cls(data_sha256, roles)

    def role(self, sha256: str | None) -> str | None:
        """The role of the photo with these bytes, None when the model never saw it."""
        return None if sha256 is None else self.roles.get(sha256)

    def to_json(self) -> str:
        by_role = {r: sorted(h for h, x in self.roles.items() if x == r) for r in ROLES}
        return json.dumps({"format": FORMAT, "data_sha256": self.data_sha256, "photos": by_role})

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainingPhotos:
        """Parse :meth:`to_json`'s text.

        Raises:
            ValueError: not such a file.
        """
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT:
                raise ValueError(f"field 'format' is {raw.get('format')!r}, want {FORMAT!r}")
            roles = {str(h): r for r in ROLES for h in raw["photos"].get(r, [])}
            return cls(str(raw["data_sha256"]), roles)
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a {TRAINING_PHOTOS_FILE} ({e})") from None


def save(folder: Path, photos: TrainingPhotos) -> None:
    """Write ``training_photos.json`` into a model folder, atomically."""
    atomic_write_bytes(Path(folder) / TRAINING_PHOTOS_FILE, photos.to_json().encode())


def load(folder: Path, data_sha256: str | None) -> TrainingPhotos | None:
    """A model folder's photos; None when the file is missing, invalid, or of another
    ``data_sha256`` (left from an earlier model of that name)."""
    try:
        photos = TrainingPhotos.from_json((Path(folder) / TRAINING_PHOTOS_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return photos if data_sha256 and photos.data_sha256 == data_sha256 else None


def from_props(props: Mapping[str, str]) -> TrainingPhotos | None:
    """The photos an ONNX file carries in its metadata; None when it carries none."""
    try:
        return TrainingPhotos.from_json(props[FIELD])
    except (KeyError, ValueError):
        return None
