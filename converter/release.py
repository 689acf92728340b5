"""Read a VinDr-Mammo release: parse its CSVs exactly as published and join them to the files.

Every problem found is returned as a :class:`~converter.records.Problem` naming the CSV row
or file; reading goes on past bad rows, so one typo does not stop a 20,000-image run.
File checksums are not computed here: the conversion workers verify them while streaming.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from .codes import LATERALITIES, NO_FINDING, SPLITS, VIEWS
from .errors import ReleaseError
from .naming import (
    format_birads,
    format_density,
    is_hex_id,
    parse_birads,
    parse_categories,
    parse_density,
)
from .records import Box, Finding, ImageRecord, Problem, StudyRecord

BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
METADATA_CSV = "metadata.csv"
SUMS_FILE = "SHA256SUMS.txt"
LICENSE_FILE = "LICENSE.txt"
IMAGE_SUFFIX = ".dicom"

BREAST_HEADER = (
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
    "breast_birads", "breast_density", "split",
)
FINDING_HEADER = BREAST_HEADER[:-1] + (
    "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split",
)
METADATA_HEADER = (
    "SOP Instance UID", "Series Instance UID", "SOP Instance UID", "Patient's Age",
    "View Position", "Image Laterality", "Photometric Interpretation", "Rows", "Columns",
    "Imager Pixel Spacing", "Pixel Spacing", "Pixel Padding Value",
    "Pixel Padding Range Limit", "Window Center", "Window Width", "Rescale Intercept",
    "Rescale Slope", "Rescale Type", "Window Center & Width Explanation", "Manufacturer",
    "Manufacturer's Model Name",
)

# ``<hex> <path>`` (the release), ``<hex>  <path>`` (sha256sum) and ``<hex> *<path>`` (binary).
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *]?(.+)$")
_DECIMAL = re.compile(r"^[1-9][0-9]*$")
# A box coordinate as the release writes it: a finite decimal, optionally with an exponent.
_COORDINATE = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
BOM = "\ufeff"


@dataclass
class Release:
    """A parsed release: studies in CSV order, checksums, and every problem found."""

    root: Path
    studies: list[StudyRecord] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def images(self) -> list[ImageRecord]:
        return [image for study in self.studies for image in study.images]


_LONE_CR = re.compile(r"\r(?!\n)")


def read_csv_rows(path: Path, header: tuple[str, ...],
                  problems: list[Problem] | None = None) -> list[tuple[int, list[str]]]:
    """Rows of a release CSV as (line number, fields) after checking the exact header.

    A UTF-8 byte order mark is ignored and reported in ``problems`` (warning ``csv-bom``).
    Raises :class:`ReleaseError` when the file is missing, unreadable, not UTF-8, not CSV,
    empty or has another header.
    """
    text = _read_text(path)
    if text.startswith(BOM):
        text = text[len(BOM):]
        if problems is not None:
            problems.append(Problem("warning", "csv-bom", "file starts with a UTF-8 BOM "
                                    "(byte order mark), which the release has not: ignored",
                                    file=path.name, row=1))
    lone_cr = _LONE_CR.search(text)
    if lone_cr is not None:  # csv reads it as a line break: a value could be cut silently
        line = text[:lone_cr.start()].count("\n") + 1
        raise ReleaseError(f"{path.name} line {line}: a carriage return without a line feed "
                           "(a line break, or part of a value?): fix the file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        found = tuple(next(reader))
        if found != header:
            raise ReleaseError(f"{path.name}: unexpected header {','.join(found)}")
        rows, start = [], reader.line_num + 1
        for row in reader:  # a quoted field may span lines: number a row by its first line
            if row:
                rows.append((start, row))
            start = reader.line_num + 1
        return rows
    except StopIteration:
        raise ReleaseError(f"{path.name} is empty") from None
    except csv.Error as exc:
        raise ReleaseError(f"{path.name} line {reader.line_num}: not valid CSV ({exc})") from None


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; ReleaseError naming the file (and line) when it cannot be."""
    if not path.is_file():
        raise ReleaseError(f"{path.name} not found in {path.parent}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ReleaseError(f"{path.name} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} "
                           f"at offset {exc.start}); the release is UTF-8") from None


