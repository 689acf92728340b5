"""Rebuild the release's annotation CSVs from DICOM objects alone, and check SR/SEG pairs.

Input is pydicom Datasets only (files read with pydicom, or objects fetched from a PACS over
DICOMweb), so the export works on any copy of the converted data:

- MG headers give study/series/image ids (:func:`converter.uids.uid_to_hex`), laterality,
  view, height/width (Rows/Columns) and the split (StudyDescription ``VinDr-Mammo-<split>``).
- Each exam's SR, read back with highdicom, gives breast BI-RADS and density (TID 1501 groups,
  matched to images through their source images) and the finding rows (TID 1410 groups): the
  labels and the exact coordinate text come from the tracking identifier
  (:func:`converter.sr.parse_finding_identifier`), the BI-RADS from the qualitative evaluation.

Rows are dicts keyed by the release's column names, values exactly as the release writes
them.  :func:`compare_with_release` checks them against the source CSVs character for
character; :func:`check_sr_seg` is the SR/SEG consistency check used by the validator.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset

from converter import codes
from converter.masks import box_mask, polyline_to_box, scoord_box
from converter.records import Box, Problem
from converter.release import (
    BREAST_CSV,
    BREAST_HEADER,
    FINDING_CSV,
    FINDING_HEADER,
    ReleaseError,
    format_birads,
    format_categories,
    format_density,
    read_csv_rows,
)
from converter.sr import parse_finding_identifier
from converter.uids import uid_to_hex

Row = dict[str, str]
CodeKey = tuple[str, str]  # (scheme designator, code value)

_BIRADS_BY_CODE = {(c.scheme_designator, c.value): n for n, c in codes.BIRADS_CODES.items()}
_DENSITY_BY_CODE = {(c.scheme_designator, c.value): d for d, c in codes.DENSITY_CODES.items()}
_LATERALITY_BY_CODE = {
    (c.scheme_designator, c.value): lat for lat, c in codes.LATERALITY_CODES.items()
}
_IMAGE_LIBRARY = ("DCM", "111028")


class ExportError(Exception):
    """The DICOM objects do not hold what an exact export needs; the message lists why."""


def _key(code: object) -> CodeKey | None:
    """(scheme, value) of a Code / CodedConcept / code item, None for None."""
    if code is None:
        return None
    return (str(code.scheme_designator), str(code.value))  # type: ignore[attr-defined]


def _code_key(code: object) -> CodeKey:
    key = _key(code)
    assert key is not None
    return key


# --- reading an SR --------------------------------------------------------------------------


@dataclass(frozen=True)
class SrBreast:
    """A TID 1501 breast group as read back."""

    tracking_uid: str
    tracking_identifier: str
    laterality: str | None
    birads: int | None
    density: str | None
    image_uids: tuple[str, ...]
    birads_code: CodeKey | None = None
    density_code: CodeKey | None = None
    laterality_code: CodeKey | None = None


@dataclass(frozen=True)
class SrFinding:
    """A TID 1410 finding group as read back (``labels``/``box`` from the tracking id)."""

    tracking_uid: str
    tracking_identifier: str
    image_uid: str
    labels: tuple[str, ...]
    box: Box
    birads: int | None
    scoord: tuple[float, float, float, float]
    finding_type: CodeKey | None
    finding_category: CodeKey | None
    birads_code: CodeKey | None
    laterality: str | None
    laterality_code: CodeKey | None
    site: CodeKey | None
    geometric_purpose: CodeKey | None


@dataclass
class SrReport:
    """What an exam's SR says, plus anything that could not be read."""

    sop_instance_uid: str
    study_instance_uid: str
    study_description: str
    library: tuple[str, ...]
    breasts: list[SrBreast] = field(default_factory=list)
    findings: list[SrFinding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _with_transfer_syntax(ds: Dataset) -> Dataset:
    """``ds``, or a shallow copy with file meta when it has none (DICOMweb JSON objects).

    JSON metadata has no transfer syntax; highdicom then assumes little endian and logs a
    warning.  The values are already decoded, so explicit VR little endian is stated.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return ds
    result = copy.copy(ds)
    result.file_meta = FileMetaDataset()
    result.file_meta.TransferSyntaxUID = codes.EXPLICIT_VR_LITTLE_ENDIAN
    return result


def _finding_site(group: object) -> tuple[CodeKey | None, CodeKey | None]:
    """(site, laterality) code keys of a group's first finding site."""
    sites = list(getattr(group, "finding_sites", []) or [])
    if not sites:
        return None, None
    return _key(sites[0].value), _key(sites[0].laterality)


def _evaluation(group: object, name: object) -> CodeKey | None:
    wanted = _code_key(name)
    for item in group.get_qualitative_evaluations():  # type: ignore[attr-defined]
        if _key(item.name) == wanted:
            return _key(item.value)
    return None


def _library_uids(ds: Dataset) -> tuple[str, ...]:
    """SOP instance UIDs listed in the SR's image library (TID 1600)."""
    found: list[str] = []

    def walk(items: Iterable[Dataset], inside: bool) -> None:
        for item in items:
            name = item.get("ConceptNameCodeSequence")
            here = inside or bool(
                name and (name[0].CodingSchemeDesignator, name[0].CodeValue) == _IMAGE_LIBRARY
            )
            if here:
                for ref in item.get("ReferencedSOPSequence", []):
                    found.append(str(ref.ReferencedSOPInstanceUID))
            walk(item.get("ContentSequence", []), here)

    walk(ds.get("ContentSequence", []), False)
    return tuple(found)


def read_sr(ds: Dataset) -> SrReport:
    """Read an exam's SR back with highdicom.

    Parameters
    ----------
    ds: pydicom.Dataset
        A Comprehensive SR written by :func:`converter.sr.build_sr`.

    Returns
    -------
    SrReport
        ``problems`` lists groups that could not be interpreted (they are left out).
    """
    if ds.get("SOPClassUID") != codes.COMPREHENSIVE_SR:
        raise ExportError(f"{ds.get('SOPInstanceUID')}: not a Comprehensive SR")
    sr = hd.sr.ComprehensiveSR.from_dataset(_with_transfer_syntax(ds), copy=True)
    report = SrReport(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        study_description=str(ds.get("StudyDescription", "") or ""),
        library=_library_uids(ds),
    )
    content = sr.content
    for group in content.get_image_measurement_groups():
        site, lat_code = _finding_site(group)
        birads_code = _evaluation(group, codes.ASSESSMENT_CATEGORY)
        density_code = _evaluation(group, codes.BREAST_COMPOSITION)
        report.breasts.append(
            SrBreast(
                tracking_uid=str(group.tracking_uid),
                tracking_identifier=str(group.tracking_identifier),
                laterality=_LATERALITY_BY_CODE.get(lat_code) if lat_code else None,
                birads=_BIRADS_BY_CODE.get(birads_code) if birads_code else None,
                density=_DENSITY_BY_CODE.get(density_code) if density_code else None,
                image_uids=tuple(
                    str(s.referenced_sop_instance_uid) for s in group.source_images
                ),
                birads_code=birads_code,
                density_code=density_code,
                laterality_code=lat_code,
            )
        )
    for group in content.get_planar_roi_measurement_groups():
        text = str(group.tracking_identifier)
        try:
            parsed = parse_finding_identifier(text)
            roi = group.roi
            if roi is None:
                raise ValueError("no SCOORD image region")
            image_uid = str(roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            scoord = polyline_to_box(roi.value)
        except (ValueError, AttributeError, IndexError) as exc:
            report.problems.append(f"SR {report.sop_instance_uid}: finding group {text!r}: {exc}")
            continue
        site, lat_code = _finding_site(group)
        birads_code = _evaluation(group, codes.ASSESSMENT_CATEGORY)
        purpose = _evaluation(group, codes.GEOMETRIC_PURPOSE)
        report.findings.append(
            SrFinding(
                tracking_uid=str(group.tracking_uid),
                tracking_identifier=text,
                image_uid=image_uid,
                labels=parsed.labels,
                box=parsed.box,
                birads=_BIRADS_BY_CODE.get(birads_code) if birads_code else None,
                scoord=scoord,
                finding_type=_key(group.finding_type),
                finding_category=_key(group.finding_category),
                birads_code=birads_code,
                laterality=_LATERALITY_BY_CODE.get(lat_code) if lat_code else None,
                laterality_code=lat_code,
                site=site,
                geometric_purpose=purpose,
            )
        )
    return report


# --- rows ------------------------------------------------------------------------------------


def _view(ds: Dataset) -> str:
    view = str(ds.get("ViewPosition", "") or "")
    if view:
        return view
    for item in ds.get("ViewCodeSequence", []):
        for name, code in codes.VIEW_CODES.items():
            if (item.CodingSchemeDesignator, item.CodeValue) == _code_key(code):
                return name
    return ""


def _split(description: str) -> str:
    prefix = codes.STUDY_DESCRIPTION_PREFIX
    return description[len(prefix) :] if description.startswith(prefix) else ""


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
    reports: dict[str, SrReport] = {}
    errors: list[str] = []
    for ds in srs:
        report = read_sr(ds)
        if report.study_instance_uid in reports:
            errors.append(f"two SRs for study {report.study_instance_uid}")
        reports[report.study_instance_uid] = report
        errors.extend(report.problems)

    findings: dict[str, list[SrFinding]] = {}
    for report in reports.values():
        for item in report.findings:
            findings.setdefault(item.image_uid, []).append(item)

    breast_rows: list[Row] = []
    boxes: list[Row] = []
    no_finding: list[Row] = []
    known: set[str] = set()
    for ds in images:
        uid = str(ds.SOPInstanceUID)
        known.add(uid)
        study_uid = str(ds.StudyInstanceUID)
        report = reports.get(study_uid)
        if report is None:
            errors.append(f"image {uid}: no SR for study {study_uid}")
            continue
        laterality = str(ds.get("ImageLaterality", "") or "")
        breast = _breast_of(report, uid, laterality)
        if breast is None or breast.birads is None or breast.density is None:
            errors.append(f"image {uid}: no breast BI-RADS/density in SR {report.sop_instance_uid}")
            continue
        try:
            base = {
                "study_id": uid_to_hex(study_uid),
                "series_id": uid_to_hex(str(ds.SeriesInstanceUID)),
                "image_id": uid_to_hex(uid),
            }
        except ValueError as exc:
            errors.append(f"image {uid}: {exc}")
            continue
        base.update(
            laterality=laterality,
            view_position=_view(ds),
            height=str(int(ds.Rows)),
            width=str(int(ds.Columns)),
            breast_birads=format_birads(breast.birads),
            breast_density=format_density(breast.density),
        )
        split = _split(str(ds.get("StudyDescription", "") or "")) or _split(
            report.study_description
        )
        breast_rows.append({**base, "split": split})
        image_findings = findings.get(uid, [])
        for item in image_findings:
            boxes.append(
                {
                    **base,
                    "finding_categories": format_categories(item.labels),
                    "finding_birads": format_birads(item.birads),
                    "xmin": item.box.text[0],
                    "ymin": item.box.text[1],
                    "xmax": item.box.text[2],
                    "ymax": item.box.text[3],
                    "split": split,
                }
            )
        if not image_findings:
            no_finding.append(
                {
                    **base,
                    "finding_categories": format_categories((codes.NO_FINDING,)),
                    "finding_birads": "",
                    "xmin": "",
                    "ymin": "",
                    "xmax": "",
                    "ymax": "",
                    "split": split,
                }
            )
    studies = {str(ds.StudyInstanceUID) for ds in images}
    for report in reports.values():
        if not strict or report.study_instance_uid not in studies:
            continue
        for image_uid in sorted({f.image_uid for f in report.findings} - known):
            errors.append(f"SR {report.sop_instance_uid} has a finding on image {image_uid}, "
                          "which is not among the images")
    if errors:
        raise ExportError("; ".join(errors))
    return breast_rows, boxes + no_finding


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


def write_csvs(dest: Path, breast_rows: Iterable[Row], finding_rows: Iterable[Row]) -> tuple[Path, Path]:
    """Write ``breast-level_annotations.csv`` and ``finding_annotations.csv`` into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    breast_path, finding_path = dest / BREAST_CSV, dest / FINDING_CSV
    breast_path.write_bytes(csv_text(BREAST_HEADER, breast_rows).encode("utf-8"))
    finding_path.write_bytes(csv_text(FINDING_HEADER, finding_rows).encode("utf-8"))
    return breast_path, finding_path


def read_headers(paths: Iterable[Path]) -> list[Dataset]:
    """MG headers without Pixel Data, in path order."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(paths)]


def export_folder(out_dir: Path, dest: Path | None = None) -> tuple[list[Row], list[Row]]:
    """Rows from a conversion output folder (``images/**/*.dcm`` and ``sr/*.dcm``).

    When ``dest`` is given the two CSVs are written there as well.
    """
    out_dir = Path(out_dir)
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


# --- SR / SEG consistency (used by converter.validate) -----------------------------------------


@functools.cache
def _cid(cid: int) -> frozenset[CodeKey]:
    return frozenset(codes.cid_values(cid))


def _in_cid(key: CodeKey | None, cid: int) -> bool:
    return key is not None and key in _cid(cid)


def _check_finding(item: SrFinding, image: Dataset | None) -> list[str]:
    where = f"SR finding {item.tracking_identifier!r}"
    out = []
    if image is None:
        return [f"{where}: references image {item.image_uid}, not among the exam's images"]
    unknown = [label for label in item.labels if label not in codes.FINDING_CODES]
    if unknown:
        out.append(f"{where}: unknown label(s) {unknown}")
    else:
        first = item.labels[0]
        if item.finding_type != _code_key(codes.FINDING_CODES[first]):
            out.append(f"{where}: finding type {item.finding_type} is not the code of {first!r}")
        if not _in_cid(item.finding_type, codes.FINDING_CIDS[first]):
            out.append(f"{where}: finding type {item.finding_type} not in CID "
                       f"{codes.FINDING_CIDS[first]}")
    if item.finding_category != _code_key(codes.FINDING_CATEGORY) or not _in_cid(
        item.finding_category, 7150
    ):
        out.append(f"{where}: finding category {item.finding_category} is not "
                   f"{_code_key(codes.FINDING_CATEGORY)} (CID 7150)")
    if item.birads_code is not None and not _in_cid(item.birads_code, 6027):
        out.append(f"{where}: BI-RADS {item.birads_code} not in CID 6027")
    if item.geometric_purpose != _code_key(codes.BOUNDED_BY) or not _in_cid(
        item.geometric_purpose, 219
    ):
        out.append(f"{where}: geometric purpose {item.geometric_purpose} is not 'Bounded by'")
    if item.site != _code_key(codes.BREAST):
        out.append(f"{where}: finding site {item.site} is not Breast")
    if not _in_cid(item.laterality_code, 244) or item.laterality != image.get("ImageLaterality"):
        out.append(f"{where}: laterality {item.laterality_code} disagrees with the image "
                   f"({image.get('ImageLaterality')})")
    rows, columns = int(image.Rows), int(image.Columns)
    expected = scoord_box(item.box, rows, columns)
    if item.scoord != expected:
        out.append(f"{where}: SCOORD {item.scoord} is not the clipped box {expected}")
    return out


def _check_breast(item: SrBreast, images: dict[str, Dataset]) -> list[str]:
    where = f"SR breast group {item.tracking_identifier!r}"
    out = []
    if not _in_cid(item.birads_code, 6027):
        out.append(f"{where}: BI-RADS {item.birads_code} not in CID 6027")
    if not _in_cid(item.density_code, 6000):
        out.append(f"{where}: density {item.density_code} not in CID 6000")
    if not _in_cid(item.laterality_code, 244):
        out.append(f"{where}: laterality {item.laterality_code} not in CID 244")
    for uid in item.image_uids:
        image = images.get(uid)
        if image is None:
            out.append(f"{where}: source image {uid} not among the exam's images")
        elif image.get("ImageLaterality") != item.laterality:
            out.append(f"{where}: source image {uid} has laterality "
                       f"{image.get('ImageLaterality')}, group {item.laterality}")
    return out


def _read_seg(seg: Dataset | Path | str) -> hd.seg.Segmentation:
    if isinstance(seg, Dataset):
        return hd.seg.Segmentation.from_dataset(_with_transfer_syntax(seg), copy=True)
    return hd.seg.segread(seg)


def _check_seg(
    seg: hd.seg.Segmentation, by_uid: dict[str, SrFinding], images: dict[str, Dataset]
) -> tuple[list[str], set[str]]:
    """Problems of one SEG and the tracking UIDs it covers."""
    where = f"SEG {seg.SOPInstanceUID}"
    out: list[str] = []
    covered: set[str] = set()
    sources = [str(item.ReferencedSOPInstanceUID) for item in seg.get("SourceImageSequence", [])]
    if len(sources) != 1 or sources[0] not in images:
        return [f"{where}: source image(s) {sources} not one of the exam's images"], covered
    image = images[sources[0]]
    if seg.file_meta.TransferSyntaxUID not in (
        codes.EXPLICIT_VR_LITTLE_ENDIAN, codes.IMPLICIT_VR_LITTLE_ENDIAN
    ):
        out.append(f"{where}: transfer syntax {seg.file_meta.TransferSyntaxUID} is not native")
    if seg.get("SegmentationType") != "BINARY":
        out.append(f"{where}: segmentation type {seg.get('SegmentationType')} is not BINARY")
    if "PatientOrientation" not in seg:
        out.append(f"{where}: PatientOrientation missing")
    if seg.StudyInstanceUID != image.StudyInstanceUID:
        out.append(f"{where}: study differs from its source image")
    rows, columns = int(image.Rows), int(image.Columns)
    numbers = list(seg.segment_numbers)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[sources[0]], segment_numbers=numbers
    )
    for position, number in enumerate(numbers):
        desc = seg.get_segment_description(number)
        label = f"{where} segment {number}"
        uid = str(desc.tracking_uid) if desc.tracking_uid else ""
        finding = by_uid.get(uid)
        if finding is None:
            out.append(f"{label}: tracking UID {uid!r} matches no SR finding")
            continue
        covered.add(uid)
        if finding.image_uid != sources[0]:
            out.append(f"{label}: SR finding is on image {finding.image_uid}, SEG on {sources[0]}")
        if desc.tracking_id != finding.tracking_identifier:
            out.append(f"{label}: tracking ID {desc.tracking_id!r} differs from the SR's")
        ptype = _key(desc.segmented_property_type)
        if ptype != finding.finding_type:
            out.append(f"{label}: property type {ptype} differs from SR finding type")
        if finding.labels and finding.labels[0] in codes.FINDING_CIDS and not _in_cid(
            ptype, codes.FINDING_CIDS[finding.labels[0]]
        ):
            out.append(f"{label}: property type {ptype} not in CID "
                       f"{codes.FINDING_CIDS[finding.labels[0]]}")
        category = _key(desc.segmented_property_category)
        if category != _code_key(codes.FINDING_CATEGORY) or not _in_cid(category, 7150):
            out.append(f"{label}: property category {category} is not "
                       "Morphologically Abnormal Structure (CID 7150)")
        mask = pixels[0, :, :, position].astype(bool)
        expected = box_mask(finding.scoord, rows, columns)
        if mask.shape != expected.shape:
            out.append(f"{label}: mask shape {mask.shape}, image {expected.shape}")
        elif not np.array_equal(mask, expected):
            diff = int(np.count_nonzero(mask != expected))
            out.append(f"{label}: mask differs from the SR box in {diff} pixel(s)")
    return out, covered


def check_sr_seg(
    sr: Dataset | Path | str,
    segs: Sequence[Dataset | Path | str],
    images: Sequence[Dataset],
) -> list[str]:
    """Check one exam's SR and SEGs against each other, the images and the context groups.

    Parameters
    ----------
    sr: pydicom.Dataset | Path
        The exam's SR (read back with highdicom).
    segs: Sequence[pydicom.Dataset | Path]
        The exam's SEGs (read back with highdicom, ``segread`` for paths).
    images: Sequence[pydicom.Dataset]
        The exam's MG headers.

    Returns
    -------
    list[str]
        One message per problem; empty when consistent.
    """
    by_image = {str(ds.SOPInstanceUID): ds for ds in images}
    out: list[str] = []
    try:
        sr_ds = sr if isinstance(sr, Dataset) else pydicom.dcmread(sr)
        report = read_sr(sr_ds)
    except Exception as exc:  # noqa: BLE001 - any read failure is a finding
        return [f"SR cannot be read back: {type(exc).__name__}: {exc}"]
    out += report.problems
    missing = sorted(set(by_image) - set(report.library))
    if missing:
        out.append(f"SR image library lacks {missing}")
    covered_images: Counter[str] = Counter()
    for breast in report.breasts:
        out += _check_breast(breast, by_image)
        covered_images.update(breast.image_uids)
    for uid in by_image:
        if covered_images[uid] != 1:
            out.append(f"image {uid} is in {covered_images[uid]} breast groups (expected 1)")
    by_uid: dict[str, SrFinding] = {}
    for item in report.findings:
        out += _check_finding(item, by_image.get(item.image_uid))
        if item.tracking_uid in by_uid:
            out.append(f"tracking UID {item.tracking_uid} used by two SR findings")
        by_uid[item.tracking_uid] = item
    covered: set[str] = set()
    for seg in segs:
        try:
            segmentation = _read_seg(seg)
        except Exception as exc:  # noqa: BLE001
            out.append(f"SEG {seg if not isinstance(seg, Dataset) else seg.get('SOPInstanceUID')}"
                       f" cannot be read back: {type(exc).__name__}: {exc}")
            continue
        problems, uids = _check_seg(segmentation, by_uid, by_image)
        out += problems
        duplicate = covered & uids
        if duplicate:
            out.append(f"tracking UID(s) {sorted(duplicate)} segmented twice")
        covered |= uids
    for uid in sorted(set(by_uid) - covered):
        out.append(f"SR finding {by_uid[uid].tracking_identifier!r} has no SEG segment")
    return out




__all__ = [
    "ExportError",
    "SrBreast",
    "SrFinding",
    "SrReport",
    "check_sr_seg",
    "compare_with_release",
    "csv_text",
    "export_folder",
    "read_headers",
    "read_sr",
    "rows_from_datasets",
    "write_csvs",
]
