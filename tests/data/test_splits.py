"""No validation split, no silent training: one is carved out of training, or it is an error."""

import pytest
from conftest import TINY_TRAIN_ARGS, synthetic_image, write_flat

from smokerdet.cli import app
from smokerdet.data.layout import MIN_TRAIN_PER_CLASS, MIN_VAL_PER_CLASS, find_dataset
from smokerdet.errors import DatasetLayoutError


def _class_folders(root, splits, n):
    """``train/smoking/img0.png`` ... for the given split folders only."""
    for split in splits:
        for label, name in ((1, "smoking"), (0, "not_smoking")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                synthetic_image(label, i * 2 + label).save(folder / f"{split}{i}.png")
    return root


def test_training_on_three_photos_fails_and_says_how_many_are_needed(tmp_path, runner):
    data = tmp_path / "three"
    data.mkdir()
    for i, name in enumerate(("smoking_1.jpg", "smoking_2.jpg", "notsmoking_1.jpg")):
        synthetic_image(int(name.startswith("smoking")), i).save(data / name)
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "three"])
    assert r.exit_code == 1, r.output
    assert "Error: too few photos to hold out a validation split" in r.stderr
    needed = MIN_VAL_PER_CLASS + MIN_TRAIN_PER_CLASS
    assert f"each class needs at least {needed} training photos" in r.stderr
    assert "Hint: add photos of the short class, or give a validation folder" in r.stderr
    assert "val 0+0" not in r.output


def test_class_subfolders_without_val_get_a_carved_val(tmp_path):
    root = _class_folders(tmp_path / "ds", ("train", "test"), n=10)
    splits = find_dataset(root, seed=7)
    assert splits.counts() == {
        "train": {"smoking": 8, "not_smoking": 8},
        "val": {"smoking": 2, "not_smoking": 2},
        "test": {"smoking": 10, "not_smoking": 10},
    }
    assert "validation carved from training" in splits.layout
    assert any("2+2 photos (seeded, stratified, seed 7)" in n for n in splits.notes)
    assert not {s.path for s in splits.train} & {s.path for s in splits.val}
    again = find_dataset(root, seed=7)
    assert [s.path for s in again.val] == [s.path for s in splits.val]


def test_a_small_training_folder_still_gets_two_validation_photos_per_class(tmp_path):
    root = _class_folders(tmp_path / "ds", ("train",), n=4)
    splits = find_dataset(root)
    assert splits.counts()["val"] == {"smoking": 2, "not_smoking": 2}
    assert splits.counts()["train"] == {"smoking": 2, "not_smoking": 2}


def test_split_folders_too_small_for_validation(tmp_path):
    root = _class_folders(tmp_path / "ds", ("train",), n=3)
    with pytest.raises(DatasetLayoutError, match="found 3 smoking, 3 not_smoking") as e:
        find_dataset(root)
    assert "after the test split" not in e.value.message
    # Scoring an existing split needs no validation photos: a note instead of an error.
    splits = find_dataset(root, need_val=False)
    assert len(splits.train) + len(splits.val) == 6
    assert any("too few photos for a full validation split" in n for n in splits.notes)


def test_flat_folder_counts_what_the_test_split_takes(tmp_path):
    root = write_flat(tmp_path / "flat", n_per_class=4)  # 1 per class goes to test
    with pytest.raises(DatasetLayoutError, match="after the test split is held out"):
        find_dataset(root)
    splits = find_dataset(write_flat(tmp_path / "flat5", n_per_class=5))
    assert splits.counts()["val"] == {"smoking": 2, "not_smoking": 2}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9, 13])
def test_val_is_never_empty(tmp_path, n):
    root = write_flat(tmp_path / "flat", n_per_class=n, size=8)
    try:
        splits = find_dataset(root)
    except DatasetLayoutError as e:
        assert "too few photos" in e.message
        return
    val = splits.counts()["val"]
    assert min(val.values()) >= MIN_VAL_PER_CLASS
    assert min(splits.counts()["train"].values()) >= MIN_TRAIN_PER_CLASS
