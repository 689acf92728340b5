"""A model against the radiologists: ``predictions import`` and ``evaluate``.

Each parses its arguments, calls one library function (:mod:`converter.evaluation`) that
the tests call too, and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    breasts: Annotated[Optional[Path], typer.Option(
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


def register(app: typer.Typer) -> None:
    """Add ``predictions import`` and ``evaluate`` to ``app``."""
    app.add_typer(predictions_app, name="predictions")
