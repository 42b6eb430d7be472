"""Proofs for site adaptation's promises that a plausible bug would break: out-of-fold scores
that never saw their photo, chance-level expected accuracy on labels without signal, class
balance, a site's own test folder kept out, --cv obeyed, and rehearsal rows that stay
labelled right and stay with an adapted model."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image, write_class_folders

from smokerdet.inference import fit_for_model
from smokerdet.inference.backend import open_engine
from smokerdet.inference.familiarity import pooled_features
from smokerdet.models import rehearsal
from smokerdet.models.checkpoint import read_meta
from smokerdet.training import TrainConfig, train
from smokerdet.training.recipes.head import HeadFit, cross_validate_head, fit_head


def _noise(n: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dims)), rng.permutation(np.arange(n) % 2)


def test_a_photo_s_out_of_fold_score_ignores_its_own_label():
    x, y = _noise(30, 16, 0)
    fold = np.arange(30) % 3
    start = HeadFit(np.zeros(16), 0.0)
    oof = cross_validate_head(x, y, start, None, fold)
    for i in range(3):
        flipped = y.copy()
        flipped[fold == i] = 1 - flipped[fold == i]
        again = cross_validate_head(x, flipped, start, None, fold)
        held = fold == i
        # the held-out fold's scores come from a head that never saw its labels ...
        assert again[held] == pytest.approx(oof[held], abs=1e-9)
        # ... while the other folds' heads did see them
        assert not np.allclose(again[~held], oof[~held], atol=1e-3)


def test_out_of_fold_accuracy_on_labels_without_signal_is_near_chance():
    hits = []
    for seed in range(4):
        x, y = _noise(40, 64, seed)  # more dimensions than photos: in-sample, any labels fit
        start = HeadFit(np.zeros(64), 0.0)
        oof = cross_validate_head(x, y, start, None, np.arange(40) % 5)
        hits.append(np.mean((oof >= 0.5) == y))
    assert np.mean(hits) < 0.7, hits


def test_the_head_fit_weighs_both_classes_equally():
    """At the optimum of a class-balanced loss (no pull), the smoking photos' mean miss equals
    the other photos' mean false score; unweighted, it would be nine times larger here."""
    rng = np.random.default_rng(1)
    y = np.array([1] * 6 + [0] * 54)
    x = rng.normal(size=(60, 4)) + np.outer(y, [0.8, 0, 0, 0])
    head = fit_head(x, y, HeadFit(np.zeros(4), 0.0), None, pull=0.0)
    p = head.probs(x)
    miss, false = np.mean(1 - p[y == 1]), np.mean(p[y == 0])
    assert miss == pytest.approx(false, abs=1e-4)
    assert np.mean(p[y == 1] >= 0.5) >= 0.5  # the few smokers are still found


def _random_label_site(root: Path, n: int = 20) -> Path:
    """Photos whose folder (label) is a coin toss, independent of what they show."""
    rng = random.Random(5)
    for label in ("smoking", "not_smoking"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            synthetic_image(rng.randint(0, 1), 1000 + i * 7 + len(label)).save(
                root / label / f"{i}.jpg"
            )
    return root


def test_expected_accuracy_on_a_site_without_signal_is_near_chance(model_copy, tmp_path):
    site = _random_label_site(tmp_path / "site")
    result = train(TrainConfig(init="tiny", data=site, name="noise", workers=0))
    stored = read_meta(result.path).cv_metrics["pooled_oof"]
    assert result.recipe == "head" and result.adaptation["photos"] == 40
    assert stored["accuracy"] < 0.8, stored


def test_a_site_s_test_folder_is_never_fitted_and_cv_is_obeyed(model_copy, tmp_path):
    site = write_class_folders(tmp_path / "site", splits=True, n=6)
    result = train(TrainConfig(init="tiny", data=site, name="split", workers=0, cv=3))
    scored = {Path(row["path"]) for row in result.adaptation["oof"]}
    assert scored and all(p.relative_to(site).parts[0] in ("train", "val") for p in scored)
    assert len(scored) == result.adaptation["photos"] == 24  # train + val, not test
    meta = read_meta(result.path)
    assert result.adaptation["folds"] == 3 and meta.cv_metrics["k"] == 3
    assert "3 folds" in meta.cv_metrics["kind"]


def test_re_adapting_an_adapted_model_keeps_its_rehearsal_rows(model_copy, tmp_path):
    original = rehearsal.Rehearsal.from_bytes((model_copy / rehearsal.REHEARSAL_FILE).read_bytes())
    first = train(
        TrainConfig(init="tiny", data=_random_label_site(tmp_path / "a"), name="a1", workers=0)
    )
    site = write_class_folders(tmp_path / "b", splits=False, n=6)
    second = train(TrainConfig(init="a1", data=site, name="a2", workers=0))
    for result in (first, second):
        assert result.adaptation["rehearsal_rows"] == len(original.labels) > 0
        assert rehearsal.load(result.path, read_meta(result.path)) is not None


def test_an_unreadable_training_photo_shifts_no_rehearsal_label(trained_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder)
    photos = []
    for i in range(12):
        label = i % 2
        path = tmp_path / "photos" / f"{i:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        synthetic_image(label, 300 + i).save(path)
        photos.append((path, label))
    photos[3][0].write_bytes(b"not a jpeg at all")  # an unreadable one among the first
    fit_for_model(folder, [p for p, _ in photos], [], train_labels=[label for _, label in photos])
    rows = rehearsal.Rehearsal.from_bytes((folder / rehearsal.REHEARSAL_FILE).read_bytes())
    readable = [(p, label) for i, (p, label) in enumerate(photos) if i != 3]
    x = pooled_features(open_engine(folder, device="cpu"), [p for p, _ in readable])
    assert len(rows.labels) == len(readable)
    for feats, label in zip(rows.features, rows.labels, strict=True):
        nearest = int(np.argmin(((x - feats) ** 2).sum(axis=1)))
        assert label == readable[nearest][1]
