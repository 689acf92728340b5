"""``predictions import``: a model's CSVs, checked row by row, into one SR per exam under OUT.

Input formats (header first, UTF-8, comma separated; extra columns are an error)::

    BOXES.csv    study_id,image_id,xmin,ymin,xmax,ymax,score[,label]
    BREASTS.csv  study_id,laterality,score[,birads][,density]

Coordinates are pixels as in ``finding_annotations.csv`` (x = column, y = row, origin the
top-left corner); score in [0, 1]; label one of the release's finding categories;
laterality ``L``/``R``; birads ``1``-``5`` (or ``BI-RADS 4``); density ``A``-``D`` (or
``DENSITY C``); empty optional fields mean "not given".

Every row is checked against OUT (the converted exams and their images): an unknown study
or image, a box outside the image or without area, a score outside [0, 1], a malformed
field or a duplicate row is a :class:`~converter.records.Problem` naming the file and line;
the other rows are imported. One SR per exam with at least one good row
(:func:`converter.annotations.model_sr.build_model_sr`) goes to
``OUT/predictions/<model folder>/<study_id>.dcm`` and into ``OUT/manifest.csv`` (kind SR),
replacing what an earlier import of the same model and version wrote, so ``load`` sends
them and ``verify`` and ``validate`` check them.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from .. import codes
from ..annotations.model_sr import PredictedBox, PredictedBreast, build_model_sr
from ..errors import PredictionsError
from ..manifest import ManifestRow, read_manifest, write_manifest
from ..naming import parse_birads, parse_density
from ..output import output_lock, write_object
from ..records import Problem, ProgressCallback
from ..repair import dataset_bytes

BOX_COLUMNS = ("study_id", "image_id", "xmin", "ymin", "xmax", "ymax", "score")
BOX_OPTIONAL = ("label",)
BREAST_COLUMNS = ("study_id", "laterality", "score")
BREAST_OPTIONAL = ("birads", "density")
_TEXT = re.compile(r"^[^\\\x00-\x1f]{1,64}$")  # LO: at most 64 characters, no backslash


@dataclass
class ImportResult:
    """What :func:`import_predictions` wrote, and every problem found."""

    folder: Path
    studies: int = 0
    boxes: int = 0
    breasts: int = 0
    rows: list[ManifestRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def model_folder(name: str, version: str) -> str:
    """``predictions/<name>-<version>-<hash>``: readable, and distinct for distinct models."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{version}").strip("._") or "model"
    digest = hashlib.sha256(f"{name}\x1f{version}".encode()).hexdigest()[:8]
    return f"{codes.MODEL_SR_DIR}/{slug[:48]}-{digest}"


def check_identity(name: str, version: str) -> None:
    """Raise PredictionsError unless name and version fit a DICOM LO (1-64 characters)."""
    for what, value in (("name", name), ("version", version)):
        if not _TEXT.match(value) or value != value.strip():
            raise PredictionsError(f"model {what} {value!r}: 1 to 64 characters, no "
                                   "backslash, control character or surrounding spaces")


@dataclass(frozen=True)
class _Exam:
    study_id: str
    study_uid: str
    headers: dict[str, Dataset]  # image id -> MG header (no pixels)


def _exams(out: Path) -> dict[str, _Exam]:
    """The converted exams of OUT with their MG headers (from the manifest)."""
    rows = read_manifest(out)
    headers: dict[str, dict[str, Dataset]] = defaultdict(dict)
    uids: dict[str, str] = {}
    for row in rows:
        if row.kind == "MG":
            headers[row.study_id][row.image_id] = pydicom.dcmread(row.file(out),
                                                                 stop_before_pixels=True)
            uids[row.study_id] = row.study_uid
    return {sid: _Exam(sid, uids[sid], h) for sid, h in headers.items()}


def _read_rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...],
               problems: list[Problem]) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of a CSV after checking its header; raises PredictionsError if unusable."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionsError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise PredictionsError(f"{path}: empty file (expected the header "
                               f"{','.join(required + optional)})")
    header = [h.strip() for h in header]
    if tuple(header[:len(required)]) != required or any(h not in optional
                                                        for h in header[len(required):]) \
            or len(set(header)) != len(header):
        raise PredictionsError(f"{path}: header {','.join(header)!r}, expected "
                               f"{','.join(required)} then optional {','.join(optional)}")
    rows = []
    for line, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.append(Problem("error", "prediction-malformed",
                                    f"{len(fields)} fields, the header has {len(header)}",
                                    file=str(path), row=line))
            continue
        rows.append((line, {name: value.strip() for name, value in zip(header, fields)}))
    return rows


def _number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return number


def _score(value: str) -> float:
    score = _number(value, "score")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score {value} is outside [0, 1]")
    return score


