"""``OUT/manifest.csv``: one row per DICOM object the converter wrote.

Written by :mod:`converter.pipeline`, read by ``validate``, ``load`` and ``verify``. Header
(kind is MG, SR or SEG; path is relative to the output folder)::

    kind,study_id,series_id,image_id,path,study_uid,series_uid,sop_instance_uid,
    sop_class_uid,sha256,source,source_sha256
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ManifestError
from .fileio import atomic_write

MANIFEST_NAME = "manifest.csv"
KINDS: tuple[str, ...] = ("MG", "SR", "SEG")


@dataclass(frozen=True)
class ManifestRow:
    """One object written: where it came from, where it is, its UIDs and digest."""

    kind: str  # MG / SR / SEG
    study_id: str
    series_id: str
    image_id: str
    path: str  # relative to OUT
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    sha256: str
    source: str = ""  # relative to the release
    source_sha256: str = ""

    def file(self, out_dir: Path) -> Path:
        """Absolute path of the object inside ``out_dir``."""
        return Path(out_dir) / self.path


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ManifestRow))


def read_manifest(out_dir: Path) -> list[ManifestRow]:
    """Read ``out_dir/manifest.csv``.

    Raises
    ------
    ManifestError
        Missing file, wrong header, unknown kind, empty UID or duplicate SOP Instance UID.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (is {out_dir} a converted output folder?)")
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != COLUMNS:
            raise ManifestError(
                f"{path}: header {','.join(header)!r}, expected {','.join(COLUMNS)!r}")
        for line, fields_ in enumerate(reader, start=2):
            if len(fields_) != len(COLUMNS):
                raise ManifestError(f"{path}:{line}: {len(fields_)} fields, expected "
                                    f"{len(COLUMNS)}")
            row = ManifestRow(*fields_)
            if row.kind not in KINDS:
                raise ManifestError(f"{path}:{line}: kind {row.kind!r} is not one of {KINDS}")
            if not (row.study_uid and row.series_uid and row.sop_instance_uid and row.path):
                raise ManifestError(f"{path}:{line}: empty path or UID")
            if row.sop_instance_uid in seen:
                raise ManifestError(
                    f"{path}:{line}: SOP Instance UID {row.sop_instance_uid} listed twice")
            seen.add(row.sop_instance_uid)
            rows.append(row)
    return rows


def kept_rows(out_dir: Path, prefix: str, study_ids: set[str]) -> list[ManifestRow]:
    """Rows of the current manifest under ``prefix`` (e.g. ``predictions/``) for exams in
    ``study_ids`` whose file is still there: what a re-run of ``convert`` keeps of the
    objects another command added (a model's SRs). [] without a readable manifest."""
    try:
        rows = read_manifest(out_dir)
    except ManifestError:
        return []
    return [row for row in rows if row.path.startswith(prefix) and row.study_id in study_ids
            and row.file(out_dir).is_file()]


def write_manifest(out_dir: Path, rows: Iterable[ManifestRow]) -> Path:
    """Write ``out_dir/manifest.csv`` atomically, sorted by exam, kind and path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: (r.study_id, KINDS.index(r.kind), r.path)):
        writer.writerow([getattr(row, name) for name in COLUMNS])
    return atomic_write(Path(out_dir) / MANIFEST_NAME, buffer.getvalue())
