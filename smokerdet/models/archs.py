"""Which timm architectures exist: a name checked before anything is built or downloaded."""

from __future__ import annotations

import difflib

from smokerdet.errors import UnknownArchError


def check_arch(arch: str) -> None:
    """Raise :class:`UnknownArchError` with close matches if timm has no model ``arch``."""
    import timm

    base = arch.split(".", 1)[0]
    if timm.is_model(base):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(base, names, n=6, cutoff=0.6)
    hint = (
        f"did you mean: {', '.join(close)}?"
        if close
        else "run `python -c 'import timm; print(timm.list_models(\"resnet*\"))'`"
    )
    raise UnknownArchError(f"unknown architecture for --arch: {arch!r}", hint=hint)
