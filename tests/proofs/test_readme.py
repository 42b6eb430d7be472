"""The README's examples run as written, so they cannot drift from the code.

Every ```python block runs in a temporary working directory whose ``examples/`` is a tiny
synthetic dataset (the data dir is the test's own, see conftest). One override keeps it fast,
applied as text to the block and checked to apply, so a README change that removes it fails
here instead of silently running a slow example:

* ``arch="resnet18"`` trains ``resnet10t`` at 32 px, batch 8, in-process, for 1 epoch
  (``epochs=3`` -> ``epochs=1``): the same code path, seconds instead of minutes.

Every ```bash line that calls ``smokerdet`` is checked against the CLI: its command exists and
each ``--flag`` it uses is in that command's ``--help``. The ones that can run offline in a
clone (``--help``, ``predict``/``info`` on paths that exist in the repository) are run.
"""

import re
import shlex
from pathlib import Path

import pytest
from conftest import write_flat

from smokerdet.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

SPEEDUPS = {
    'arch="resnet18"': 'arch="resnet10t", img_size=32, batch_size=8, workers=0',
    "epochs=3": "epochs=1",
}

#: README lines for CLI features another change wires in; remove an entry once it exists
#: (the test fails when a pending command or flag shows up, so this list cannot go stale).
PENDING: set[tuple[str, str | None]] = set()

#: Commands safe to run offline from a clone: no network, nothing written outside the data dir.
RUNNABLE = {"--help", "predict", "info"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def _commands() -> list[list[str]]:
    """Every ``smokerdet ...`` invocation in the bash blocks, as argv after ``smokerdet``."""
    found = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line)
            for part in re.split(r"&&|\|", line):
                part = part.strip()
                if part.startswith("smokerdet "):
                    found.append(shlex.split(part)[1:])
    return found


def test_the_readme_has_the_examples_this_test_expects():
    assert len(_blocks("python")) == 1
    code = _blocks("python")[0]
    for old in SPEEDUPS:
        assert old in code, f"the README's Python example no longer has {old!r}: update SPEEDUPS"
    commands = _commands()
    assert ["predict", "examples/"] in commands
    assert len(commands) >= 20


def test_python_examples_run(tmp_path, monkeypatch, capsys):
    write_flat(tmp_path / "examples", n_per_class=6)
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(_blocks("python")):
        for old, new in SPEEDUPS.items():
            code = code.replace(old, new)
        exec(compile(code, f"README.md python block {i + 1}", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("examples/") or "/examples/" in line for line in out) >= 12
    assert any(line.startswith("default ") for line in out)  # evaluate() names its model
    trained = [m for m in (tmp_path / "home" / "models").iterdir() if not m.name.startswith(".")]
    assert len(trained) == 1
    assert out[-1].startswith(f"{trained[0].name} ")  # predict(model=...) used the new model


def _help(runner, argv: list[str]) -> str | None:
    """The ``--help`` text of the command ``argv`` starts with, or None if there is none.

    A group's sub-command (``models default``) has its own help, with its own flags.
    """
    if argv[0].startswith("-"):
        return runner.invoke(app, ["--help"], terminal_width=200).output
    group = argv[0] in ("download", "models") and len(argv) > 1 and not argv[1].startswith("-")
    r = runner.invoke(app, [*argv[: 2 if group else 1], "--help"], terminal_width=200)
    return r.output if r.exit_code == 0 else None


def test_shell_examples_use_commands_and_flags_that_exist(runner):
    problems = []
    for argv in _commands():
        command = argv[0] if not argv[0].startswith("-") else None
        text = _help(runner, argv)
        if (command, None) in PENDING:
            assert text is None, f"`smokerdet {command}` exists now: remove it from PENDING"
            continue
        if text is None:
            problems.append(f"smokerdet {shlex.join(argv)}: no such command")
            continue
        for flag in (a.split("=")[0] for a in argv if a.startswith("--")):
            if (command, flag) in PENDING:
                assert flag not in text, f"{command} {flag} exists now: remove it from PENDING"
            elif not re.search(rf"{re.escape(flag)}\b", text):
                problems.append(f"smokerdet {shlex.join(argv)}: {command} has no {flag}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "argv",
    [
        a
        for a in _commands()
        if a[0] in RUNNABLE
        and "-" not in a  # reads paths from stdin
        and all((ROOT / p).exists() for p in a[1:] if not p.startswith("-"))
    ],
    ids=shlex.join,
)
def test_offline_shell_examples_run(argv, runner, monkeypatch):
    monkeypatch.chdir(ROOT)
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    if argv[0] == "predict":
        assert r.stdout.count("smoking") >= 12