def _parse_breast_row(line: int, row: list[str]) -> ImageRecord:
    if len(row) != len(BREAST_HEADER):
        raise ValueError(f"{len(row)} fields, expected {len(BREAST_HEADER)}")
    values = dict(zip(BREAST_HEADER, row))
    for key in ("study_id", "series_id", "image_id"):
        if not is_hex_id(values[key]):
            raise ValueError(f"{key} {values[key]!r} is not a 32-digit hex id")
    if values["laterality"] not in LATERALITIES:
        raise ValueError(f"laterality {values['laterality']!r} is not L or R")
    if values["view_position"] not in VIEWS:
        raise ValueError(f"view_position {values['view_position']!r} is not CC or MLO")
    if values["split"] not in SPLITS:
        raise ValueError(f"split {values['split']!r} is not training or test")
    for key in ("height", "width"):
        if not _DECIMAL.match(values[key]):
            raise ValueError(f"{key} {values[key]!r} is not a positive whole number")
    height, width = int(values["height"]), int(values["width"])
    return ImageRecord(
        study_id=values["study_id"],
        series_id=values["series_id"],
        image_id=values["image_id"],
        laterality=values["laterality"],
        view=values["view_position"],
        height=height,
        width=width,
        breast_birads=parse_birads(values["breast_birads"]),
        breast_density=parse_density(values["breast_density"]),
        split=values["split"],
        row=line,
    )


def _parse_finding_row(line: int, row: list[str], image: ImageRecord) -> Finding | None:
    """A Finding for a box row, None for a No Finding row; raises ValueError when bad."""
    if len(row) != len(FINDING_HEADER):
        raise ValueError(f"{len(row)} fields, expected {len(FINDING_HEADER)}")
    values = dict(zip(FINDING_HEADER, row))
    repeated = {
        "series_id": image.series_id,
        "laterality": image.laterality,
        "view_position": image.view,
        "height": str(image.height),
        "width": str(image.width),
        "breast_birads": format_birads(image.breast_birads),
        "breast_density": format_density(image.breast_density),
        "split": image.split,
    }
    for key, expected in repeated.items():
        if values[key] != expected:
            raise ValueError(
                f"{key} {values[key]!r} disagrees with {BREAST_CSV} line {image.row} ({expected!r})"
            )
    labels = parse_categories(values["finding_categories"])
    coords = [values[k] for k in ("xmin", "ymin", "xmax", "ymax")]
    if labels == (NO_FINDING,):
        if values["finding_birads"] or any(coords):
            raise ValueError("a 'No Finding' row carries a BI-RADS or box value")
        return None
    if not all(coords):
        raise ValueError("box row with an empty coordinate")
    for key, text in zip(("xmin", "ymin", "xmax", "ymax"), coords):
        if not _COORDINATE.match(text):
            raise ValueError(f"{key} {text!r} is not a decimal number")
    box = Box.from_text(*coords)
    if not (box.xmin < box.xmax and box.ymin < box.ymax):
        raise ValueError(f"empty box {','.join(coords)}")
    birads = parse_birads(values["finding_birads"]) if values["finding_birads"] else None
    return Finding(categories=labels, birads=birads, box=box, row=line)


