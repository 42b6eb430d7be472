"""``smokerdet models``: list the models, choose the one that answers by default, remove one.

Each sub-command calls one function of :mod:`smokerdet.models`. The choice of default is what
``predict``, ``eval`` and ``serve`` use when no ``--model`` is given; training never changes it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from smokerdet.cli._options import Command, JsonOpt

app = typer.Typer(
    help="List the models, choose the one that answers by default, remove one.",
    invoke_without_command=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _models(ctx: typer.Context) -> None:
    from smokerdet.cli import show_help_when_bare

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
