"""``smokerdet models``: list the models, choose the one that answers by default, remove one,
push one to the Hugging Face Hub.

Each sub-command calls one function of :mod:`smokerdet.models`. The choice of default is what
``predict``, ``eval`` and ``serve`` use when no ``--model`` is given; training never changes it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from smokerdet.cli._options import Command, JsonOpt

app = typer.Typer(
    help="List the models, choose the one that answers by default, remove one, share one.",
    invoke_without_command=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _models(ctx: typer.Context) -> None:
    from smokerdet.cli._output import show_help_when_bare

    show_help_when_bare(ctx)


NameArg = Annotated[str, typer.Argument(metavar="NAME", help="A model name from `models list`.")]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Remove it even when it is the default model (asked on a terminal, refused "
        "otherwise).",
    ),
]


@app.command("list", cls=Command)
def list_(json_out: JsonOpt = False) -> None:
    """Show every model and which one answers by default.

    The shipped model first, then the trained ones, oldest first. The model marked * answers
    when no --model is given.

    Example:

    \b
        smokerdet models list
        smokerdet models list --json | jq -r '.[] | select(.is_default) | .name'
    """
    from smokerdet.cli._output import print_json, render_models
    from smokerdet.models import list_models

    models = list_models()
    print_json([m.to_dict() for m in models]) if json_out else render_models(models)


@app.command("default", cls=Command)
def default(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The model to use when no --model is given."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Go back to the model shipped with smokerdet.")
    ] = False,
) -> None:
    """Show or choose the model that answers when no --model is given.

    With no NAME, print the current default's name on stdout. `default` is the shipped model.

    Example:

    \b
        smokerdet models default resnet18-20260101-120000
        smokerdet models default
        smokerdet models default --reset
    """
    from smokerdet.cli._output import out, say
    from smokerdet.errors import ConfigError
    from smokerdet.models import reset_default, set_default

    if name is not None and reset:
        raise ConfigError(
            "give a NAME or --reset, not both",
            hint="`smokerdet models default --reset` goes back to the shipped model",
        )
    if name is None and not reset:
        from smokerdet.models import resolve_model

        current, folder = resolve_model(None)
        out().print(current, markup=False)
        say(f"{_label(current)} answers when no --model is given ({folder})")
        return
    chosen = reset_default() if reset else set_default(name)  # type: ignore[arg-type]
    say(
        f"The default model is now {_label(chosen.name)}: predict, eval and serve "
        "use it when no --model is given"
    )


@app.command("remove", cls=Command)
def remove(name: NameArg, yes: YesOpt = False) -> None:
    """Delete a trained model's folder. The shipped model cannot be removed; the default
    model only with --yes (or a yes at the prompt).

    Example:

    \b
        smokerdet models remove resnet18-20260101-120000
    """
    from smokerdet.cli._output import say
    from smokerdet.models import remove_model

    removed = remove_model(name, default_too=yes or _confirmed(name))
    say(f"Removed model {name} ({removed.path})")
    if removed.is_default:
        say(
            f"Note: {name} was the default model; the shipped model answers now "
            "(choose another with `smokerdet models default NAME`)"
        )


@app.command("push", cls=Command)
def push(
    name: NameArg,
    repo_id: Annotated[
        str, typer.Argument(metavar="ORG/NAME", help="The Hub repo (created if it is missing).")
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repo private (read with HF_TOKEN).")
    ] = False,
    message: Annotated[
        str | None, typer.Option("--message", metavar="TEXT", help="The commit message.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Share a model on the Hugging Face Hub, with a model card and a SHA-256 manifest.

    One commit uploads model.json (local paths cut to their last part), the weights, the
    ONNX file, the familiarity and rehearsal files, a README.md model card and
    smokerdet.json, every file's SHA-256, checked on every pull. HF_TOKEN (or `hf auth
    login`) gives write access; HF_ENDPOINT points to another Hub. Anyone can then use it
    with --model hf://ORG/NAME; the hf://ORG/NAME@COMMIT printed pins this upload.

    Example:

    \b
        smokerdet models push my-site acme/smokerdet-site --private
        smokerdet predict --model hf://acme/smokerdet-site photos/
    """
    from smokerdet.cli._output import out, print_json, say
    from smokerdet.models import push_model

    result = push_model(name, repo_id, private=private, message=message)
    if json_out:
        print_json(result.to_dict())
        return
    out().print(result.spec, markup=False, highlight=False)
    made = "; model.onnx exported for it" if result.exported else ""
    say(
        f"Pushed {result.model} to {result.repo_id}: {len(result.files)} files{made} ({result.commit_url})"
    )


def _confirmed(name: str) -> bool:
    """On a terminal, whether the user agrees to remove ``name`` when it is the default."""
    import sys

    from smokerdet.errors import ModelNotFoundError
    from smokerdet.models.registry import chosen_default

    try:
        is_default = chosen_default() == name
    except ModelNotFoundError:
        return False  # remove_model says what is wrong
    if not is_default or not sys.stdin.isatty():
        return False
    return typer.confirm(f"{name} answers when no --model is given; remove it?", err=True)


def _label(name: str) -> str:
    from smokerdet.models import SHIPPED_NAME

    return f"{name} (shipped)" if name == SHIPPED_NAME else name
