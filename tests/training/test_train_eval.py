"""End to end: train a tiny model through the CLI, then evaluate it."""

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN_ARGS

from smokerdet.cli import app
from smokerdet.data.layout import find_dataset
from smokerdet.metrics import binary_metrics
from smokerdet.models.build import create_model
from smokerdet.models.registry import load_model
from smokerdet.scoring.evaluate import evaluate


@pytest.mark.parametrize("layout", ["flat", "archive"])
def test_train_then_eval_json_matches_metrics(runner, smokerdet_home, layout, request):
    data = request.getfixturevalue(f"{layout}_data")
    result = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "m1"])
    assert result.exit_code == 0, result.output
    assert "Saved to" in result.stdout

    folder = smokerdet_home / "models" / "m1"
    assert (folder / "model.safetensors").is_file()
    meta = json.loads((folder / "model.json").read_text())
    for key in (
        "arch",
        "data_config",
        "threshold",
        "class_names",
        "val_metrics",
        "data_fingerprint",
        "seed",
        "versions",
        "created",
        "weights_sha256",
    ):
        assert key in meta, key
    assert meta["arch"] == "resnet10t"
    assert meta["data_config"]["input_size"] == 32
    assert set(meta["data_config"]) >= {"mean", "std", "interpolation", "crop_pct"}
    assert meta["class_names"] == ["not_smoking", "smoking"]
    assert set(meta["versions"]) == {"smokerdet", "torch", "timm"}
    assert meta["data_fingerprint"]["n_files"] > 0
    assert 0.0 <= meta["threshold"] <= 1.0

    split = "test"
    args = ["eval", "--data", str(data), "--split", split, "--json", "--model", "m1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)

    report = evaluate(data=data, split=split, model="m1")
    ys = [y for _, y, _ in report.probabilities]
    ps = [p for _, _, p in report.probabilities]
    expected = binary_metrics(ys, ps, meta["threshold"])
    for key in ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "tp", "fp"):
        assert reported[key] == pytest.approx(getattr(expected, key)), key
    assert reported["n"] == len(ys) == len(find_dataset(data).test) > 0


def test_eval_table_output(runner, model_copy, flat_data):
    result = runner.invoke(app, ["eval", "--data", str(flat_data), "--split", "all"])
    assert result.exit_code == 0, result.output
    for word in ("accuracy", "precision", "recall", "f1", "roc_auc", "Confusion matrix"):
        assert word in result.stdout


def test_same_seed_same_metrics(runner, flat_data):
    outs = []
    for name in ("a", "b"):
        r = runner.invoke(
            app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--name", name, "--json"]
        )
        assert r.exit_code == 0, r.output
        outs.append(json.loads(r.stdout))
    assert [h["train_loss"] for h in outs[0]["history"]] == [
        h["train_loss"] for h in outs[1]["history"]
    ]
    assert outs[0]["val_metrics"] == outs[1]["val_metrics"]


def test_weights_file_really_loads(tmp_path):
    torch.manual_seed(7)
    source = create_model("resnet10t")
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        model = create_model("resnet10t", weights=tmp_path / f)
        got = model.state_dict()
        for k, v in sd.items():
            if not k.startswith("fc."):
                assert torch.equal(got[k], v), k
        assert tuple(got["fc.weight"].shape) == (1, 512)


def test_weights_for_the_wrong_arch_names_the_tensor(runner, tmp_path, flat_data):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in create_model("resnet18").state_dict().items()}
    save_file(sd, str(tmp_path / "r18.safetensors"))
    r = runner.invoke(
        app,
        [
            *TINY_TRAIN_ARGS,
            "--data",
            str(flat_data),
            "--weights",
            str(tmp_path / "r18.safetensors"),
        ],
    )
    assert r.exit_code == 1
    assert "does not fit resnet10t" in r.stderr
    assert "Hint: check that --arch matches" in r.stderr


def test_pickled_pth_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Payload()}))
    from smokerdet.errors import WeightsError

    with pytest.raises(WeightsError, match="cannot read weights"):
        create_model("resnet10t", weights=tmp_path / "evil.pth")
    assert not marker.exists()


