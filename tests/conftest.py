"""Shared fixtures: a private data dir per test, tiny synthetic datasets, one tiny trained model."""

from __future__ import annotations

import random
import shutil
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from smokerdet.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# A `python -c` program that runs smokerdet, fails it at the first import of torch, timm or
# torchvision (printing who imported it), and lists at exit the ones loaded anyway.
NO_TORCH = """
import runpy, sys, traceback
class Forbid:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            traceback.print_stack()
            raise ImportError("forbidden import: " + name)
sys.meta_path.insert(0, Forbid())
sys.argv = ["smokerdet", *sys.argv[1:]]
try:
    runpy.run_module("smokerdet", run_name="__main__")
finally:
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision"))
    print("imported:", bad, file=sys.stderr)
"""


@pytest.fixture(autouse=True)
def smokerdet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test ever touches the real user data dir, or the network."""
    home = tmp_path / "home"
    monkeypatch.setenv("SMOKERDET_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SMOKERDET_DEBUG", raising=False)
    return home


def synthetic_image(label: int, seed: int, size: int = 32) -> Image.Image:
    """A tiny photo stand-in whose class is learnable: warm blobs for smoking, cool for not."""
    rng = random.Random(seed)
    base = (200, 60, 40) if label else (40, 80, 200)
    im = Image.new("RGB", (size, size), tuple(c + rng.randint(-30, 30) for c in base))
    for _ in range(4):
        x, y = rng.randint(0, size - 8), rng.randint(0, size - 8)
        shade = tuple(rng.randint(0, 255) for _ in range(3))
        im.paste(shade, (x, y, x + 6, y + 6))
    return im


def write_flat(folder: Path, n_per_class: int = 10, size: int = 32) -> Path:
    """``smoking_*.jpg`` / ``notsmoking_*.jpg`` files in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for label, prefix in ((1, "smoking"), (0, "notsmoking")):
        for i in range(n_per_class):
            synthetic_image(label, i * 2 + label, size).save(folder / f"{prefix}_{i:04d}.jpg")
    return folder


def write_archive_layout(root: Path, counts: dict[str, int] | None = None) -> Path:
    """The public archive's layout: ``Training/Training/smoking_0001.jpg`` and so on."""
    counts = counts or {"Training": 8, "Validation": 4, "Testing": 4}
    for split, n in counts.items():
        folder = root / split / split
        folder.mkdir(parents=True, exist_ok=True)
        for label, prefix in ((1, "smoking"), (0, "notsmoking")):
            for i in range(n):
                seed = zlib.crc32(f"{split}-{label}-{i}".encode())
                synthetic_image(label, seed).save(folder / f"{prefix}_{i:04d}.jpg")
    return root


def write_class_folders(root: Path, splits: bool = True, n: int = 6) -> Path:
    """``train/smoking/x.jpg``, ``val/not_smoking/y.jpg``... (or no split level)."""
    for split in ("train", "val", "test") if splits else ("",):
        for label, name in ((1, "smoking"), (0, "not_smoking")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                synthetic_image(label, zlib.crc32(f"{split}-{name}-{i}".encode())).save(
                    folder / f"img{i}.png"
                )
    return root


@pytest.fixture
def flat_data(tmp_path: Path) -> Path:
    return write_flat(tmp_path / "flat")


@pytest.fixture
def archive_data(tmp_path: Path) -> Path:
    return write_archive_layout(tmp_path / "smoker-detection")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


TINY_TRAIN_ARGS = [
    "train",
    "--arch",
    "resnet10t",
    "--no-pretrained",
    "--img-size",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--workers",
    "0",
]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny resnet10t really trained for a few steps, shared by predict and eval tests."""
    root = tmp_path_factory.mktemp("trained")
    data = write_flat(root / "data", n_per_class=12)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMOKERDET_HOME", str(root / "home"))
        result = CliRunner().invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "tiny"])
        assert result.exit_code == 0, result.output
    return root / "home" / "models" / "tiny"


@pytest.fixture
def model_copy(trained_model: Path, smokerdet_home: Path) -> Path:
    """The tiny model copied into this test's data dir as ``tiny``: the 'latest' trained one.

    It does not answer by default (the shipped model does): pass ``--model tiny``.
    """
    dest = smokerdet_home / "models" / "tiny"
    shutil.copytree(trained_model, dest)
    return dest
