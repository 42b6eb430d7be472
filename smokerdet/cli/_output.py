"""Everything the CLI prints: rich tables, JSON, JSON Lines, CSV, ``Error:``/``Hint:`` lines.

Each renderer takes the typed result of a library function. stdout carries data; progress,
warnings and errors go to stderr, so ``smokerdet predict --json x | jq`` always works.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smokerdet.errors import Interrupted, SmokerdetError
from smokerdet.metrics import BinaryMetrics
from smokerdet.scoring import is_video_path, redact

if TYPE_CHECKING:
    from smokerdet.download import DownloadReport
    from smokerdet.inference import Prediction
    from smokerdet.models import ExportResult, Info, ModelInfo
    from smokerdet.scoring import EvalReport, WatchEvent, WatchSummary
    from smokerdet.training import CVResult, EpochStats, TrainResult


#: Width of the stdout console off a terminal: wide enough that no row ever wraps.
PIPE_WIDTH = 100_000


def out() -> Console:
    """Console on stdout (looked up at call time, so test runners can capture it).

    Off a terminal (a pipe, a file) nothing wraps: full paths, one table row per line.
    """
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def err() -> Console:
    """Console on stderr, for progress and warnings; like :func:`out`, unwrapped off a terminal."""
    width = None if sys.stderr.isatty() else PIPE_WIDTH
    return Console(file=sys.stderr, highlight=False, width=width)


def print_json(obj: object) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_error(e: SmokerdetError | str, hint: str | None = None) -> None:
    """``Error: ...`` and ``Hint: ...`` on stderr, as plain text (never wrapped or marked up)."""
    message = e.message if isinstance(e, SmokerdetError) else e
    hint = e.hint if isinstance(e, SmokerdetError) else hint
    sys.stderr.write(f"Error: {message}\n")
    if hint:
        sys.stderr.write(f"Hint: {hint}\n")
    sys.stderr.flush()


def print_warning(message: str) -> None:
    """``Warning: ...`` on stderr, as plain text."""
    sys.stderr.write(f"Warning: {message}\n")


def say(message: str) -> None:
    """One line of chatter on stderr, as plain text (a confirmation, a note)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class StderrHandler(logging.Handler):
    """Routes smokerdet's log warnings to stderr as ``Warning: ...`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "Warning" if record.levelno >= logging.WARNING else "Note"
        sys.stderr.write(f"{level}: {record.getMessage()}\n")


def setup_logging() -> None:
    """Install the stderr handler on the ``smokerdet`` logger, once."""
    logger = logging.getLogger("smokerdet")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        logger.addHandler(StderrHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def fmt(x: float | None, digits: int = 4) -> str:
    """A number for a table cell; ``-`` for None."""
    return "-" if x is None else f"{x:.{digits}f}"


def metrics_table(m: BinaryMetrics, extra_rows: Iterable[tuple[str, str]] = ()) -> Table:
    """Accuracy, precision, recall, F1, specificity, ROC-AUC and support, then
    ``extra_rows`` (label, cell)."""
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in [
        ("accuracy", m.accuracy),
        ("precision", m.precision),
        ("recall", m.recall),
        ("f1", m.f1),
        ("specificity", m.specificity),
        ("roc_auc", m.roc_auc),
    ]:
        table.add_row(label, fmt(value))
    table.add_row("threshold", fmt(m.threshold))
    table.add_row(
        "support (smoking / not smoking)", f"{m.support_smoking} / {m.support_not_smoking}"
    )
    for label, cell in extra_rows:
        table.add_row(label, cell)
    return table


def confusion_table(m: BinaryMetrics) -> Table:
    """The 2x2 confusion matrix, true classes as rows."""
    table = Table(title="Confusion matrix (rows: true class)", title_justify="left")
    table.add_column("")
    table.add_column("pred not_smoking", justify="right")
    table.add_column("pred smoking", justify="right")
    table.add_row("not_smoking", str(m.tn), str(m.fp))
    table.add_row("smoking", str(m.fn), str(m.tp))
    return table


def print_metrics(m: BinaryMetrics, title: str, extra_rows: Iterable[tuple[str, str]] = ()) -> None:
    console = out()
    # The title on its own line: as a table title it would wrap to the table's width.
    console.print(title, style="italic")
    console.print(metrics_table(m, extra_rows))
    console.print(confusion_table(m))
    for note in m.notes:
        err().print(f"Note: {escape(note)}")


def render_info(info: Info) -> None:
    """``smokerdet info`` as tables."""
    console = out()
    table = Table(title="smokerdet", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for k, v in info.versions.items():
        table.add_row(k, v)
    table.add_row("device", info.device)
    table.add_row("data dir", f"{info.data_dir} (from {info.data_dir_from})")
    for k, folder in info.folders.items():
        table.add_row(f"  {k}/", folder.path + ("" if folder.exists else " (not created yet)"))
    active = info.active_model
    table.add_row("active model", f"{active.name} ({active.path})" if active else "none")
    console.print(table)
    models = Table(title="Trained models", title_justify="left")
    for col in ("name", "arch", "created", "val F1"):
        models.add_column(col)
    for m in info.models:
        models.add_row(
            escape(m.name), m.arch or "[red]unreadable[/red]", m.created or "-", fmt(m.val_f1)
        )
    if info.models:
        console.print(models)
    else:
        console.print("No trained models yet.")


def render_export(result: ExportResult) -> None:
    """``smokerdet export``: the file's path on stdout; its check and what it carries on stderr."""
    from smokerdet.models import FAMILIARITY_FILE, REHEARSAL_FILE
    from smokerdet.models.sidecars import MISSING

    sys.stdout.write(f"{result.path}\n")
    note = "" if result.heatmaps else "; heatmaps need --backend torch"
    say(
        f"Exported {result.arch} ({result.size_bytes / 1e6:.1f} MB), "
        f"max |dp| vs torch = {result.max_abs_diff:.1e}{note}"
    )
    carries = []
    if result.familiarity:
        carries.append(f"familiarity stats of {result.familiarity_photos} photos")
    if result.rehearsal:
        carries.append("rehearsal rows")
    if carries:
        refitted = " (refitted)" if result.refitted else ""
        say(f"It carries {' and '.join(carries)}{refitted}: {result.carried_bytes / 1e6:.2f} MB")
    problem = result.not_carried.get(FAMILIARITY_FILE)
    if problem is not None:
        say(
            f"Note: {FAMILIARITY_FILE} of {result.model} {problem}: the file carries no "
            "familiarity stats, so its predictions carry no familiarity score "
            f"(`smokerdet export {result.model} --refit-familiarity DATA` fits them)"
        )
    problem = result.not_carried.get(REHEARSAL_FILE, MISSING)
    if problem != MISSING:  # a model without rehearsal rows is normal; a bad file is not
        say(f"Note: {REHEARSAL_FILE} of {result.model} {problem}: the file carries none")


