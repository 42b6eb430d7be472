"""``train --track``: a real MLflow store and real TensorBoard event files, read back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS

from smokerdet.cli import app

STORE_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_ALLOW_FILE_STORE",
    "GIT_PYTHON_REFRESH",
    "SMOKERDET_TENSORBOARD_DIR",
)


@pytest.fixture
def no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow settings from the environment; what the tracker sets is undone after."""
    for name in STORE_ENV:
        monkeypatch.setenv(name, "recorded")  # so that monkeypatch restores the original
        monkeypatch.delenv(name)


def _client(uri: str):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client, experiment: str = "smokerdet") -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for entry in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return out


def test_mlflow_logs_a_run_to_a_local_store_by_default(
    runner, flat_data, smokerdet_home, no_store_env
):
    r = runner.invoke(
        app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--name", "tracked", "--track", "mlflow"]
    )
    assert r.exit_code == 0, r.output
    store = smokerdet_home / "mlruns"
    assert "Tracking: MLflow run " in r.stderr and store.as_uri() in r.stderr
    client = _client(store.as_uri())
    (run,) = _runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["arch"] == "resnet10t" and run.data.params["epochs"] == "2"
    assert run.data.tags["model"] == "tracked" and run.data.tags["recipe"] == "full"
    history = client.get_metric_history(run.info.run_id, "val_f1")
    assert [m.step for m in history] == [1, 2]
    assert {"train_loss", "val_loss", "lr", "best_val_f1", "threshold"} <= set(run.data.metrics)
    artifacts = _artifacts(client, run.info.run_id)
    assert {"model/model.json", "model/model.safetensors", "curves.png", "config.json"} <= artifacts
    # A real file store on disk: the metric's own file holds one line per epoch.
    (metric_file,) = store.glob(f"*/{run.info.run_id}/metrics/val_f1")
    assert len(metric_file.read_text().splitlines()) == 2


def test_mlflow_tracking_uri_is_honoured(runner, flat_data, tmp_path, no_store_env, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "site-study")
    args = [*TINY_TRAIN_ARGS, "--epochs", "1", "--data", str(flat_data), "--track", "mlflow"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2  # MLflow 3 bars a file store the user chose without the opt-in
    assert "Error: --track mlflow: cannot use the tracking store file://" in r.stderr
    assert "MLFLOW_ALLOW_FILE_STORE=true" in r.stderr
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    (run,) = _runs(_client(elsewhere.as_uri()), "site-study")
    assert run.info.status == "FINISHED"


def test_mlflow_cross_validation_nests_the_folds(runner, flat_data, smokerdet_home, no_store_env):
    args = [*TINY_TRAIN_ARGS, "--epochs", "1", "--cv", "2", "--data", str(flat_data)]
    r = runner.invoke(app, [*args, "--name", "cv", "--track", "mlflow"])
    assert r.exit_code == 0, r.output
    client = _client((smokerdet_home / "mlruns").as_uri())
    runs = _runs(client)
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run.info.run_name for run in runs if run is not parent]
    assert children == ["fold1of2", "fold2of2", "final"]
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in runs[1:])
    assert all(run.info.status == "FINISHED" for run in runs)
    assert {"cv_mean_f1", "cv_pooled_f1", "threshold"} <= set(parent.data.metrics)
    artifacts = _artifacts(client, parent.info.run_id)
    assert {"cv.json", "cv.md", "model/model.json"} <= artifacts
    table = client.download_artifacts(parent.info.run_id, "cv.md")
    rows = [line.split(" | ")[0] for line in Path(table).read_text().splitlines()[2:] if line]
    assert rows[:5] == ["| 1", "| 2", "| mean", "| sd", "| pooled"]
    fold = next(run for run in runs if run.info.run_name == "fold1of2")
    assert len(client.get_metric_history(fold.info.run_id, "val_f1")) == 1


def test_tensorboard_writes_event_files(runner, flat_data, smokerdet_home, no_store_env):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = runner.invoke(
        app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--name", "tb", "--track", "tensorboard"]
    )
    assert r.exit_code == 0, r.output
    logs = smokerdet_home / "runs" / "tb"
    assert f"Tracking: TensorBoard logs in {logs}" in r.stderr
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/f1")] == [1, 2]
    assert len(events.Scalars("train/loss")) == 2
    config = events.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "resnet10t" in config
    assert "curves" in events.Tags()["images"]
    assert (logs / "model" / "model.json").is_file()
    assert "tensorflow" not in sys.modules  # read back without TensorFlow


@pytest.mark.parametrize("kind, module", [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_extra_is_a_usage_error_before_training(
    runner, flat_data, smokerdet_home, monkeypatch, kind, module
):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import fails
    if module == "mlflow":
        monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--track", kind])
    assert r.exit_code == 2
    assert f"Error: --track {kind} needs" in r.stderr
    assert f"Hint: pip install 'smokerdet[{kind}]'" in r.stderr
    assert not (smokerdet_home / "models").exists()  # checked before any training
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--track", "wandb"])
    assert r.exit_code == 2 and "--track must be mlflow or tensorboard, not 'wandb'" in r.stderr


@pytest.mark.parametrize(
    "raised, status", [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_a_run_that_stops_is_closed_as_such(smokerdet_home, no_store_env, raised, status):
    from smokerdet.training.tracking import track_run

    with pytest.raises(raised):
        with track_run("mlflow", None, None) as run:
            run.reporter.on_start({"name": "stopped"})
            raise raised("stop")
    (stopped,) = _runs(_client((smokerdet_home / "mlruns").as_uri()))
    assert stopped.info.status == status


def test_only_the_run_asked_for_is_tracked(runner, flat_data, smokerdet_home):
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--epochs", "1", "--data", str(flat_data)])
    assert r.exit_code == 0, r.output
    assert not (smokerdet_home / "mlruns").exists() and not (smokerdet_home / "runs").exists()
    assert "Tracking:" not in r.stderr