def _parse_sums(path: Path, problems: list[Problem]) -> dict[str, str]:
    """SHA256SUMS.txt as relative path -> lowercase hex digest.

    Accepts the release's ``<hex> <path>`` and ``sha256sum``'s ``<hex>  <path>`` and
    ``<hex> *<path>``; a leading ``./`` is dropped. Bad lines are reported and skipped.
    """
    sums: dict[str, str] = {}
    if not path.is_file():
        problems.append(Problem("warning", "no-checksums", f"{SUMS_FILE} not found: "
                                "files cannot be verified", file=SUMS_FILE))
        return sums
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        match = _SUM_LINE.match(line.lstrip(BOM) if number == 1 else line)
        if not match:
            if line.strip():
                problems.append(Problem("warning", "bad-checksum-line",
                                        "line is not '<sha256> <path>'", file=SUMS_FILE,
                                        row=number))
            continue
        relpath = match.group(2)
        sums[relpath[2:] if relpath.startswith("./") else relpath] = match.group(1).lower()
    return sums


def verify_listed_csvs(root: Path, sums: dict[str, str], problems: list[Problem]) -> None:
    """Check each annotation CSV against its SHA256SUMS.txt digest before it is used.

    A CSV whose digest differs cannot be trusted (a deleted box row leaves a valid file):
    :class:`ReleaseError`, nothing is converted. A CSV the file does not list is reported
    (warning ``unverified-csv``) and used.
    """
    if not sums:
        return
    for name in (BREAST_CSV, FINDING_CSV, METADATA_CSV):
        expected = sums.get(name)
        if expected is None:
            problems.append(Problem("warning", "unverified-csv", f"not listed in {SUMS_FILE}: "
                                    "used unverified", file=name))
            continue
        path = root / name
        if not path.is_file():
            continue  # reported by its reader
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ReleaseError(
                f"{name}: SHA-256 {digest}, {SUMS_FILE} says {expected}: the file was changed "
                f"or is incomplete, so none of the release's annotations can be trusted. "
                f"Re-download it, or (if you changed it on purpose) update its line in "
                f"{SUMS_FILE}")


def _check_sums_match(images: dict[str, ImageRecord], sums: dict[str, str],
                      problems: list[Problem]) -> None:
    """An error when SHA256SUMS.txt lists files but none of the images."""
    if not sums or not images:
        return
    if not any(image.relpath in sums for image in images.values()):
        example = next(iter(images.values())).relpath
        problems.append(Problem(
            "error", "checksums-unmatched",
            f"lists {len(sums)} files but none of the {len(images)} images (e.g. {example}): "
            "is it the release's own file, with paths relative to the release folder? "
            "No image can be verified", file=SUMS_FILE))


def _unlisted_images(root: Path, images: dict[str, ImageRecord],
                     problems: list[Problem]) -> None:
    """A warning for every ``.dicom`` file under images/ that no CSV row names."""
    known = {image.relpath for image in images.values()}
    folder = root / "images"
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob(f"*{IMAGE_SUFFIX}")):
        relpath = path.relative_to(root).as_posix()
        if relpath not in known:
            problems.append(Problem("warning", "image-not-in-csv",
                                    f"not listed in {BREAST_CSV}: not converted", file=relpath))


