"""A model against the radiologists: ``predictions import`` and ``evaluate``.

Each parses its arguments, calls one library function (:mod:`converter.evaluation`) that
the tests call too, and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from converter.errors import EXIT_ITEMS_FAILED

from .console import list_problems, progress_bar, reported_errors
from .console import out as screen

predictions_app = typer.Typer(no_args_is_help=True,
                              help="A model's predictions as DICOM SR (TID 1500).")


@predictions_app.command("import")
def import_(
    out: Annotated[Path, typer.Argument(help="A folder written by `convert`.")],
    name: Annotated[str, typer.Option("--name", help="The model's name (TID 4019).")],
    version: Annotated[str, typer.Option("--version", help="The model's version.")],
    boxes: Annotated[Path, typer.Option(
        "--boxes", help="BOXES.csv: study_id,image_id,xmin,ymin,xmax,ymax,score[,label]")],
    breasts: Annotated[Path | None, typer.Option(
        "--breasts", help="BREASTS.csv: study_id,laterality,score[,birads][,density]")] = None,
) -> None:
    """Write one SR per exam for the model under OUT and list it in OUT's manifest."""
    with reported_errors():
        from converter.evaluation.predictions import import_predictions

        with progress_bar("import") as progress:
            result = import_predictions(out, name, version, boxes, breasts, progress=progress)
    errors = [p for p in result.problems if p.severity == "error"]
    list_problems((f"[red]error[/red] {p}" for p in errors), len(errors))
    screen.print(f"{name} {version}: {result.studies} SR(s) with {result.boxes} boxes and "
                 f"{result.breasts} breast results in {result.folder} (listed in "
                 f"{out / 'manifest.csv'}); {len(errors)} row(s) rejected")
    if errors:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def evaluate(
    name: Annotated[str, typer.Option("--name", help="The model to score (as its SRs name it).")],
    report: Annotated[Path, typer.Option("--report", help="Folder for metrics.json, "
                                                          "report.md and the PNG plots.")],
    version: Annotated[str | None, typer.Option(
        "--version", help="Its version (needed when the PACS holds several).")] = None,
    split: Annotated[str, typer.Option("--split", help="test, training or all.")] = "test",
    match: Annotated[str, typer.Option("--match", help="iou (IoU >= 0.5) or center "
                                                       "(box centre inside the lesion).")] = "iou",
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0,
        help="Breast score from which a breast is recalled (default: the Youden point).")] = None,
    ignore_unboxed_suspicious: Annotated[bool, typer.Option(
        "--ignore-unboxed-suspicious",
        help="Leave images without a box on BI-RADS 3-5 breasts out of the false "
             "positives.")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed.")] = 0,
    url: Annotated[str | None, typer.Option(
        "--url", help="Orthanc URL (default: from the credentials file).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="HTTP user.")] = None,
    password: Annotated[str | None, typer.Option("--password", help="HTTP password.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="Studies fetched in parallel.")] = 2,
) -> None:
    """Score a model's SRs against the radiologists' over DICOMweb: FROC, AP, AUC, kappa."""
    with reported_errors():
        from converter.errors import PredictionsError
        from converter.evaluation.evaluate import SPLIT_CHOICES
        from converter.evaluation.report import write_report
        from server.transfer.evaluate import evaluate_pacs
        from server.userconfig import resolve_connection

        if split not in SPLIT_CHOICES or match not in ("iou", "center"):
            raise PredictionsError(f"--split is one of {', '.join(SPLIT_CHOICES)} and --match "
                                   "iou or center")
        connection = resolve_connection(url, user, password)
        with progress_bar("fetch") as progress:
            result = evaluate_pacs(connection, name, version, split=split, rule=match,
                                   ignore_unboxed_suspicious=ignore_unboxed_suspicious,
                                   threshold=threshold, seed=seed, workers=workers,
                                   progress=progress)
        paths = write_report(result, report)
    print_summary(result.metrics())
    problems = result.inputs.problems
    list_problems((f"[yellow]problem[/yellow] {p}" for p in problems), len(problems),
                  where=str(paths["metrics"]))
    screen.print(f"report: {paths['report']}   metrics: {paths['metrics']}")


def print_summary(metrics: dict) -> None:
    """The evaluation's summary table."""
    from rich.table import Table

    from converter.evaluation.report import summary_rows

    model = metrics["model"]
    table = Table(title=f"{model['name']} {model['version']} on the {metrics['split']} split "
                        f"(match {metrics['match']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for figure, value in summary_rows(metrics):
        table.add_row(figure, value)
    screen.print(table)


def register(app: typer.Typer) -> None:
    """Add ``predictions import`` and ``evaluate`` to ``app``."""
    app.add_typer(predictions_app, name="predictions")
    app.command()(evaluate)
