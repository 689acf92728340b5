"""Rebuild the release's annotation CSVs from DICOM objects alone, and compare them.

Input is pydicom Datasets only (files read with pydicom, or objects fetched from a PACS over
DICOMweb), so the export works on any copy of the converted data:

- MG headers give study/series/image ids (:func:`converter.naming.uid_to_hex`), laterality,
  view, height/width (Rows/Columns) and the split (:func:`converter.naming.split_of`).
- Each exam's SR, read back by :func:`converter.annotations.sr.read_sr`, gives breast
  BI-RADS and density and the finding rows: the labels and the exact coordinate text come
  from the tracking identifier, the BI-RADS from the qualitative evaluation.

Rows are dicts keyed by the release's column names, values exactly as the release writes
them.  :func:`compare_with_release` checks them against the source CSVs character for
character.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from . import codes
from .annotations.common import code_key
from .annotations.sr import SrBreast, SrFinding, SrReport, read_sr
from .errors import ExportError, ReleaseError
from .fileio import atomic_write
from .naming import format_birads, format_categories, format_density, split_of, uid_to_hex
from .records import Problem
from .release import BREAST_CSV, BREAST_HEADER, FINDING_CSV, FINDING_HEADER, read_csv_rows

Row = dict[str, str]


# --- rows ------------------------------------------------------------------------------------


def _view(ds: Dataset) -> str:
    view = str(ds.get("ViewPosition", "") or "")
    if view:
        return view
    for item in ds.get("ViewCodeSequence", []):
        for name, code in codes.VIEW_CODES.items():
            if (item.CodingSchemeDesignator, item.CodeValue) == code_key(code):
                return name
    return ""


def rows_from_datasets(
    images: Iterable[Dataset], srs: Iterable[Dataset], strict: bool = True
) -> tuple[list[Row], list[Row]]:
    """Breast-level and finding rows of ``images`` from their headers and their exams' SRs.

    Parameters
    ----------
    images: Iterable[pydicom.Dataset]
        MG headers (Pixel Data not needed).
    srs: Iterable[pydicom.Dataset]
        The SRs of the exams of ``images`` (SRs of other exams are ignored).
    strict: bool
        When True (default), an SR finding on an image of an exported exam that is not
        among ``images`` is an error (a missing image would silently drop its rows); set
        False to export only some images of an exam.

    Returns
    -------
    tuple[list[dict[str, str]], list[dict[str, str]]]
        Rows in the release's column order and value formats.  Breast rows follow the order
        of ``images``; finding rows list box rows first, then the No Finding rows.

    Raises
    ------
    ExportError
        When an image has no SR, no breast assessment, or a finding cannot be read exactly.
    """
    images = list(images)
    reports, errors = _read_reports(srs)
    findings: dict[str, list[SrFinding]] = {}
    for report in reports.values():
        for item in report.findings:
            findings.setdefault(item.image_uid, []).append(item)

    breast_rows: list[Row] = []
    boxes: list[Row] = []
    no_finding: list[Row] = []
    for ds in images:
        try:
            base = _image_columns(ds, reports)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        breast_rows.append({**base[0], "split": base[1]})
        image_findings = findings.get(str(ds.SOPInstanceUID), [])
        boxes += [_finding_row(base[0], base[1], item) for item in image_findings]
        if not image_findings:
            no_finding.append(_finding_row(base[0], base[1], None))
    if strict:
        errors += _orphan_findings(images, reports)
    if errors:
        raise ExportError("; ".join(errors), errors)
    return breast_rows, boxes + no_finding


def _read_reports(srs: Iterable[Dataset]) -> tuple[dict[str, SrReport], list[str]]:
    """The SRs read back, by Study Instance UID, and what could not be read."""
    reports: dict[str, SrReport] = {}
    errors: list[str] = []
    for ds in srs:
        report = read_sr(ds)
        if report.study_instance_uid in reports:
            errors.append(f"two SRs for study {report.study_instance_uid}")
        reports[report.study_instance_uid] = report
        errors.extend(report.problems)
    return reports, errors


def _image_columns(ds: Dataset, reports: dict[str, SrReport]) -> tuple[Row, str]:
    """The breast-level columns of one image (without split), and its split.

    Raises ValueError naming the image when its SR or breast assessment is missing.
    """
    uid = str(ds.SOPInstanceUID)
    study_uid = str(ds.StudyInstanceUID)
    report = reports.get(study_uid)
    if report is None:
        raise ValueError(f"image {uid}: no SR for study {study_uid}")
    laterality = str(ds.get("ImageLaterality", "") or "")
    breast = _breast_of(report, uid, laterality)
    if breast is None or breast.birads is None or breast.density is None:
        raise ValueError(f"image {uid}: no breast BI-RADS/density in SR "
                         f"{report.sop_instance_uid}")
    try:
        ids = [uid_to_hex(study_uid), uid_to_hex(str(ds.SeriesInstanceUID)), uid_to_hex(uid)]
    except ValueError as exc:
        raise ValueError(f"image {uid}: {exc}") from None
    base = dict(zip(("study_id", "series_id", "image_id"), ids))
    base.update(
        laterality=laterality,
        view_position=_view(ds),
        height=str(int(ds.Rows)),
        width=str(int(ds.Columns)),
        breast_birads=format_birads(breast.birads),
        breast_density=format_density(breast.density),
    )
    split = split_of(str(ds.get("StudyDescription", "") or "")) or split_of(
        report.study_description
    )
    return base, split


def _finding_row(base: Row, split: str, item: SrFinding | None) -> Row:
    """A finding_annotations.csv row: a box row, or the No Finding row when ``item`` is None."""
    if item is None:
        return {**base, "finding_categories": format_categories((codes.NO_FINDING,)),
                "finding_birads": "", "xmin": "", "ymin": "", "xmax": "", "ymax": "",
                "split": split}
    xmin, ymin, xmax, ymax = item.box.text
    return {**base, "finding_categories": format_categories(item.labels),
            "finding_birads": format_birads(item.birads),
            "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax, "split": split}


def _orphan_findings(images: list[Dataset], reports: dict[str, SrReport]) -> list[str]:
    """SR findings of exported exams on images that are not among ``images``."""
    known = {str(ds.SOPInstanceUID) for ds in images}
    studies = {str(ds.StudyInstanceUID) for ds in images}
    errors = []
    for report in reports.values():
        if report.study_instance_uid not in studies:
            continue
        for image_uid in sorted({f.image_uid for f in report.findings} - known):
            errors.append(f"SR {report.sop_instance_uid} has a finding on image {image_uid}, "
                          "which is not among the images")
    return errors


def _breast_of(report: SrReport, image_uid: str, laterality: str) -> SrBreast | None:
    """The breast group listing ``image_uid``, else the only group of its side."""
    for breast in report.breasts:
        if image_uid in breast.image_uids:
            return breast
    side = [b for b in report.breasts if b.laterality == laterality]
    return side[0] if len(side) == 1 else None


def csv_text(header: Sequence[str], rows: Iterable[Row]) -> str:
    """CSV text as the release writes it: LF line ends, minimal quoting, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[name] for name in header])
    return buffer.getvalue()


