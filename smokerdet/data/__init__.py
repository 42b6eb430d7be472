"""Photos and datasets: layouts and splits, image loading and the one preprocessor, training augmentation, folds.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.data.augment import train_transform
from smokerdet.data.datasets import DecodedDataset, decode_all
from smokerdet.data.folds import check_per_class, class_counts, stratified_folds, stratified_split
from smokerdet.data.images import (
    MAX_IMAGE_PIXELS,
    DataConfig,
    Photo,
    ResizeMode,
    load_image,
    load_photo,
    preprocess,
    view_of,
)
from smokerdet.data.layout import (
    CLASS_NAMES,
    SPLITS,
    DatasetSplits,
    Sample,
    find_dataset,
    fingerprint,
    is_image_file,
    label_from_name,
    resolve_data_root,
)

__all__ = [
    "CLASS_NAMES",
    "DataConfig",
    "DatasetSplits",
    "DecodedDataset",
    "MAX_IMAGE_PIXELS",
    "Photo",
    "ResizeMode",
    "SPLITS",
    "Sample",
    "check_per_class",
    "class_counts",
    "decode_all",
    "find_dataset",
    "fingerprint",
    "is_image_file",
    "label_from_name",
    "load_image",
    "load_photo",
    "preprocess",
    "resolve_data_root",
    "stratified_folds",
    "stratified_split",
    "train_transform",
    "view_of",
]
