"""``OUT/manifest.csv``: one row per DICOM object the converter wrote.

Written by :mod:`converter.pipeline`, read by ``validate``, ``load`` and ``verify``. Header
(kind is MG, SR or SEG; path is relative to the output folder)::

    kind,study_id,series_id,image_id,path,study_uid,series_uid,sop_instance_uid,
    sop_class_uid,sha256,source,source_sha256

Beside it, ``OUT/manifest.json`` is the conversion's own record of it: its number of rows
and exams and the SHA-256 of its bytes, written with it. :func:`read_manifest` refuses a
manifest that does not match its record (cut, edited, or another conversion's), so that
``load`` and ``verify`` never take half a release for the whole.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ManifestError
from .fileio import atomic_write

MANIFEST_NAME = "manifest.csv"
RECORD_NAME = "manifest.json"
RECORD_FORMAT = 1
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
    """Read ``out_dir/manifest.csv``, checked against its record (``manifest.json``).

    Raises
    ------
    ManifestError
        Missing file or record, a manifest that is not its record's (row count, exams,
        SHA-256), wrong header, unknown kind, empty UID or duplicate SOP Instance UID.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (is {out_dir} a converted output folder?)")
    data = path.read_bytes()
    rows = _parse(path, data)
    _check_record(path, data, rows)
    return rows


def _parse(path: Path, data: bytes) -> list[ManifestRow]:
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 ({exc})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
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


def _record(data: bytes, rows: list[ManifestRow]) -> dict[str, object]:
    return {"format": RECORD_FORMAT, "objects": len(rows),
            "exams": len({row.study_id for row in rows}),
            "sha256": hashlib.sha256(data).hexdigest()}


def _check_record(path: Path, data: bytes, rows: list[ManifestRow]) -> None:
    record_path = path.with_name(RECORD_NAME)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{record_path}: missing (the conversion's record of {path.name}, "
                            "written by convert: run convert again, it resumes and writes "
                            "it)") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{record_path}: unreadable ({exc})") from exc
    actual = _record(data, rows)
    if not isinstance(record, dict) or record != actual:
        said = (f"{record.get('objects')} objects of {record.get('exams')} exams"
                if isinstance(record, dict) else "something else")
        raise ManifestError(
            f"{path}: not the conversion's manifest: {actual['objects']} objects of "
            f"{actual['exams']} exams, SHA-256 {str(actual['sha256'])[:16]}..., while "
            f"{record_path.name} records {said}"
            + (f", SHA-256 {str(record.get('sha256'))[:16]}..." if isinstance(record, dict)
               else "") + " (cut or edited? convert writes both again)")


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


def write_manifest(out_dir: Path, rows: Iterable[ManifestRow], mode: int | None = None) -> Path:
    """Write ``out_dir/manifest.csv`` atomically, sorted by exam, kind and path, then its
    record ``manifest.json`` (``mode``: their permission bits)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    ordered = sorted(rows, key=lambda r: (r.study_id, KINDS.index(r.kind), r.path))
    for row in ordered:
        writer.writerow([getattr(row, name) for name in COLUMNS])
    data = buffer.getvalue().encode("utf-8")
    path = atomic_write(Path(out_dir) / MANIFEST_NAME, data, mode=mode)
    atomic_write(Path(out_dir) / RECORD_NAME,
                 json.dumps(_record(data, ordered), indent=1) + "\n", mode=mode)
    return path
