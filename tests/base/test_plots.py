"""Plots: every PNG decodes and has the size the module promises."""

import random
import sys

from PIL import Image

from smokerdet.plots import DPI, EVAL_FILES, FIGSIZE, TRAINING_FILE, plot_eval, plot_training

SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def _decoded(path):
    with Image.open(path) as im:
        im.load()  # a truncated file fails here, not just at open
        assert im.format == "PNG"
        colours = im.convert("L").getextrema()
        assert colours[0] < colours[1], f"{path} is blank"
        return im.size


def test_eval_plots_decode_at_the_expected_size(tmp_path):
    rng = random.Random(0)
    y_true = [i % 2 for i in range(60)]
    y_prob = [min(1.0, max(0.0, rng.gauss(0.3 + 0.4 * y, 0.2))) for y in y_true]
    written = plot_eval(y_true, y_prob, 0.47, tmp_path / "plots", "tiny on val")
    assert [p.name for p in written] == list(EVAL_FILES)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(EVAL_FILES)
    for path in written:
        assert _decoded(path) == SIZE


def test_eval_plots_survive_one_class_and_ties(tmp_path):
    written = plot_eval([1, 1, 1], [0.5, 0.5, 0.9], 0.5, tmp_path, "one class")
    assert all(_decoded(p) == SIZE for p in written)


def test_training_curves(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "val_f1": 0.5 + e / 20,
            "lr": 1e-3 / e,
        }
        for e in range(1, 6)
    ]
    history[0]["val_loss"] = history[0]["val_f1"] = None  # a probe epoch without validation
    path = plot_training(history, tmp_path / "model" / TRAINING_FILE)
    assert path == tmp_path / "model" / TRAINING_FILE
    assert _decoded(path) == (SIZE[0], SIZE[1] * 2)


def test_training_curves_from_epoch_stats(tmp_path):
    from smokerdet.training.loop import EpochStats

    fields = dict(val_accuracy=0.5, val_precision=0.5, val_recall=0.5, seconds=1.0)
    history = [
        EpochStats(
            e,
            "finetune",
            0.7,
            0.6,
            val_f1=0.6,
            lr=1e-4,
            images_per_second=9.0,
            improved=e == 1,
            **fields,
        )
        for e in (1, 2)
    ]
    assert _decoded(plot_training(history, tmp_path / TRAINING_FILE)) == (SIZE[0], SIZE[1] * 2)


def test_importing_smokerdet_does_not_import_matplotlib():
    import subprocess

    code = "import smokerdet, smokerdet.plots, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_writes_its_curves_into_the_model_folder(trained_model):
    # The session's tiny model was really trained through the CLI.
    assert _decoded(trained_model / TRAINING_FILE) == (SIZE[0], SIZE[1] * 2)


def _axes():
    from smokerdet.plots import FIGSIZE, _pyplot

    return _pyplot().subplots(figsize=FIGSIZE, layout="constrained")


def test_roc_legend_gives_the_area_under_the_curve():
    from smokerdet.plots import _curve_points, _roc

    y, p = [0, 1, 1, 0], [0.9, 0.8, 0.3, 0.2]
    fig, ax = _axes()
    _roc(ax, _curve_points(y, p), 0.5, 0.5)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ROC (AUC 0.500)" in texts
    fig, ax = _axes()
    _roc(ax, _curve_points([1, 1], [0.4, 0.6]), 0.5, None)
    assert "one class only" in ax.get_legend().get_texts()[0].get_text()


def test_precision_recall_legend_covers_no_point_of_the_curve():
    # The top-scored photo is negative: the curve starts at recall 0, precision 0, the lower
    # left corner, where the legend used to sit.
    from smokerdet.plots import _curve_points, _pr

    fig, ax = _axes()
    points = _curve_points([0, 1, 1, 0], [0.9, 0.8, 0.3, 0.2])
    _pr(ax, points, 0.5)
    fig.canvas.draw()
    box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    for _, _, recall, precision in points:
        x, y = ax.transData.transform((recall, precision))
        assert not box.contains(x, y), (recall, precision)
