"""The ``smokerdet`` command: one module per command, wired into one Typer app here.

Each command module parses its options into a config of :mod:`smokerdet.config`, calls one
library function and hands the typed result to :mod:`smokerdet.cli._output`. :func:`main` is
the one place where errors become ``Error:``/``Hint:`` lines and exit codes; a traceback
appears only with ``SMOKERDET_DEBUG=1``. Test runners that invoke :data:`app` go through
:func:`main` too, so they see exactly what a user sees.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from smokerdet import distributed
from smokerdet.__about__ import __version__
from smokerdet.errors import Interrupted, SmokerdetError

DEBUG_ENV = "SMOKERDET_DEBUG"

#: What a Ctrl-C in each command leaves behind, and how to go on. (``predict`` and ``train``
#: say more themselves when they are stopped mid-work: how many images, which epochs.)
INTERRUPT_HINTS = {
    "download": "run the same command again: the download resumes where it stopped",
    "predict": "each row printed is complete; run the same command again to label them all",
    "eval": "eval changes nothing (--plots files are written whole or not at all); run it again",
    "train": "if an epoch had finished, `smokerdet train --resume NAME` continues it; "
    "otherwise start again with the same command",
    "info": "info changes nothing; run it again",
    "models": "each change is one atomic step; see where things stand with `smokerdet models list`",
    "export": "nothing was written (the ONNX file appears whole or not at all); run it again",
    "serve": "requests in flight were finished; start it again to serve",
    "watch": "events that had ended were printed; start it again to watch",
}
DEFAULT_INTERRUPT_HINT = "run the same command again"


class _Root(TyperGroup):
    """The root command: every run, from a shell or a test runner, goes through :func:`main`."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> None:
        main(args, prog_name=prog_name or "smokerdet", **extra)

    def run(self, args: Sequence[str] | None, prog_name: str, **extra: Any) -> NoReturn:
        """Click's own run: usage errors, ``--help`` and ``typer.Exit`` become exit codes.

        Usage errors are shown as click shows them, less the ``Value error, `` that Typer's
        validation puts before a bad choice.
        """
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except typer.TyperException as e:  # click's usage errors, vendored by Typer
            if not hasattr(e, "show"):
                raise
            e.message = e.message.removeprefix("Value error, ")  # type: ignore[attr-defined]
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:  # Ctrl-C before or after the command ran (while parsing)
            raise Interrupted("smokerdet interrupted", hint=DEFAULT_INTERRUPT_HINT) from None
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        # Ctrl-C says which command stopped and how to go on (click would only exit 130).
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            name = ctx.invoked_subcommand or "smokerdet"
            hint = INTERRUPT_HINTS.get(name, DEFAULT_INTERRUPT_HINT)
            raise Interrupted(f"{name} interrupted", hint=hint) from None


app = typer.Typer(
    name="smokerdet",
    cls=_Root,
    help="Tell whether people in photos are smoking.",
    invoke_without_command=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smokerdet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Tell whether people in photos are smoking.

    Start with `smokerdet predict photos/` (uses the model shipped with smokerdet), or
    train your own with `smokerdet train --data DIR`.
    """
    from smokerdet.cli._output import show_help_when_bare

    show_help_when_bare(ctx)


def _register() -> None:
    from smokerdet.cli import download, eval, export, info, models, predict, serve, train, watch
    from smokerdet.cli._options import Command

    app.command("info", cls=Command)(info.info)
    app.add_typer(download.app, name="download")
    app.command("train", cls=Command)(train.train)
    app.command("eval", cls=Command)(eval.eval_)
    app.command("predict", cls=Command)(predict.predict)
    app.add_typer(models.app, name="models")
    app.command("serve", cls=Command)(serve.serve)
    app.command("watch", cls=Command)(watch.watch)
    app.command("export", cls=Command)(export.export)


_register()


def main(args: Sequence[str] | None = None, prog_name: str = "smokerdet", **extra: Any) -> None:
    """Console-script entry point: run a command, and turn any error into its exit code.

    Exit codes: 0 done, 1 an error, 2 bad usage, 3 some images failed (``predict``),
    130 interrupted. Never returns: it always exits with ``SystemExit``.
    """
    from smokerdet.cli._output import print_error, setup_logging
    from smokerdet.cli._signals import interrupts

    setup_logging()
    debug = os.environ.get(DEBUG_ENV) == "1"
    root = typer.main.get_command(app)
    assert isinstance(root, _Root)
    try:
        # args is None only for the console script, whose process ends right after.
        with interrupts(exiting=args is None):
            root.run(args, prog_name, **extra)  # exits itself, unless an error escapes
        code: object = 0
    except SystemExit as e:  # how root.run ends: one exit below for every outcome
        code = e.code
    except SmokerdetError as e:
        if debug:
            raise
        print_error(e)
        code = e.exit_code
    except Exception as e:  # last resort: no traceback for users unless they ask
        if debug:
            raise
        print_error(
            f"unexpected {type(e).__name__}: {e}",
            hint=f"rerun with {DEBUG_ENV}=1 for a traceback, and please report it",
        )
        code = 1
    if args is None and distributed.joined_a_group():
        distributed.hard_exit(code)  # see joined_a_group: gloo's threads may abort
    sys.exit(code)


__all__ = ["app", "main"]