def render_models(models: list[ModelInfo]) -> None:
    """``smokerdet models list``: one row per model, the default marked ``*``."""
    table = Table(title="Models", title_justify="left", caption_justify="left")
    columns = ("", "name", "arch", "created", "F1", "threshold", "familiarity", "path")
    for col in (*columns, "problem"):
        table.add_column(col, overflow="fold")
    for m in models:
        table.add_row(
            "*" if m.is_default else "",
            escape(f"{m.name} (shipped)" if m.is_shipped else m.name),
            m.arch or "-",
            m.created or "-",
            _f1_cell(m),
            fmt(m.threshold),
            "yes" if m.familiarity else "no",
            escape(str(m.path)),
            f"[red]{escape(m.problem)}[/red]" if m.problem else "-",
        )
    if not any(m.is_default for m in models):
        table.caption = "no model answers by default: pass --model NAME|PATH"
    else:
        table.caption = "* answers when no --model is given"
    out().print(table)


def _f1_cell(m: ModelInfo) -> str:
    """``0.9229 (cv)`` or ``0.8123 (val)``: the figure and where it was measured."""
    if m.f1 is None:
        return "-"
    return f"{fmt(m.f1)} ({'cv' if m.f1_kind == 'cross-validated' else 'val'})"


class RichTrainReporter:
    """Live progress for ``smokerdet train`` on stderr: a bar per epoch, a row per epoch."""

    def __init__(self) -> None:
        self.console = err()
        self.progress: Any = None
        self.task: Any = None

    def on_note(self, message: str) -> None:
        self.console.print(escape(message))

    def on_start(self, info: dict[str, Any]) -> None:
        c = info["counts"]
        origin = info["origin"]
        start = (
            f"from model {origin['init']}"
            if origin.get("init")
            else f"from {origin['weights']}"
            if origin.get("weights")
            else "from scratch"
        )
        self.console.print(
            f"Training [bold]{escape(info['name'])}[/bold]: {info['arch']} at "
            f"{info['input_size']}px on {info['device']}, {escape(start)}"
        )
        self.console.print(
            f"Data {escape(info['data'])} ({info['layout']}): "
            + ", ".join(f"{k} {v['smoking']}+{v['not_smoking']}" for k, v in c.items())
        )
        for note in info["notes"]:
            self.console.print(f"Note: {escape(note)}")
        if info.get("resumed_from"):
            self.console.print(f"Resuming after epoch {info['resumed_from']}")
        self.console.print(
            f"{'epoch':>5} {'loss':>7} {'v_loss':>7} {'v_acc':>6} {'v_prec':>6} "
            f"{'v_rec':>6} {'v_f1':>6} {'img/s':>6} {'time':>7}"
        )

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        if not self.console.is_terminal:
            return  # off a terminal a live bar only leaves blank lines; the epoch rows say it
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{total}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, loss="-")

    def on_step(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")

    def on_epoch_end(self, s: EpochStats) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        mark = " *" if s.improved else (" (probe)" if s.phase == "probe" else "")
        self.console.print(
            f"{s.epoch:>5} {s.train_loss:>7.4f} {fmt(s.val_loss):>7} {fmt(s.val_accuracy):>6} "
            f"{fmt(s.val_precision):>6} {fmt(s.val_recall):>6} {fmt(s.val_f1):>6} "
            f"{s.images_per_second:>6.1f} {s.seconds:>6.1f}s{mark}",
            highlight=False,
        )


def render_train(result: TrainResult, threshold_from: str = "best val F1") -> None:
    """Summary of a training run on stdout."""
    console = out()
    table = Table(title=f"Trained {result.name}", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    table.add_row("model", str(result.path))
    table.add_row("arch", result.arch)
    if result.adaptation:
        a = result.adaptation
        table.add_row(
            "recipe",
            f"head only, on {a['photos']} photos + {a['rehearsal_rows']} rehearsal rows "
            f"of {escape(a['init'])}'s training photos",
        )
    else:
        table.add_row(
            "best epoch",
            f"{result.best_epoch} of {result.epochs_run}"
            + (" (early stop)" if result.stopped_early else ""),
        )
    table.add_row(f"threshold ({threshold_from})", fmt(result.threshold))
    table.add_row("time", f"{result.seconds:.1f}s")
    if result.skipped:
        table.add_row("skipped files", str(len(result.skipped)))
    console.print(table)
    if result.val_metrics:
        title = (
            f"Cross-validated metrics on the site's photos ({result.adaptation['folds']} folds)"
            if result.adaptation
            else "Validation metrics of the saved model"
        )
        print_metrics(result.val_metrics, title)
    console.print(f"Saved to {escape(str(result.path))}")


def render_cv(result: CVResult) -> None:
    """``train --cv``: the fold table with mean ± sd, then the final model's summary."""
    table = Table(
        title=f"Cross-validation, {result.k} folds: metrics on each held-out fold at the CV "
        f"threshold {result.threshold:.4f} (threshold: the fold model's own best)",
        title_justify="left",
    )
    for column in ("fold", "epochs", "threshold", "acc", "F1", "AUC"):
        table.add_column(column, justify="left" if column == "fold" else "right")
    for f in result.folds:
        m = f.metrics
        table.add_row(
            str(f.fold),
            str(f.best_epoch),
            fmt(f.threshold),
            fmt(m.accuracy),
            fmt(m.f1),
            fmt(m.roc_auc),
        )
    table.add_section()
    mean, sd = result.mean, result.sd
    cells = [f"{fmt(mean[k])} ± {fmt(sd[k])}" for k in ("accuracy", "f1", "roc_auc")]
    table.add_row("mean ± sd", f"{result.epochs} (median)", "", *cells)
    p = result.pooled
    table.add_row("pooled", "", fmt(result.threshold), fmt(p.accuracy), fmt(p.f1), fmt(p.roc_auc))
    out().print(table)
    render_train(result.final, threshold_from="cross-validated")


def render_eval(report: EvalReport) -> None:
    """``smokerdet eval`` as tables."""
    title = f"{report.model} on {report.split} split of {report.data} ({report.metrics.n} images)"
    # The notes on in-sample photos went to stderr as warnings, from evaluate() itself.
    print_metrics(report.metrics, escape(title), _in_sample_rows(report.in_sample))
    if report.skipped:
        err().print(f"Warning: skipped {len(report.skipped)} unreadable images")


def _in_sample_rows(in_sample: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The table rows that say how many photos the model had seen: ``12 of 40``."""
    if in_sample is None:
        return [("in-sample photos", "unknown (no record of its training photos)")]
    rows = [("in-sample photos", f"{in_sample['photos']} of {in_sample['of']}")]
    if in_sample["validation_photos"]:
        rows.append(
            ("its validation photos", f"{in_sample['validation_photos']} of {in_sample['of']}")
        )
    return rows


@dataclass
class PredictSummary:
    """Counts of a predict run; ``done`` < ``total`` when it was interrupted."""

    total: int = 0
    done: int = 0
    model: str | None = None
    labelled: int = 0
    smoking: int = 0
    failed: int = 0
    seconds: float = 0.0
    threshold: float | None = None


def _printable(text: str) -> str:
    """A path on one line: control characters (a newline in a file name) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RowTable:
    """``predict``'s table, printed row by row as images finish (nothing is held back).

    The path column is as wide as the longest path given, so the rows line up without
    knowing the results; on a terminal it is capped so a row fits, off one never.
    """

    def __init__(self, paths: Iterable[str] | None, *, heatmaps: bool = False) -> None:
        self.console = out()
        # Paths not known up front (merged parts): a width that fits most.
        width = 40
        if paths is not None:
            # URLs are shown redacted; videos get a time or a span after their path.
            shown = [_printable(redact(p)) for p in paths]
            extra = VIDEO_CELL if any(is_video_path(p) for p in shown) else 0
            width = max((len(p) for p in shown), default=0) + extra
        if self.console.is_terminal:
            width = min(width, max(20, self.console.width - 25))
        self.width = max(width, len("path"))
        self.heatmaps = heatmaps
        self.started = False

    def header(self, threshold: float) -> None:
        """The column names, once, before the first row: the label says where smoking starts,
        so that ``0.432  smoking`` reads as a threshold of 0.390 and not as a bug."""
        if self.started:
            return
        self.started = True
        label = f"label (smoking from p >= {threshold:.3f})"  # ASCII: not every console has ≥
        heat = "  heatmap" if self.heatmaps else ""
        self.console.print(
            f"{'path':<{self.width}}  {'p(smoking)':>10}  {label}{heat}", style="bold"
        )

    def row(self, p: Prediction) -> None:
        from rich.text import Text

        self.header(p.threshold)
        path = _where(p).ljust(self.width)
        if p.error is not None:
            cells = ("-".rjust(10), ("error: " + _printable(p.error), "red"))
        else:
            style = "bold red" if p.label == "smoking" else "green"
            cells = (f"{p.probability:.3f}".rjust(10), (str(p.label), style))
        # Unlike the training photos: the label is less reliable than the model's metrics.
        odd = ("  (unfamiliar)", "yellow") if p.familiar is False else ""
        heat = f"  {_printable(p.heatmap or '-')}" if self.heatmaps else ""
        self.console.print(Text.assemble(path, "  ", cells[0], "  ", cells[1], odd, heat))


def _where(p: Prediction) -> str:
    """The table's path cell: a video frame's time, or an event's span, after its path."""
    where = _printable(p.path)
    if p.start is not None:
        end = f"{p.end:.1f}" if p.end is not None else ""
        return f"{where} {p.start:.1f}-{end}s"
    if p.time is not None:
        return f"{where} @{p.time:.1f}s"
    return where


#: Room the table leaves after a video's path for a frame's time or an event's span.
VIDEO_CELL = 16


def _progress(total: int, stack: ExitStack) -> Callable[[], None]:
    """A bar on a terminal's stderr for long runs whose rows go elsewhere; else a no-op.

    Rows printed on a terminal show the progress themselves; a bar on a redirected stderr
    would only leave blank lines in the log.
    """
    if total <= 50 or sys.stdout.isatty() or not sys.stderr.isatty():
        return lambda: None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = stack.enter_context(
        Progress(
            TextColumn("predict"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err(),
            transient=True,
            redirect_stdout=False,
        )  # fmt: skip
    )
    task = progress.add_task("predict", total=total)
    return lambda: progress.update(task, advance=1)


def render_predictions(
    rows: Iterable[Prediction],
    *,
    paths: list[str] | None = None,
    total: int | None = None,
    json_lines: bool,
    csv_path: Path | None,
    only: str | None,
    started: float,
    heatmaps: bool = False,
    events: bool = False,
) -> PredictSummary:
    """Stream each prediction as it finishes: a table row, a JSON line and/or a CSV row.

    JSON and CSV carry the row's fields (:func:`smokerdet.inference.rows.columns`), with a
    ``heatmap`` column when ``heatmaps`` and the event columns when ``events``.

    ``--only`` keeps the rows with that label and every error row (one row per failed input
    stays in JSON and CSV). On Ctrl-C the rows already written stay, the summary says how
    many images they cover, and :class:`~smokerdet.errors.Interrupted` says the same.
    """
    import time

    summary = PredictSummary(total=len(paths) if paths is not None else (total or 0))
    to_stdout_csv = csv_path is not None and str(csv_path) == "-"
    interrupted = False
    with ExitStack() as stack:
        writer = None
        if csv_path is not None:
            f = (
                sys.stdout
                if to_stdout_csv
                else stack.enter_context(open(csv_path, "w", newline="", encoding="utf-8"))
            )
            writer = csv.writer(f)
            from smokerdet.inference.rows import columns

            writer.writerow(columns(heatmaps, events))
        table = None if json_lines or to_stdout_csv else RowTable(paths, heatmaps=heatmaps)
        advance = _progress(summary.total, stack)
        try:
            for row in rows:
                emit_row(row, summary, writer, table, json_lines, only, heatmaps, events)
                advance()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()  # stops the worker processes now, not at garbage collection
    summary.seconds = time.perf_counter() - started
    _print_summary(summary)
    if interrupted:
        raise _interrupted(summary, csv_path if not to_stdout_csv else None)
    return summary


def emit_row(
    row: Prediction,
    summary: PredictSummary,
    writer: Any,
    table: RowTable | None,
    json_lines: bool,
    only: str | None,
    heatmaps: bool = False,
    events: bool = False,
) -> None:
    """Write one prediction everywhere it goes, and count it.

    Ctrl-C waits until this returns (see :mod:`smokerdet.cli._signals`), so a row is in every
    output or in none, and ``summary.done`` counts exactly the rows written.
    """
    _count(summary, row, warn=not json_lines)
    if table is not None:
        table.header(row.threshold)  # even when --only drops this row
    if only is not None and row.error is None and row.label != only:
        return
    if writer is not None:
        writer.writerow(row.csv_cells(heatmaps, events))
    if json_lines:
        sys.stdout.write(row.json_line())
        sys.stdout.flush()
    if table is not None:
        table.row(row)


def _count(summary: PredictSummary, row: Prediction, warn: bool) -> None:
    summary.done += 1
    summary.model = summary.model or row.model
    summary.threshold = row.threshold
    if row.error is None:
        summary.labelled += 1
        summary.smoking += row.label == "smoking"
    else:
        summary.failed += 1
        if warn:
            sys.stderr.write(f"Warning: {_printable(row.path)}: {row.error}\n")


def _print_summary(summary: PredictSummary) -> None:
    rate = summary.labelled / summary.seconds if summary.seconds > 0 else 0.0
    # A video gives many rows: then the rows are counted, not the inputs.
    count = (
        f"{summary.done}" if summary.done >= summary.total else f"{summary.done} of {summary.total}"
    )
    sys.stderr.write(
        (f"model {summary.model}: " if summary.model else "")
        + f"{count} image{'' if summary.total == 1 else 's'}, {summary.smoking} smoking, "
        f"{summary.labelled - summary.smoking} not smoking"
        + (f" at threshold {summary.threshold:.3f}" if summary.threshold is not None else "")
        + f", {summary.failed} failed, "
        f"{rate:.1f} images/s (model loading included)\n"
    )


#: Images from which an interrupted ``predict`` suggests a resumable run (``--output``).
LARGE_RUN = 200


def _interrupted(summary: PredictSummary, csv_file: Path | None) -> Interrupted:
    where = f"the rows printed{f' and in {csv_file}' if csv_file else ''}"
    if summary.done == 0:
        kept = "no image had finished"
    else:
        kept = f"{where} are complete for the first {summary.done} images"
    hint = f"{kept}; run the same command again to label all {summary.total}"
    if summary.total >= LARGE_RUN:
        hint += "; a run that can pick up where it stopped: add --output FILE, then --resume"
    return Interrupted(
        f"predict interrupted after {summary.done} of {summary.total} images", hint=hint
    )


def render_watch_event(event: WatchEvent, json_lines: bool) -> None:
    """One event of ``watch`` on stdout as it happens: a table line, or a JSON line."""
    if json_lines:
        sys.stdout.write(json.dumps(event.to_dict(), ensure_ascii=True) + "\n")
        sys.stdout.flush()
        return
    from rich.text import Text

    when = event.end if event.end is not None else event.start
    style = "bold red" if event.state == "started" else "green"
    span = f"  since {event.start}" if event.end is not None else ""
    snap = f"  snapshot {event.snapshot}" if event.snapshot else ""
    out().print(
        Text.assemble(
            when,
            "  ",
            (f"smoking {event.state}".ljust(15), style),
            f"  peak {event.peak_probability:.3f} at frame {event.best_frame}{span}{snap}",
        )
    )


def render_watch_summary(s: WatchSummary) -> None:
    """What a stopped ``watch`` saw, on stderr."""
    hook = (
        f", webhook {s.webhook_sent} sent, {s.webhook_failed} failed"
        if s.webhook_sent or s.webhook_failed
        else ""
    )
    err().print(
        f"Stopped watching {escape(s.source)} after {s.seconds:.1f}s: {s.frames} frames "
        f"({s.scored} scored, {s.dropped} dropped), {s.events} event{'' if s.events == 1 else 's'}"
        f", {s.reconnects} reconnect{'' if s.reconnects == 1 else 's'}, "
        f"largest lag {s.lag_max:.2f}s{hook}",
        highlight=False,
        soft_wrap=True,
    )


class DownloadProgress:
    """A byte progress bar on stderr (size, speed, ETA), shown once bytes flow."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> DownloadProgress:
        return self

    def update(self, done: int, total: int | None) -> None:
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                console=err(), transient=True,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task("download", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render_download_report(report: DownloadReport) -> None:
    """What ``smokerdet download`` did, one row per part: part, source, result, message."""
    table = Table(title="Download", title_justify="left")
    for col in ("part", "source", "result", "message"):
        table.add_column(col, overflow="fold")
    for p in report.parts:
        result = f"[red]{p.result}[/red]" if p.result == "failed" else p.result
        message = p.message.splitlines()[0] if p.message else ""
        table.add_row(escape(p.part), escape(p.source), result, escape(message))
    out().print(table)


def print_download_problems(report: DownloadReport) -> None:
    """Each dataset note as ``Warning:``, each failed part as ``Error: PART: ...`` + ``Hint:``."""
    for p in report.parts:
        for note in p.dataset.notes if p.dataset else []:
            print_warning(note)
        if p.result == "failed":
            print_error(f"{p.part}: {p.message}", hint=p.hint)


def render_download_list(status: dict[str, Any]) -> None:
    """``smokerdet download --list`` as tables."""
    console = out()
    table = Table(title="Dataset sources (tried in this order)", title_justify="left")
    for col in ("id", "url", "description"):
        table.add_column(col, overflow="fold")
    for s in status["sources"]:
        table.add_row(s["id"], s["url"], s["description"])
    console.print(table)
    ds = status["dataset"]
    state = (
        f"present, {_size(ds.get('size_bytes'))}, "
        + ("verified" if ds.get("verified") else "not verified")
        if ds["present"]
        else "not present"
    )
    console.print(f"Dataset: {escape(ds['path'])} ({state})")
    table = Table(title="Pretrained weights", title_justify="left")
    for col in ("arch", "tag", "present", "size", "path"):
        table.add_column(col, overflow="fold")
    for w in status["weights"]:
        table.add_row(
            w["arch"], w["tag"], "yes" if w["present"] else "no", _size(w["size_bytes"]),
            escape(w["path"]),
        )  # fmt: skip
    console.print(table)


def show_help_when_bare(ctx: typer.Context) -> None:
    """A group run with no sub-command prints its help and exits 0 (there was no mistake)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
