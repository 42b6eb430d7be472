#!/usr/bin/env python
"""Convert the face detector smokerdet ships from its registry package to ONNX, reproducibly.

The source is the BlazeFace ``.tflite`` file in the npm package ``@mediapipe/face_detection``
0.4.1657300184 (Apache-2.0, Google), pinned by SHA-256 (of the package file *and* of the model
file inside it). The conversion uses ``tflite2onnx`` 0.4.1 (``pip install tflite2onnx==0.4.1``;
not a smokerdet dependency); the graph's inputs and outputs are then renamed, its tensors sorted
(tflite2onnx writes them in set order) so that every run writes the same bytes, and provenance
and decoder settings are stamped into its metadata, which ``smokerdet.inference.faces`` reads.

Usage::

    npm pack @mediapipe/face_detection@0.4.1657300184
    python scripts/convert_face_detector.py mediapipe-face_detection-0.4.1657300184.tgz \
        --out smokerdet/assets/faces/

The short-range model was chosen over the full-range one and over MTCNN (facenet-pytorch) by
the comparison in docs/model-card.md. Any other file, or one whose bytes differ from the
pinned hashes, is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx


@dataclass(frozen=True)
class SourcePackage:
    """A registry package file that holds a model, pinned by hash."""

    name: str
    version: str
    registry: str
    filename: str
    sha256: str
    licence: str
    licence_location: str
    attribution: str


NPM_MEDIAPIPE = SourcePackage(
    name="@mediapipe/face_detection",
    version="0.4.1657300184",
    registry="npm",
    filename="mediapipe-face_detection-0.4.1657300184.tgz",
    sha256="a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419",
    licence="Apache-2.0",
    licence_location=(
        'package.json "license": "Apache-2.0" (the tarball ships no LICENSE file; '
        "full text: https://www.apache.org/licenses/LICENSE-2.0)"
    ),
    attribution=(
        "BlazeFace face detector, Copyright Google LLC, from MediaPipe "
        "(@mediapipe/face_detection), Apache License 2.0. Bazarevsky et al., "
        '"BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs", 2019.'
    ),
)


@dataclass(frozen=True)
class Member:
    """One model file inside a source package, pinned by hash."""

    package: SourcePackage
    path: str
    sha256: str


MEMBERS: dict[str, Member] = {
    "blazeface-short": Member(
        NPM_MEDIAPIPE,
        "package/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    ),
    "blazeface-full": Member(
        NPM_MEDIAPIPE,
        "package/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    ),
}

# Decoder settings that face_detector.py reads back from the metadata.
BLAZEFACE_CONFIG: dict[str, dict[str, str]] = {
    "blazeface-short": {"input_size": "128", "strides": "8,16,16,16", "anchors_per_cell": "2,6"},
    "blazeface-full": {"input_size": "192", "strides": "4", "anchors_per_cell": "1"},
}


class SourceError(RuntimeError):
    """The source file is not the pinned one, or lacks the expected member."""


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_member(source: Path, member: Member) -> bytes:
    """Check the package hash, extract one member and check its hash.

    Args:
        source: The downloaded ``.tgz`` or ``.whl`` file.
        member: The pinned member to read.

    Returns:
        The member's bytes.

    Raises:
        SourceError: On any hash mismatch or a missing member.
    """
    got = sha256_file(source)
    if got != member.package.sha256:
        raise SourceError(
            f"{source}: SHA-256 {got} is not the pinned {member.package.sha256} "
            f"of {member.package.name} {member.package.version}"
        )
    with tarfile.open(source, "r:gz") as tar:
        try:
            handle = tar.extractfile(member.path)
        except KeyError:
            handle = None
        if handle is None:
            raise SourceError(f"{source}: no {member.path}")
        data = handle.read()
    got = sha256_bytes(data)
    if got != member.sha256:
        raise SourceError(f"{member.path}: SHA-256 {got} is not the pinned {member.sha256}")
    return data


def convert_tflite(data: bytes) -> onnx.ModelProto:
    """Convert a BlazeFace ``.tflite`` to ONNX and give its tensors stable names.

    Args:
        data: The ``.tflite`` bytes.

    Returns:
        ONNX model with input ``input`` (1, 3, S, S), RGB scaled to [-1, 1], and
        outputs ``regressors`` (1, A, 16) and ``scores`` (1, A, 1) (logits).
    """
    import tflite2onnx  # only this script needs it

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.tflite"
        dst = Path(tmp) / "model.onnx"
        src.write_bytes(data)
        tflite2onnx.convert(str(src), str(dst))
        model = onnx.load(str(dst))
    rename = {model.graph.input[0].name: "input"}
    for out in model.graph.output:
        dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
        rename[out.name] = "regressors" if dims[-1] == 16 else "scores"
    for node in model.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = rename.get(value.name, value.name)
    # tflite2onnx emits initializers and value_info in set order; sort them so that
    # two runs write the same bytes.
    inits = sorted(model.graph.initializer, key=lambda t: t.name)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    infos = sorted(model.graph.value_info, key=lambda v: v.name)
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)
    model.producer_name = "smokerdet convert_face_detector.py (tflite2onnx)"
    return model


def stamp(model: onnx.ModelProto, member: Member, extra: dict[str, str]) -> onnx.ModelProto:
    """Write provenance into ``metadata_props`` and check the model.

    Args:
        model: The converted model.
        member: Where its weights came from.
        extra: More key/value pairs (decoder settings).

    Returns:
        The same model, stamped and checked.
    """
    pkg = member.package
    props = {
        "source": f"{pkg.registry}:{pkg.name}@{pkg.version}",
        "source_file": member.path,
        "sha256": member.sha256,
        "source_package_file": pkg.filename,
        "source_package_sha256": pkg.sha256,
        "licence": pkg.licence,
        "licence_location": pkg.licence_location,
        "attribution": pkg.attribution,
        "converter": "smokerdet scripts/convert_face_detector.py",
        **extra,
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def convert(source: Path, model_name: str, out_dir: Path) -> Path:
    """Convert one BlazeFace model from ``source`` into ``out_dir``; returns the file written."""
    member = MEMBERS[model_name]
    data = read_member(source, member)
    model = stamp(
        convert_tflite(data), member, {"kind": model_name, **BLAZEFACE_CONFIG[model_name]}
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model_name.replace('-', '_')}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the downloaded npm .tgz file")
    parser.add_argument("--model", choices=sorted(MEMBERS), default="blazeface-short")
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)
    try:
        path = convert(args.source, args.model, args.out)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}  {path.stat().st_size} bytes  sha256 {sha256_file(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
