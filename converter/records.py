"""Small typed records passed between the pipeline steps.

The release reader makes them from the CSVs, the converter writes DICOM from them and the
exporter rebuilds them from DICOM, so the round trip compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning", "info"]

# The one progress convention of every long-running library function: ``progress(done, total)``.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Box:
    """A finding box in pixel coordinates (x = column, y = row, origin top-left).

    ``text`` keeps the four values exactly as the CSV wrote them (``1234.5678710938``,
    ``-3.5``...), so that an export can reproduce the source row to the character.
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    text: tuple[str, str, str, str]

    @classmethod
    def from_text(cls, xmin: str, ymin: str, xmax: str, ymax: str) -> Box:
        """Parse the four CSV fields; raises ValueError on a non-number."""
        values = tuple(float(v) for v in (xmin, ymin, xmax, ymax))
        return cls(*values, text=(xmin, ymin, xmax, ymax))

    def clipped(self, columns: int, rows: int) -> tuple[float, float, float, float]:
        """The box clipped to the image area ``0..columns`` x ``0..rows``."""
        return (
            min(max(self.xmin, 0.0), float(columns)),
            min(max(self.ymin, 0.0), float(rows)),
            min(max(self.xmax, 0.0), float(columns)),
            min(max(self.ymax, 0.0), float(rows)),
        )

    def outside(self, columns: int, rows: int) -> bool:
        """True when part of the box lies outside the image."""
        return self.clipped(columns, rows) != (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass(frozen=True)
class Finding:
    """One box row of finding_annotations.csv.

    ``categories`` keeps the labels in the order the CSV lists them; ``birads`` is None
    where the CSV field is empty; ``row`` is the 1-based CSV line number (header = 1).
    """

    categories: tuple[str, ...]
    birads: int | None
    box: Box
    row: int


@dataclass(frozen=True)
class ImageRecord:
    """One image of the release, joined from the three CSVs and the file tree."""

    study_id: str
    series_id: str
    image_id: str
    laterality: str  # "L" / "R"
    view: str  # "CC" / "MLO"
    height: int  # Rows
    width: int  # Columns
    breast_birads: int  # 1..5
    breast_density: str  # "A".."D"
    split: str  # "training" / "test"
    findings: tuple[Finding, ...] = ()
    path: Path | None = None  # the source .dicom file
    sha256: str | None = None  # expected digest from SHA256SUMS.txt
    metadata: dict[str, str] = field(default_factory=dict, compare=False)
    row: int = 0  # line in breast-level_annotations.csv

    @property
    def relpath(self) -> str:
        """Path of the image inside the release, as SHA256SUMS.txt names it."""
        return f"images/{self.study_id}/{self.image_id}.dicom"


@dataclass(frozen=True)
class StudyRecord:
    """One exam: its images in CSV order."""

    study_id: str
    split: str
    images: tuple[ImageRecord, ...]


@dataclass(frozen=True)
class Problem:
    """Something wrong or noteworthy in the input, named by file and/or CSV row."""

    severity: Severity
    code: str  # short stable identifier, e.g. "checksum-mismatch"
    message: str
    file: str = ""  # path relative to the release (or output) root
    row: int | None = None  # CSV line number, header = 1
    study_id: str = ""
    image_id: str = ""
    detail: str = ""  # e.g. the traceback of an unexpected failure (report.json only)

    @property
    def where(self) -> str:
        """``file line N``, else the file, the study or the image the problem is about."""
        if self.file:
            return self.file + (f" line {self.row}" if self.row else "")
        return self.study_id or self.image_id

    def __str__(self) -> str:
        where = self.where
        return f"{where}: {self.message}" if where else self.message