def test_pretrained_unavailable_offline_fails_with_hint(runner, flat_data):
    r = runner.invoke(app, ["train", "--arch", "resnet10t", "--data", str(flat_data)])
    assert r.exit_code == 1
    assert "Error: ImageNet weights for resnet10t" in r.stderr
    assert "smokerdet download weights resnet10t" in r.stderr
    assert "--no-pretrained" in r.stderr


def test_init_starts_from_the_given_weights(runner, model_copy, flat_data):
    from smokerdet.training.config import TrainConfig
    from smokerdet.training.start import build_start

    start = build_start(TrainConfig(init=str(model_copy)))
    base = load_model(model_copy)
    for k, v in base.model.state_dict().items():
        assert torch.equal(start.model.state_dict()[k], v), k
    assert start.data_config == base.meta.data_config and start.origin["init"] == "tiny"

    r = runner.invoke(
        app,
        [
            "train",
            "--recipe",
            "full",
            "--init",
            str(model_copy),
            "--data",
            str(flat_data),
            "--epochs",
            "1",
            "--workers",
            "0",
            "--name",
            "site",
            "--batch-size",
            "8",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "from model tiny" in r.stderr
    assert load_model("site").meta.arch == "resnet10t"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "Error: --epochs must be at least 1, got 0"),
        (["--lr", "-1"], "Error: --lr must be a positive number"),
        (["--img-size", "100000"], "Error: --img-size must be between 16 and 1024"),
        (["--name", "../escape"], "Error: --name '../escape' is not allowed"),
        (["--name", "latest"], "Error: --name 'latest' is not allowed"),
        (["--ema", "0.2"], "Error: --ema must be 0 (off) or a decay in [0.5, 1), got 0.2"),
    ],
)
def test_bad_options_exit_2_naming_the_flag(runner, flat_data, args, message):
    r = runner.invoke(app, ["train", "--no-pretrained", "--data", str(flat_data), *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_unknown_arch_lists_close_matches(runner, flat_data):
    r = runner.invoke(app, ["train", "--arch", "resnet51", "--data", str(flat_data)])
    assert r.exit_code == 1
    assert "Error: unknown architecture for --arch: 'resnet51'" in r.stderr
    assert "resnet50" in r.stderr


def test_no_data_says_download_or_data(runner):
    r = runner.invoke(app, ["train", "--no-pretrained"])
    assert r.exit_code == 1
    assert "Error: no dataset given and none downloaded" in r.stderr
    assert "smokerdet download" in r.stderr and "--data" in r.stderr


def test_existing_name_is_refused_without_overwrite(runner, model_copy, flat_data):
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--name", "tiny"])
    assert r.exit_code == 2
    assert "a model named 'tiny' already exists" in r.stderr
    assert "--overwrite" in r.stderr


def test_corrupt_training_files_are_skipped_and_counted(runner, archive_data):
    train_dir = archive_data / "Training" / "Training"
    (train_dir / "smoking_bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (train_dir / "notsmoking_empty.jpg").write_bytes(b"")
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(archive_data), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert sorted(Path(s["path"]).name for s in out["skipped"]) == [
        "notsmoking_empty.jpg",
        "smoking_bad.jpg",
    ]
    assert r.stderr.count("Warning: skipped") == 2


def test_eval_empty_split_and_missing_model(runner, model_copy, tmp_path):
    from conftest import write_archive_layout

    data = write_archive_layout(tmp_path / "d", {"Training": 3, "Validation": 2})
    r = runner.invoke(app, ["eval", "--data", str(data), "--split", "test"])
    assert r.exit_code == 1
    assert "Error: the test split of" in r.stderr and "is empty" in r.stderr
    r = runner.invoke(app, ["eval", "--data", str(data), "--split", "val", "--model", "nope"])
    assert r.exit_code == 1
    assert "Error: no model named or at 'nope'" in r.stderr
    assert "known models: default (shipped), tiny;" in r.stderr


def test_ema_and_lp_ft_train_and_save(runner, flat_data):
    r = runner.invoke(
        app,
        [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--ema", "0.9", "--lp-epochs", "1", "--half",
         "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [h["phase"] for h in out["history"]] == ["probe", "finetune", "finetune"]
    assert out["best_epoch"] in (2, 3)
    loaded = load_model(out["name"])
    assert loaded.meta.train_args["ema"] == 0.9 and loaded.meta.train_args["half"] is True
    from safetensors import safe_open

    with safe_open(str(loaded.path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if "num_batches" not in k} == {
            torch.float16
        }


def test_model_json_holds_the_numbers_that_chose_the_epoch_and_eval_agrees(runner, archive_data):
    """One validation pass picks the epoch and calibrates it: with TTA and --half, the stored
    threshold and metrics are the kept epoch's row, and `eval --split val` computes them again
    from the files."""
    r = runner.invoke(
        app,
        [*TINY_TRAIN_ARGS, "--epochs", "3", "--data", str(archive_data), "--tta", "--half",
         "--name", "cal", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    meta = json.loads((Path(out["path"]) / "model.json").read_text())
    kept = next(h for h in out["history"] if h["epoch"] == out["best_epoch"])
    assert meta["threshold"] == out["threshold"] == kept["val_threshold"]
    assert meta["val_metrics"]["f1"] == kept["val_f1"] == out["val_metrics"]["f1"]
    assert meta["val_metrics"]["accuracy"] == kept["val_accuracy"]
    best_f1 = max(h["val_f1"] for h in out["history"])
    assert kept["val_f1"] == best_f1
    report = evaluate(model="cal", data=archive_data, split="val")
    assert report.threshold == meta["threshold"]
    for key in ("tp", "fp", "tn", "fn"):
        assert getattr(report.metrics, key) == meta["val_metrics"][key], key
    assert report.metrics.roc_auc == pytest.approx(meta["val_metrics"]["roc_auc"])


def test_eval_recognises_training_photos_by_content(runner, model_copy, tmp_path):
    from conftest import write_flat

    # Byte-identical to the tiny model's training data, in another folder: matched by content.
    same = write_flat(tmp_path / "copy", n_per_class=12)
    args = ["eval", "--model", "tiny", "--data", str(same), "--json"]

    def run(*more: str) -> tuple[dict, str]:
        r = runner.invoke(app, [*args, *more])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout), r.stderr

    train, err = run("--split", "train")
    n = train["n"]
    assert train["in_sample"]["photos"] == n and train["in_sample"]["validation_photos"] == 0
    note = f"all {n} photos were in the model's training data (in-sample): these figures are not"
    assert note in train["notes"][-1] and f"Warning: {note}" in err
    test, err = run("--split", "test")
    assert test["in_sample"] == {**test["in_sample"], "photos": 0, "validation_photos": 0}
    assert test["notes"] == [] and "Warning" not in err
    every, _ = run("--split", "all")
    fit, val = every["in_sample"]["photos"], every["in_sample"]["validation_photos"]
    assert fit == n and val > 0 and fit + val < every["n"] == every["in_sample"]["of"] == 24
    assert f"{fit} of 24 photos were in the model's training data" in every["notes"][0]
    assert f"{val} of 24 photos are the model's validation photos" in every["notes"][1]
    # The exported file alone carries the list; the table says it too.
    alone = tmp_path / "alone.onnx"
    alone.write_bytes((model_copy / "model.onnx").read_bytes())
    r = runner.invoke(app, ["eval", "--model", str(alone), "--data", str(same), "--split", "train"])
    assert r.exit_code == 0, r.output
    assert re.search(rf"in-sample photos +│ +{n} of {n} │", r.stdout)
    assert "Warning: all " in r.stderr


def test_eval_of_a_model_without_its_photo_list_says_so(runner, model_copy, trained_model):
    (model_copy / "training_photos.json").unlink()
    data = trained_model.parents[2] / "data"  # the folder it was trained on
    args = ["eval", "--model", "tiny", "--backend", "torch", "--data", str(data)]
    r = runner.invoke(app, [*args, "--split", "train", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["in_sample"] is None
    assert f"{data} is the folder this model was trained on" in out["notes"][-1]
    assert "some of these photos may be in-sample" in r.stderr
    r = runner.invoke(app, [*args, "--split", "test"])
    assert r.exit_code == 0 and "unknown (no record of its training photos)" in r.stdout
