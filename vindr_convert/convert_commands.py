"""The converter's commands: ``synth``, ``convert``, ``validate``, ``export``.

Each parses its arguments, calls one library function that the tests call too, and prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from converter.errors import EXIT_ITEMS_FAILED

from .console import err, list_problems, progress_bar, reported_errors
from .console import out as screen


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic release into.")],
    studies: Annotated[int, typer.Option(min=1, help="Number of exams (4 images each).")] = 50,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; same seed, same bytes.")] = 0,
    scale: Annotated[float, typer.Option(help="Shrink image sizes by this factor "
                                              "(1 = real sizes, ~20 MB per image).")] = 8.0,
    model: Annotated[Path | None, typer.Option(
        help="Also write a simulated model's BOXES.csv and BREASTS.csv into this folder "
             "(for `predictions import`).")] = None,
) -> None:
    """Write a synthetic release with the real layout and every known defect."""
    with reported_errors():
        from converter.synth import generate_release

        with progress_bar("synth") as progress:
            summary = generate_release(out, studies=studies, seed=seed, scale=scale,
                                       progress=progress)
    screen.print(f"wrote {summary.studies} exams, {summary.images} images to {out}")
    if model is not None:
        with reported_errors():
            from converter.synth import simulate_model

            simulated = simulate_model(out, model, seed=seed)
        screen.print(f"simulated model: {simulated.boxes} boxes ({simulated.found} of "
                     f"{simulated.lesions} lesions found), {simulated.breasts} breasts in "
                     f"{model}")


def convert(
    src: Annotated[Path, typer.Argument(help="The release folder (with images/ and the CSVs).")],
    out: Annotated[Path, typer.Argument(help="Output folder (created; re-runs resume).")],
    workers: Annotated[int, typer.Option(help="Worker processes (default: all cores).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Convert only the first N exams.")] = None,
    sr: Annotated[bool, typer.Option("--sr/--no-sr", help="Write one SR per exam.")] = True,
    seg: Annotated[bool, typer.Option("--seg/--no-seg",
                                      help="Write one SEG per annotated image.")] = True,
) -> None:
    """Repair every image, encode the annotations, write manifest.csv and report.json."""
    with reported_errors():
        from converter.pipeline import ConvertOptions, convert_release

        with progress_bar("convert") as progress:
            result = convert_release(src, out, workers=workers or os.cpu_count(), limit=limit,
                                     options=ConvertOptions(write_sr=sr, write_seg=seg),
                                     progress=progress)
    errors = [p for p in result.problems if p.severity == "error"]
    list_problems((f"[red]error[/red] {p}" for p in errors), len(errors), where="report.json")
    table = Table(title=f"converted into {out}")
    for column in ("exams", "images", "failed", "resumed exams", "MG", "SR", "SEG",
                   "errors", "warnings"):
        table.add_column(column, justify="right")
    warnings = sum(p.severity == "warning" for p in result.problems)
    table.add_row(*(str(v) for v in (
        result.studies, result.images, result.failed_images, result.skipped_studies,
        result.objects.get("MG", 0), result.objects.get("SR", 0), result.objects.get("SEG", 0),
        result.errors, warnings)))
    screen.print(table)
    screen.print(f"manifest: {out / 'manifest.csv'}   report: {out / 'report.json'}")
    if not result.ok:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def validate(
    out: Annotated[Path, typer.Argument(help="A folder written by `convert`.")],
    workers: Annotated[int, typer.Option(help="Parallel dciodvfy runs.")] = 0,
) -> None:
    """Run dciodvfy and the project's checks on every object written."""
    with reported_errors():
        from converter.validate import validate_output

        with progress_bar("validate") as progress:
            report = validate_output(out, workers=workers or os.cpu_count() or 1,
                                     progress=progress)
    table = Table(title=f"validation of {out}")
    for column in ("kind", "objects", "dciodvfy errors", "dciodvfy warnings", "check failures"):
        table.add_column(column, justify="right")
    for kind in sorted(report.stats):
        s = report.stats[kind]
        table.add_row(kind, str(s.objects), str(s.dciodvfy_errors), str(s.dciodvfy_warnings),
                      str(s.check_failures))
    screen.print(table)
    for text, count in sorted(report.warnings.items()):
        screen.print(f"  dciodvfy warning x{count}: {text}")
    list_problems((f"[red]error[/red] {p}" for p in report.issues), len(report.issues))
    screen.print("OK" if report.ok else f"FAILED: {len(report.issues)} problem(s)")
    if not report.ok:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def export(
    out: Annotated[Path, typer.Argument(help="A folder written by `convert`.")],
    dest: Annotated[Path, typer.Argument(help="Folder for the two annotation CSVs.")],
    compare: Annotated[Path | None, typer.Option(
        help="A release folder to compare the exported rows with.")] = None,
) -> None:
    """Rebuild breast-level and finding CSVs from the DICOM objects alone."""
    with reported_errors():
        from converter.export import compare_with_release, export_folder

        breast_rows, finding_rows = export_folder(out, dest)
        screen.print(f"wrote {len(breast_rows)} breast-level and {len(finding_rows)} finding "
                  f"rows to {dest}")
        if compare is None:
            return
        differences = compare_with_release(compare, breast_rows, finding_rows)
    list_problems((f"[red]diff[/red] {d}" for d in differences), len(differences))
    screen.print("identical to the source" if not differences
              else f"{len(differences)} difference(s)")
    if differences:
        err.print("[bold red]error:[/] the export differs from the source release")
        raise typer.Exit(EXIT_ITEMS_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``synth``, ``convert``, ``validate`` and ``export`` to ``app``."""
    for command in (synth, convert, validate, export):
        app.command()(command)