def read_boxes(path: Path, exams: dict[str, _Exam],
               problems: list[Problem]) -> dict[str, list[PredictedBox]]:
    """Good rows of BOXES.csv per study, in file order; bad ones go to ``problems``."""
    result: dict[str, list[PredictedBox]] = defaultdict(list)
    seen: dict[tuple[str, ...], int] = {}
    for line, row in _read_rows(path, BOX_COLUMNS, BOX_OPTIONAL, problems):
        try:
            exam = exams.get(row["study_id"])
            if exam is None:
                raise ValueError(f"unknown study {row['study_id']!r} (not in the converted "
                                 "output)")
            header = exam.headers.get(row["image_id"])
            if header is None:
                raise ValueError(f"image {row['image_id']!r} is not an image of study "
                                 f"{exam.study_id}")
            x0, y0, x1, y1 = (_number(row[k], k) for k in ("xmin", "ymin", "xmax", "ymax"))
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"box ({x0}, {y0}, {x1}, {y1}) has no area (xmin < xmax and "
                                 "ymin < ymax are needed)")
            columns, rows = int(header.Columns), int(header.Rows)
            if x0 < 0 or y0 < 0 or x1 > columns or y1 > rows:
                raise ValueError(f"box ({x0}, {y0}, {x1}, {y1}) lies outside the image "
                                 f"(0..{columns} x 0..{rows})")
            score = _score(row["score"])
            label = row.get("label") or None
            if label is not None and label not in codes.FINDING_CODES:
                raise ValueError(f"label {label!r} is not a finding category "
                                 f"({', '.join(codes.FINDING_LABELS)})")
            key = (row["study_id"], row["image_id"], *(row[k] for k in BOX_COLUMNS[2:]),
                   label or "")
            if key in seen:
                raise ValueError(f"duplicate of line {seen[key]}")
            seen[key] = line
        except ValueError as exc:
            problems.append(Problem("error", "prediction-row", str(exc), file=str(path),
                                    row=line, study_id=row.get("study_id", "")))
            continue
        result[exam.study_id].append(PredictedBox(row["image_id"], (x0, y0, x1, y1), score,
                                                  label))
    return result


def read_breasts(path: Path, exams: dict[str, _Exam],
                 problems: list[Problem]) -> dict[str, list[PredictedBreast]]:
    """Good rows of BREASTS.csv per study; bad ones go to ``problems``."""
    result: dict[str, list[PredictedBreast]] = defaultdict(list)
    seen: dict[tuple[str, str], int] = {}
    for line, row in _read_rows(path, BREAST_COLUMNS, BREAST_OPTIONAL, problems):
        try:
            exam = exams.get(row["study_id"])
            if exam is None:
                raise ValueError(f"unknown study {row['study_id']!r} (not in the converted "
                                 "output)")
            laterality = row["laterality"]
            if laterality not in codes.LATERALITIES:
                raise ValueError(f"laterality {laterality!r} is not L or R")
            if not any(h.ImageLaterality == laterality for h in exam.headers.values()):
                raise ValueError(f"study {exam.study_id} has no {laterality} image")
            score = _score(row["score"])
            birads = _birads(row.get("birads", ""))
            density = _density(row.get("density", ""))
            key = (exam.study_id, laterality)
            if key in seen:
                raise ValueError(f"breast {laterality} of study {exam.study_id} already on "
                                 f"line {seen[key]}")
            seen[key] = line
        except ValueError as exc:
            problems.append(Problem("error", "prediction-row", str(exc), file=str(path),
                                    row=line, study_id=row.get("study_id", "")))
            continue
        result[exam.study_id].append(PredictedBreast(laterality, score, birads, density))
    return result


def _birads(text: str) -> int | None:
    if not text:
        return None
    value = parse_birads(text) if text.startswith("BI-RADS") else None
    if value is None:
        if not text.isdigit():
            raise ValueError(f"birads {text!r} is not 1 to 5")
        value = int(text)
    if not 1 <= value <= 5:
        raise ValueError(f"birads {text!r} is not 1 to 5 (the release's breast scale)")
    return value


def _density(text: str) -> str | None:
    if not text:
        return None
    if text.startswith("DENSITY"):
        return parse_density(text)
    if text not in ("A", "B", "C", "D"):
        raise ValueError(f"density {text!r} is not A, B, C or D")
    return text


def import_predictions(
    out: Path,
    name: str,
    version: str,
    boxes_csv: Path,
    breasts_csv: Path | None = None,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Write model ``name`` ``version``'s SRs into OUT and list them in its manifest.

    Raises
    ------
    PredictionsError
        Bad name or version, a CSV missing or with a wrong header.
    ManifestError
        OUT is not a converted folder.
    """
    out = Path(out)
    check_identity(name, version)
    folder = model_folder(name, version)
    result = ImportResult(folder=out / folder)
    exams = _exams(out)
    boxes = read_boxes(Path(boxes_csv), exams, result.problems)
    breasts = (read_breasts(Path(breasts_csv), exams, result.problems)
               if breasts_csv is not None else {})
    studies = sorted(set(boxes) | set(breasts))
    with output_lock(out):
        rows = [row for row in read_manifest(out) if not row.path.startswith(folder + "/")]
        written = set()
        for done, study_id in enumerate(studies, start=1):
            exam = exams[study_id]
            sr = build_model_sr(name, version, study_id, list(exam.headers.values()),
                                boxes.get(study_id, []), breasts.get(study_id, []))
            dest = out / folder / f"{study_id}.dcm"
            digest = write_object(dataset_bytes(sr), dest)
            written.add(dest)
            result.rows.append(ManifestRow(
                kind="SR", study_id=study_id, series_id="", image_id="",
                path=dest.relative_to(out).as_posix(), study_uid=str(sr.StudyInstanceUID),
                series_uid=str(sr.SeriesInstanceUID), sop_instance_uid=str(sr.SOPInstanceUID),
                sop_class_uid=str(sr.SOPClassUID), sha256=digest))
            result.boxes += len(boxes.get(study_id, []))
            result.breasts += len(breasts.get(study_id, []))
            if progress is not None:
                progress(done, len(studies))
        for stale in (out / folder).glob("*.dcm"):  # an earlier import's exams not in this one
            if stale not in written:
                stale.unlink()
        write_manifest(out, rows + result.rows)
    result.studies = len(studies)
    return result
