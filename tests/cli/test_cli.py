"""The command itself: --help, --version, info, and main()'s error handling."""

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from smokerdet import __version__
from smokerdet.cli import app, main
from smokerdet.cli._output import print_error
from smokerdet.config import field_help
from smokerdet.errors import DatasetLayoutError
from smokerdet.scoring.config import EvalConfig, PredictConfig
from smokerdet.training.config import TrainConfig


def test_version(runner):
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"smokerdet {__version__}"


@pytest.mark.parametrize(
    "command",
    [
        "train",
        "eval",
        "predict",
        "info",
        "download",
        "download dataset",
        "download weights",
        "models list",
        "models default",
        "models remove",
        "watch",
    ],
)
def test_each_command_help_has_an_example(runner, command):
    r = runner.invoke(app, [*command.split(), "--help"])
    assert r.exit_code == 0
    assert "Example:" in r.stdout and f"smokerdet {command}" in r.stdout


def test_cli_import_does_not_import_torch():
    code = "import sys, smokerdet.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_imports_neither_torch_onnxruntime_nor_av():
    code = (
        "import sys; from smokerdet.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnxruntime', 'av'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_info_json(runner, smokerdet_home, model_copy):
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["data_dir"] == str(smokerdet_home)
    assert info["data_dir_from"] == "SMOKERDET_HOME"
    assert set(info["versions"]) == {"smokerdet", "torch", "timm"}
    assert info["device"] in ("cpu", "cuda", "mps")
    assert info["models"][0]["name"] == "tiny"
    assert info["active_model"]["name"] == "default"  # training never changes the default
    r = runner.invoke(app, ["info"])
    assert "active model" in r.stdout and "tiny" in r.stdout


def test_unknown_command_is_a_usage_error(runner):
    r = runner.invoke(app, ["frobnicate"])
    assert r.exit_code == 2
    assert "No such command 'frobnicate'" in r.output


def test_print_error_formats_message_and_hint(capsys):
    print_error(DatasetLayoutError("bad folder [x]", hint="try --data"))
    err = capsys.readouterr().err
    assert err == "Error: bad folder [x]\nHint: try --data\n"


def _run_main(monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["smokerdet", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code


def test_main_maps_errors_to_exit_codes(monkeypatch, capsys, tmp_path):
    assert _run_main(monkeypatch, ["eval", "--data", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "Error: " in err and "Traceback" not in err
    assert _run_main(monkeypatch, ["train", "--epochs", "0", "--no-pretrained"]) == 2


def test_debug_env_shows_the_traceback(tmp_path):
    env = {"SMOKERDET_HOME": str(tmp_path), "SMOKERDET_DEBUG": "1", "PATH": ""}
    cmd = [sys.executable, "-m", "smokerdet", "eval", "--data", str(tmp_path / "none")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "DatasetLayoutError" in out.stderr
    env.pop("SMOKERDET_DEBUG")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: dataset folder not found")


def test_generated_command_docs_are_current():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import gen_cli_docs

    for path, text in gen_cli_docs.pages().items():
        assert path.read_text() == text, f"{path} is stale: run python scripts/gen_cli_docs.py"


def test_every_config_field_has_its_help_text():
    for cls in (TrainConfig, EvalConfig, PredictConfig):
        helps = field_help(cls)
        assert set(helps) == {f.name for f in fields(cls)}, cls
        assert all(h and "\n" not in h for h in helps.values())


def test_help_text_comes_from_the_config(runner):
    r = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert field_help(TrainConfig)["lp_epochs"] in r.stdout
    r = runner.invoke(app, ["eval", "--help"], terminal_width=200)
    assert field_help(EvalConfig)["seed"] in r.stdout


def test_pretrained_is_off_when_weights_or_init_say_where_to_start():
    assert TrainConfig().pretrained and TrainConfig().arch == "resnet50"
    assert not TrainConfig(weights="w.safetensors").pretrained


def test_init_keeps_its_arch_and_refuses_a_different_one(runner, model_copy):
    assert TrainConfig(init=str(model_copy)).arch == "resnet10t"
    assert TrainConfig(init=str(model_copy), arch="resnet10t").arch == "resnet10t"
    r = runner.invoke(app, ["train", "--init", str(model_copy), "--arch", "resnet50"])
    assert r.exit_code == 2
    assert "Error: --arch resnet50 differs from the --init model's resnet10t" in r.stderr
    assert "Hint: leave --arch out" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "x.jpg", "--workers", "-1"], "Error: --workers must be >= 0, got -1"),
        (["eval", "--batch-size", "0"], "Error: --batch-size must be at least 1, got 0"),
        (["train", "--workers", "-2"], "Error: --workers must be >= 0, got -2"),
    ],
)
def test_range_checks_name_the_flag(runner, args, message):
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in r.stderr


def test_download_sub_command_usage_errors(runner):
    r = runner.invoke(app, ["download", "--force", "weights"])
    assert r.exit_code == 2
    assert "Error: --force goes after the sub-command" in r.stderr
    r = runner.invoke(app, ["download", "weights", "a", "b", "--from", "w.safetensors"])
    assert r.exit_code == 2 and "--from imports weights for exactly one ARCH" in r.stderr
    r = runner.invoke(app, ["download", "dataset", "resnet50"])
    assert r.exit_code == 2 and "unexpected extra argument" in r.stderr
    for args in (
        ["download", "weights", "resnet50", "--source", "github"],
        ["download", "--source", "github", "weights"],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "--source" in r.stderr and "for the dataset" in r.stderr
        assert "Traceback" not in r.stderr


def test_main_maps_usage_errors_and_unexpected_ones(monkeypatch, capsys):
    assert _run_main(monkeypatch, ["frobnicate"]) == 2
    assert "No such command 'frobnicate'" in capsys.readouterr().err
    assert _run_main(monkeypatch, ["--version"]) == 0
    assert capsys.readouterr().out == f"smokerdet {__version__}\n"


def test_eval_plots_writes_four_pngs_that_decode(runner, model_copy, flat_data, tmp_path):
    from PIL import Image

    from smokerdet.plots import DPI, EVAL_FILES, FIGSIZE

    plots = tmp_path / "plots"
    args = ["eval", "--model", "tiny", "--data", str(flat_data), "--split", "all"]
    r = runner.invoke(app, [*args, "--plots", str(plots), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"] == "tiny"
    assert sorted(p.name for p in plots.iterdir()) == sorted(EVAL_FILES)
    for name in EVAL_FILES:
        assert f"Wrote {plots / name}" in r.stderr
        with Image.open(plots / name) as im:
            im.load()
            assert im.format == "PNG" and im.size == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)


def test_eval_plots_folder_that_cannot_be_written_fails_before_scoring(
    runner, model_copy, tmp_path
):
    # --data names nothing: had eval scored first, the error would be about the dataset.
    args = ["eval", "--model", "tiny", "--data", str(tmp_path / "none")]
    r = runner.invoke(app, [*args, "--plots", str(tmp_path / "no" / "such" / "plots")])
    assert r.exit_code == 2
    assert f"Error: --plots {tmp_path / 'no' / 'such' / 'plots'}: the folder" in r.stderr
    assert "does not exist" in r.stderr and "Hint: create it first" in r.stderr
    (tmp_path / "file").write_text("x")
    r = runner.invoke(app, [*args, "--plots", str(tmp_path / "file")])
    assert r.exit_code == 2 and "is a file, not a folder" in r.stderr


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: read-only bits, or /sys for root (who ignores them)."""
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for folder in (locked, Path("/sys")):
        try:
            tempfile.NamedTemporaryFile(dir=folder).close()
        except OSError:
            return folder
    pytest.skip("no folder here refuses writes")


def test_eval_plots_read_only_folder_fails_before_scoring(runner, model_copy, tmp_path):
    locked = _unwritable_folder(tmp_path)
    args = ["eval", "--model", "tiny", "--data", str(tmp_path / "none")]
    r = runner.invoke(app, [*args, "--plots", str(locked / "plots")])
    assert r.exit_code == 2
    assert f"Error: --plots {locked / 'plots'}: cannot write in {locked}" in r.stderr
    assert "Hint: give --plots a folder you can write to" in r.stderr


EVERY_COMMAND = [
    [],
    ["info"],
    ["download"],
    ["download", "dataset"],
    ["download", "weights"],
    ["train"],
    ["eval"],
    ["predict"],
    ["models"],
    ["models", "list"],
    ["models", "default"],
    ["models", "remove"],
    ["serve"],
    ["export"],
]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_help_has_no_python_type_names(runner, command):
    r = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    leaks = re.findall(r"<[\w|\[\], ]+>|list\[|\[\[", r.stdout)
    assert not leaks, f"{leaks} in\n{r.stdout}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--split", "bogus"], "'--split' / '-s': 'bogus' is not one of 'test', 'val',"),
        (["predict", "x.jpg", "--only", "bogus"], "'--only': 'bogus' is not one of 'smoking',"),
        (["eval", "--device", "tpu"], "'--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    ],
)
def test_a_bad_choice_is_a_plain_usage_error(runner, args, message):
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and f"Error: Invalid value for {message}" in r.stderr
    assert "Value error" not in r.stderr


def test_shared_options_speak_for_their_command(runner):
    train_help = runner.invoke(app, ["train", "--help"], terminal_width=200).stdout
    eval_help = runner.invoke(app, ["eval", "--help"], terminal_width=200).stdout
    assert "Random seed (data split, init, augmentation)" in train_help
    assert "(data split, init, augmentation)" not in eval_help
    assert "Seed of the split of a folder without split folders" in eval_help
    model_help = "Default: the model chosen with `smokerdet models default`, else the shipped model"
    for command in ("eval", "predict"):
        text = runner.invoke(app, [command, "--help"], terminal_width=300).stdout
        assert model_help in " ".join(text.split()), command


def test_bare_smokerdet_prints_help_and_exits_0(runner):
    r = runner.invoke(app, [])
    assert r.exit_code == 0 and r.stdout.startswith("Usage: smokerdet [OPTIONS] COMMAND")
    assert "models" in r.stdout and "predict" in r.stdout


def test_shell_completion(runner):
    r = runner.invoke(app, ["--show-completion", "bash"])
    assert r.exit_code == 0 and "_SMOKERDET_COMPLETE=complete_bash" in r.stdout
    for words, cword, expected in (
        ("smokerdet mod", "1", "models"),
        ("smokerdet models d", "2", "default"),
        ("smokerdet predict --only ", "3", "smoking\nnot_smoking"),
    ):
        env = {"_SMOKERDET_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        r = runner.invoke(app, [], env=env, prog_name="smokerdet")
        assert r.exit_code == 0 and r.stdout.strip() == expected, words