def _parse_metadata(path: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """metadata.csv rows by image id, with the duplicated header renamed as pandas does."""
    if not path.is_file():
        problems.append(Problem("warning", "no-metadata", f"{METADATA_CSV} not found",
                                file=METADATA_CSV))
        return {}
    names = list(METADATA_HEADER)
    names[2] = "SOP Instance UID.1"
    try:
        rows = read_csv_rows(path, METADATA_HEADER, problems)
    except ReleaseError as exc:
        problems.append(Problem("warning", "bad-metadata", str(exc), file=METADATA_CSV))
        return {}
    metadata = {}
    for line, row in rows:
        if len(row) != len(names):
            problems.append(Problem("warning", "bad-metadata-row",
                                    f"{len(row)} fields, expected {len(names)}",
                                    file=METADATA_CSV, row=line))
            continue
        metadata[row[0]] = dict(zip(names, row))
    return metadata


def read_release(root: Path) -> Release:
    """Parse a release folder; raises :class:`ReleaseError` only when it is not one."""
    root = Path(root)
    release = Release(root=root)
    problems = release.problems
    if not root.is_dir():
        raise ReleaseError(f"{root}: no such folder")
    release.checksums = _parse_sums(root / SUMS_FILE, problems)
    verify_listed_csvs(root, release.checksums, problems)
    images = _read_images(root, problems)
    findings, finding_rows = _read_findings(root, images, problems)
    _check_sums_match(images, release.checksums, problems)
    _unlisted_images(root, images, problems)
    metadata = _parse_metadata(root / METADATA_CSV, problems)

    by_study: dict[str, list[ImageRecord]] = defaultdict(list)
    for image_id, image in images.items():
        _note_image(image, findings[image_id], finding_rows[image_id], root, release.checksums,
                    problems)
        by_study[image.study_id].append(replace(
            image,
            findings=tuple(findings[image_id]),
            path=root / image.relpath,
            sha256=release.checksums.get(image.relpath),
            metadata=metadata.get(image_id, {}),
        ))
    for study_id, study_images in by_study.items():
        splits = {image.split for image in study_images}
        if len(splits) > 1:
            problems.append(Problem("error", "mixed-split",
                                    f"study has images in splits {sorted(splits)}",
                                    file=BREAST_CSV, study_id=study_id))
            continue
        _note_study(study_id, study_images, problems)
        release.studies.append(StudyRecord(study_id, splits.pop(), tuple(study_images)))
    return release


def _read_images(root: Path, problems: list[Problem]) -> dict[str, ImageRecord]:
    """The images of breast-level_annotations.csv, in CSV order (bad rows reported)."""
    images: dict[str, ImageRecord] = {}
    for line, row in read_csv_rows(root / BREAST_CSV, BREAST_HEADER, problems):
        try:
            image = _parse_breast_row(line, row)
        except ValueError as exc:
            problems.append(Problem("error", "bad-breast-row", str(exc), file=BREAST_CSV,
                                    row=line))
            continue
        if image.image_id in images:
            problems.append(Problem("error", "duplicate-image",
                                    f"image {image.image_id} listed twice (first at line "
                                    f"{images[image.image_id].row})", file=BREAST_CSV,
                                    row=line, image_id=image.image_id))
            continue
        images[image.image_id] = image
    return images


def _read_findings(
    root: Path, images: dict[str, ImageRecord], problems: list[Problem]
) -> tuple[dict[str, list[Finding]], dict[str, int]]:
    """Box rows per image id, and the number of rows (boxes and No Finding) per image id."""
    findings: dict[str, list[Finding]] = defaultdict(list)
    finding_rows: dict[str, int] = defaultdict(int)
    for line, row in read_csv_rows(root / FINDING_CSV, FINDING_HEADER, problems):
        image_id = row[2] if len(row) > 2 else ""
        image = images.get(image_id)
        if image is None:
            problems.append(Problem("error", "unknown-image",
                                    f"image {image_id!r} is not in {BREAST_CSV}",
                                    file=FINDING_CSV, row=line, image_id=image_id))
            continue
        if row[0] != image.study_id:
            problems.append(Problem("error", "bad-finding-row",
                                    f"study_id {row[0]!r} disagrees with {BREAST_CSV} line "
                                    f"{image.row}", file=FINDING_CSV, row=line,
                                    image_id=image_id))
            continue
        try:
            finding = _parse_finding_row(line, row, image)
        except ValueError as exc:
            problems.append(Problem("error", "bad-finding-row", str(exc), file=FINDING_CSV,
                                    row=line, study_id=image.study_id, image_id=image_id))
            continue
        finding_rows[image_id] += 1
        if finding is not None:
            findings[image_id].append(finding)
            _note_finding(finding, image, problems)
    return findings, finding_rows


def _note_image(image: ImageRecord, findings: list[Finding], rows: int, root: Path,
                checksums: dict[str, str], problems: list[Problem]) -> None:
    """What is odd about one image: its finding rows, its file, its checksum entry."""
    where = {"study_id": image.study_id, "image_id": image.image_id}
    if rows == 0:
        problems.append(Problem("warning", "no-finding-row",
                                f"image has no row in {FINDING_CSV}", file=BREAST_CSV,
                                row=image.row, **where))
    elif findings and rows > len(findings):
        problems.append(Problem("warning", "mixed-finding-rows",
                                f"image has box rows and a 'No Finding' row in "
                                f"{FINDING_CSV}", file=BREAST_CSV, row=image.row, **where))
    if not (root / image.relpath).is_file():
        problems.append(Problem("error", "missing-file", "image file not found",
                                file=image.relpath, row=image.row, **where))
    elif checksums and image.relpath not in checksums:
        problems.append(Problem("warning", "unlisted-file",
                                f"image file not listed in {SUMS_FILE}",
                                file=image.relpath, **where))


def _note_finding(finding: Finding, image: ImageRecord, problems: list[Problem]) -> None:
    """Errata of one box row that the converter survives but reports."""
    where = {"file": FINDING_CSV, "row": finding.row, "study_id": image.study_id,
             "image_id": image.image_id}
    if finding.box.outside(image.width, image.height):
        problems.append(Problem("warning", "box-outside-image",
                                f"box {','.join(finding.box.text)} lies partly outside the "
                                f"{image.width}x{image.height} image: clipped in the SR "
                                "coordinates, original values kept in its tracking identifier",
                                **where))
    if finding.birads is None:
        problems.append(Problem("info", "empty-finding-birads",
                                "box without a finding BI-RADS: no assessment encoded", **where))
    elif finding.birads > image.breast_birads:
        problems.append(Problem("warning", "finding-above-breast-birads",
                                f"finding BI-RADS {finding.birads} above breast BI-RADS "
                                f"{image.breast_birads}: both kept as published", **where))
    if image.breast_birads <= 2:
        problems.append(Problem("info", "box-on-benign-breast",
                                f"box on a BI-RADS {image.breast_birads} breast", **where))


def _note_study(study_id: str, images: list[ImageRecord], problems: list[Problem]) -> None:
    """Errata of one study that the converter survives but reports."""
    views = defaultdict(int)
    for image in images:
        views[(image.laterality, image.view)] += 1
    for (laterality, view), count in sorted(views.items()):
        if count > 1:
            problems.append(Problem("warning", "repeated-view",
                                    f"{count} images of {laterality}-{view}: all converted",
                                    file=BREAST_CSV, study_id=study_id))
    for laterality in LATERALITIES:
        for view in VIEWS:
            if (laterality, view) not in views:
                problems.append(Problem("info", "missing-view",
                                        f"no {laterality}-{view} image", file=BREAST_CSV,
                                        study_id=study_id))
    series = {image.series_id for image in images}
    if len(series) > 1:
        problems.append(Problem("info", "several-series",
                                f"study has {len(series)} series", file=BREAST_CSV,
                                study_id=study_id))
    for laterality in LATERALITIES:
        side = [image for image in images if image.laterality == laterality]
        if len({(image.breast_birads, image.breast_density) for image in side}) > 1:
            problems.append(Problem("warning", "breast-disagrees",
                                    f"{laterality} breast images disagree on BI-RADS/density: "
                                    "each image keeps its own", file=BREAST_CSV,
                                    study_id=study_id))
        suspicious = side and side[0].breast_birads >= 3
        for image in side:
            if suspicious and not image.findings:
                problems.append(Problem("info", "no-box-on-suspicious-breast",
                                        f"no box on this view of a BI-RADS "
                                        f"{image.breast_birads} breast", file=BREAST_CSV,
                                        row=image.row, study_id=study_id,
                                        image_id=image.image_id))
