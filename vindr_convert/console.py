"""Everything the commands print and how they exit: one console, one progress bar, one
error handler.

Library functions report progress through one callback convention,
``progress(done, total)`` (:data:`converter.records.ProgressCallback`); :func:`progress_bar`
gives such a callback drawing a rich bar on stderr. :func:`reported_errors` maps exceptions
to the exit codes of :mod:`converter.errors`: a :class:`~converter.errors.VindrError` prints
its message, anything else is a bug whose traceback goes to the log file, never to the
screen.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from converter.errors import EXIT_INTERNAL, EXIT_ITEMS_FAILED, EXIT_UNUSABLE, VindrError
from converter.records import ProgressCallback

MAX_LISTED = 20  # problems printed; report.json / the log have them all
LOG_NAME = "vindr-convert.log"

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("vindr_convert")


def log_path() -> Path:
    """The log file: ``$VINDR_DICOM_LOG``, else ``$XDG_STATE_HOME/vindr-dicom/vindr-convert.log``."""
    explicit = os.environ.get("VINDR_DICOM_LOG")
    if explicit:
        return Path(explicit).expanduser()
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "vindr-dicom" / LOG_NAME


def setup_logging() -> Path | None:
    """Send the project's loggers (INFO and up) to the log file; None when it cannot be opened."""
    path = log_path()
    root = logging.getLogger()
    if any(getattr(h, "_vindr", False) for h in root.handlers):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler._vindr = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                           "%(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("converter", "server", "vindr_convert"):
        logging.getLogger(name).setLevel(logging.INFO)
    root.addHandler(handler)
    return path


def fail(message: str, code: int = EXIT_ITEMS_FAILED) -> NoReturn:
    """Print ``error: message`` and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=code)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Map exceptions to exit codes: VindrError -> its message and code (2); OSError -> 2;
    anything else -> an internal error (3) with the traceback in the log file."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except VindrError as exc:
        log.info("%s: %s", type(exc).__name__, exc)
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        log.info("OSError: %s", exc)
        fail(str(exc), EXIT_UNUSABLE)
    except Exception as exc:  # a bug: keep the traceback, show one line
        log.exception("internal error")
        where = setup_logging()
        fail(f"internal error: {type(exc).__name__}: {exc} "
             f"(traceback in {where or 'the log, which could not be opened'})", EXIT_INTERNAL)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[ProgressCallback]:
    """A ``progress(done, total)`` callback drawing one rich progress bar on stderr."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def list_problems(lines: Iterable[str], total: int, where: str | None = None) -> None:
    """Print the first :data:`MAX_LISTED` lines, then how many more there are (and in which
    file, ``where``, when one holds them all)."""
    for line in list(lines)[:MAX_LISTED]:
        err.print(f"  {line}", highlight=False)
    if total > MAX_LISTED:
        place = f" in {where}" if where else ""
        err.print(f"  ... and {total - MAX_LISTED} more{place}", highlight=False)