def write_csvs(dest: Path, breast_rows: Iterable[Row],
               finding_rows: Iterable[Row]) -> tuple[Path, Path]:
    """Write ``breast-level_annotations.csv`` and ``finding_annotations.csv`` into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    breast_path, finding_path = dest / BREAST_CSV, dest / FINDING_CSV
    atomic_write(breast_path, csv_text(BREAST_HEADER, breast_rows))
    atomic_write(finding_path, csv_text(FINDING_HEADER, finding_rows))
    return breast_path, finding_path


def read_headers(paths: Iterable[Path]) -> list[Dataset]:
    """MG headers without Pixel Data, in path order."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(paths)]


def export_folder(out_dir: Path, dest: Path | None = None) -> tuple[list[Row], list[Row]]:
    """Rows from a conversion output folder (``images/**/*.dcm`` and ``sr/*.dcm``).

    When ``dest`` is given the two CSVs are written there as well. Raises
    :class:`~converter.errors.ExportError` when ``out_dir`` is not a converted output folder.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} does not exist (or is not a folder)")
    if not (out_dir / "images").is_dir():
        raise ExportError(f"{out_dir}: no images/ folder (is it a folder written by convert?)")
    images = read_headers((out_dir / "images").glob("**/*.dcm"))
    srs = [pydicom.dcmread(path) for path in sorted((out_dir / "sr").glob("*.dcm"))]
    breast_rows, finding_rows = rows_from_datasets(images, srs)
    if dest is not None:
        write_csvs(dest, breast_rows, finding_rows)
    return breast_rows, finding_rows


# --- comparison with the source release ----------------------------------------------------


def _compare(
    name: str,
    header: Sequence[str],
    source: list[tuple[int, list[str]]],
    exported: list[Row],
    image_ids: set[str],
) -> list[Problem]:
    index = header.index("image_id")
    wanted = [(line, tuple(row)) for line, row in source if row[index] in image_ids]
    ours = Counter(tuple(row[c] for c in header) for row in exported)
    problems = []
    for line, row in wanted:
        if ours[row] > 0:
            ours[row] -= 1
        else:
            problems.append(Problem(
                "error", "export-row-missing",
                f"source row not reproduced by the export: {','.join(row)}",
                file=name, row=line, study_id=row[0], image_id=row[index],
            ))
    for row, count in sorted(ours.items()):
        for _ in range(count):
            problems.append(Problem(
                "error", "export-row-extra",
                f"exported row not in the source: {','.join(row)}",
                file=name, study_id=row[0], image_id=row[index],
            ))
    return problems


def compare_with_release(
    release_dir: Path,
    breast_rows: list[Row],
    finding_rows: list[Row],
    image_ids: Iterable[str] | None = None,
) -> list[Problem]:
    """Differences between exported rows and the release's CSV rows of the same images.

    Rows are compared as multisets of exact text (row order is free).  ``image_ids``
    defaults to the images of ``breast_rows``; ids absent from the release are reported.
    """
    release_dir = Path(release_dir)
    ids = set(image_ids) if image_ids is not None else {r["image_id"] for r in breast_rows}
    try:
        breast_source = read_csv_rows(release_dir / BREAST_CSV, BREAST_HEADER)
        finding_source = read_csv_rows(release_dir / FINDING_CSV, FINDING_HEADER)
    except ReleaseError as exc:
        raise ExportError(str(exc)) from exc
    problems = []
    present = {row[2] for _, row in breast_source}
    for image_id in sorted(ids - present):
        problems.append(Problem("error", "export-unknown-image",
                                f"image {image_id} is not in {BREAST_CSV}",
                                file=BREAST_CSV, image_id=image_id))
    exported_breast = [r for r in breast_rows if r["image_id"] in ids]
    exported_finding = [r for r in finding_rows if r["image_id"] in ids]
    problems += _compare(BREAST_CSV, BREAST_HEADER, breast_source, exported_breast, ids)
    problems += _compare(FINDING_CSV, FINDING_HEADER, finding_source, exported_finding, ids)
    return problems


__all__ = [
    "compare_with_release",
    "csv_text",
    "export_folder",
    "read_headers",
    "rows_from_datasets",
    "write_csvs",
]
