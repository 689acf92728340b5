"""The project's one error model: a base exception and the exit codes every command uses.

Library code raises a :class:`VindrError` subclass for a failure the user can act on (a
missing release folder, an unreadable manifest, a busy port); the message says what and
where. Problems with single items (one image, one CSV row, one study in the PACS) are not
raised: they are collected as :class:`converter.records.Problem` and the work goes on.

Exit codes (the same for every ``vindr-convert`` command):

=====  ===========================================================================
0      everything done, nothing failed
1      the command ran, but some items failed (listed, and in ``report.json``)
2      bad invocation or unusable input: nothing (or nothing useful) was done
3      internal error (a bug): the traceback is in the log file named on screen
=====  ===========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERNAL = 3


class VindrError(Exception):
    """Base of every exception the project raises on purpose; the message is for the user."""

    exit_code = EXIT_UNUSABLE


class ReleaseError(VindrError):
    """The release folder cannot be used at all (missing CSV, wrong header...)."""


class OutputError(VindrError):
    """The output folder cannot be used: locked by another run, not writable, disk full."""


class PredictionsError(VindrError):
    """A model's predictions cannot be imported or evaluated at all (no CSV, wrong header,
    bad model name, no such model in the PACS)."""


class ManifestError(VindrError, ValueError):
    """A conversion output folder's manifest is missing or malformed."""


class RepairError(VindrError):
    """One source image cannot be repaired; the message says why (per image, not fatal)."""


class ExportError(VindrError):
    """The DICOM objects do not hold what an exact export needs; ``problems`` lists why."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class ValidatorMissing(VindrError):
    """dciodvfy (or another required tool) is not installed."""


__all__ = [
    "EXIT_INTERNAL",
    "EXIT_ITEMS_FAILED",
    "EXIT_OK",
    "EXIT_UNUSABLE",
    "PredictionsError",
    "ExportError",
    "ManifestError",
    "OutputError",
    "ReleaseError",
    "RepairError",
    "ValidatorMissing",
    "VindrError",
]
