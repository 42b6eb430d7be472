"""Where smokerdet keeps what it downloads and trains.

Everything lives under one user data dir: ``platformdirs.user_data_dir("smokerdet")``,
or ``$SMOKERDET_HOME`` when that is set. Its subfolders are named here and nowhere else.

Example:
    >>> from smokerdet.paths import data_dir, models_dir
    >>> models_dir().relative_to(data_dir()).as_posix()
    'models'
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SMOKERDET_HOME"

DATASETS = "datasets"
WEIGHTS = "weights"
MODELS = "models"
HUB = "hub"
DEFAULT_CHOICE = "default-model.json"

#: Where the downloaded Smoker Detection dataset lands (``smokerdet download dataset``).
DATASET_NAME = "smoker-detection"


def data_dir() -> Path:
    """Return the root of smokerdet's user data dir (not created)."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("smokerdet", appauthor=False))


def datasets_dir() -> Path:
    """Folder holding downloaded or imported datasets."""
    return data_dir() / DATASETS


def default_dataset_dir() -> Path:
    """Folder where ``smokerdet download dataset`` puts the Smoker Detection dataset."""
    return datasets_dir() / DATASET_NAME


def weights_dir() -> Path:
    """Cache of pretrained backbone weights (a Hugging Face Hub cache layout)."""
    return data_dir() / WEIGHTS


def models_dir() -> Path:
    """Folder holding one subfolder per trained model."""
    return data_dir() / MODELS


def hub_dir() -> Path:
    """Cache of models pulled from the Hugging Face Hub (``--model hf://ORG/NAME``), in the
    Hub's own cache layout."""
    return data_dir() / HUB


def locks_dir() -> Path:
    """Folder of the training locks, one ``NAME.lock`` per model name (kept out of
    :func:`models_dir`, so that it lists models only)."""
    return data_dir() / "locks"


def default_choice_file() -> Path:
    """The JSON file recording the model the user chose with ``smokerdet models default``."""
    return data_dir() / DEFAULT_CHOICE


def default_model_dir() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "default"


def face_detector_file() -> Path:
    """The face detector shipped inside the package (see smokerdet/assets/faces/NOTICE.md)."""
    return Path(__file__).resolve().parent / "assets" / "faces" / "blazeface_short.onnx"
