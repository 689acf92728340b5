"""The ``vindr-convert`` application: options common to every command, and registration.

Command modules only parse arguments and print; each imports its library lazily, inside
the command, so that ``--help`` loads neither pydicom nor highdicom nor the PACS clients.
"""

from __future__ import annotations

from typing import Annotated

import typer

from converter import __version__

from . import account_commands, convert_commands, evaluation_commands, pacs_commands
from .console import out, setup_logging

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Repair the VinDr-Mammo release into standard DICOM and serve it from Orthanc.",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"vindr-convert {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Repair the VinDr-Mammo release into standard DICOM and serve it from Orthanc.

    Exit codes: 0 all good, 1 some items failed, 2 bad invocation or unusable input,
    3 internal error (traceback in the log file).
    """
    setup_logging()


convert_commands.register(app)
pacs_commands.register(app)
account_commands.register(app)
evaluation_commands.register(app)


def main() -> None:
    """Entry point of the ``vindr-convert`` script."""
    app(prog_name="vindr-convert")
