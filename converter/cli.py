"""The ``vindr-convert`` command line: argument parsing and printing only.

Each command calls one library function that the tests call too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

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
from rich.table import Table

from . import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Repair the VinDr-Mammo release into standard DICOM and serve it from Orthanc.",
)
console = Console(stderr=True)
MAX_LISTED = 50  # problems printed; report.json has them all
out_console = Console()


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(on_start(total), on_progress(n)) callbacks drawing one rich progress bar."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield (lambda total: progress.update(task, total=total),
               lambda n: progress.advance(task, n))


def _version(value: bool) -> None:
    if value:
        out_console.print(f"vindr-convert {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Repair the VinDr-Mammo release into standard DICOM and serve it from Orthanc."""


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic release into.")],
    studies: Annotated[int, typer.Option(help="Number of exams (4 images each).")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    scale: Annotated[float, typer.Option(help="Shrink image sizes by this factor "
                                              "(1 = real sizes, ~20 MB per image).")] = 8.0,
) -> None:
    """Write a synthetic release with the real layout and every known defect."""
    from .synth import generate_release

    with progress_bar("synth") as (start, advance):
        start(studies * 4)
        summary = generate_release(out, studies=studies, seed=seed, scale=scale,
                                   progress=advance)
    out_console.print(f"wrote {summary.studies} exams, {summary.images} images to {out}")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="The release folder (with images/ and the CSVs).")],
    out: Annotated[Path, typer.Argument(help="Output folder (created; re-runs resume).")],
    workers: Annotated[int, typer.Option(help="Worker processes (default: all cores).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Convert only the first N exams.")] = None,
    sr: Annotated[bool, typer.Option("--sr/--no-sr", help="Write one SR per exam.")] = True,
    seg: Annotated[bool, typer.Option("--seg/--no-seg",
                                      help="Write one SEG per annotated image.")] = True,
) -> None:
    """Repair every image, encode the annotations, write manifest.csv and report.json."""
    from .pipeline import ConvertOptions, convert_release
    from .release import ReleaseError

    try:
        with progress_bar("convert") as (start, advance):
            result = convert_release(src, out, workers=workers or os.cpu_count(), limit=limit,
                                     options=ConvertOptions(write_sr=sr, write_seg=seg),
                                     on_start=start, on_progress=advance)
    except ReleaseError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    errors = [p for p in result.problems if p.severity == "error"]
    for problem in errors[:MAX_LISTED]:
        where = problem.file + (f" line {problem.row}" if problem.row else "")
        console.print(f"[red]error[/red] {where or problem.study_id}: {problem.message}")
    if len(errors) > MAX_LISTED:
        console.print(f"... and {len(errors) - MAX_LISTED} more errors in report.json")
    table = Table(title=f"converted into {out}")
    for column in ("exams", "images", "failed", "resumed exams", "MG", "SR", "SEG",
                   "errors", "warnings"):
        table.add_column(column, justify="right")
    warnings = sum(p.severity == "warning" for p in result.problems)
    table.add_row(*(str(v) for v in (
        result.studies, result.images, result.failed_images, result.skipped_studies,
        result.objects.get("MG", 0), result.objects.get("SR", 0), result.objects.get("SEG", 0),
        result.errors, warnings)))
    out_console.print(table)
    out_console.print(f"manifest: {out / 'manifest.csv'}   report: {out / 'report.json'}")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def validate(
    out: Annotated[Path, typer.Argument(help="A folder written by `convert`.")],
    workers: Annotated[int, typer.Option(help="Parallel dciodvfy runs.")] = 0,
) -> None:
    """Run dciodvfy and the project's checks on every object written."""
    from .validate import ValidatorMissing, validate_output

    try:
        with progress_bar("validate") as (start, advance):
            report = validate_output(out, workers=workers or os.cpu_count() or 1,
                                     on_start=start, on_progress=advance)
    except (ValidatorMissing, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    table = Table(title=f"validation of {out}")
    for column in ("kind", "objects", "dciodvfy errors", "dciodvfy warnings", "check failures"):
        table.add_column(column, justify="right")
    for kind in sorted(report.stats):
        s = report.stats[kind]
        table.add_row(kind, str(s.objects), str(s.dciodvfy_errors), str(s.dciodvfy_warnings),
                      str(s.check_failures))
    out_console.print(table)
    for text, count in sorted(report.warnings.items()):
        out_console.print(f"  dciodvfy warning x{count}: {text}")
    for path, _severity, text in report.issues[:MAX_LISTED]:
        console.print(f"[red]error[/red] {path}: {text}")
    if len(report.issues) > MAX_LISTED:
        console.print(f"... and {len(report.issues) - MAX_LISTED} more")
    out_console.print("OK" if report.ok else f"FAILED: {len(report.issues)} problem(s)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="A folder written by `convert`.")],
    dest: Annotated[Path, typer.Argument(help="Folder for the two annotation CSVs.")],
    compare: Annotated[Optional[Path], typer.Option(
        help="A release folder to compare the exported rows with.")] = None,
) -> None:
    """Rebuild breast-level and finding CSVs from the DICOM objects alone."""
    from .export import compare_with_release, export_folder

    breast_rows, finding_rows = export_folder(out, dest)
    out_console.print(f"wrote {len(breast_rows)} breast-level and {len(finding_rows)} finding "
                      f"rows to {dest}")
    if compare is not None:
        differences = compare_with_release(compare, breast_rows, finding_rows)
        for difference in differences[:MAX_LISTED]:
            console.print(f"[red]diff[/red] {difference}")
        out_console.print("identical to the source" if not differences
                          else f"{len(differences)} difference(s)")
        if differences:
            raise typer.Exit(1)


def _register_server_commands() -> None:
    from server.commands import register

    register(app)


_register_server_commands()


def main() -> None:
    app(prog_name="vindr-convert")
