"""Convert one image: the repair of :mod:`.repair` plus the policy of what it reports.

:func:`convert_image` reads a source file, decides its chest-wall side from the pixels,
repairs its header and streams it into OUT, and says what of the source did not reach the
output and how much that matters: ``info`` for what the standard asks (a series laterality
beside ImageLaterality, a flipped layout said by PatientOrientation), ``warning`` for what
a reader of the release would want to know (a value dropped or replaced, no checksum,
bytes after the pixels, no breast edge found), and a :class:`~converter.errors.RepairError`
(the image's ``error``) for what no repair can supply.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from .manifest import ManifestRow
from .output import FILE_MODE, image_path
from .records import ImageRecord, Problem
from .repair import (
    SourceImage,
    changed_attributes,
    chest_wall_on_left,
    dropped_attributes,
    lenient_reading,
    patient_orientation,
    read_source,
    repair_dataset,
    sample_rows,
    standard_chest_wall_left,
    write_image,
)


def manifest_row(kind: str, image: ImageRecord | None, study_id: str, ds: Dataset, out: Path,
                 dest: Path, sha256: str, source: str = "",
                 source_sha256: str = "") -> ManifestRow:
    """The manifest row of an object written to ``dest`` (MG, SR or SEG)."""
    return ManifestRow(
        kind=kind,
        study_id=study_id,
        series_id=image.series_id if image and kind == "MG" else "",
        image_id=image.image_id if image else "",
        path=dest.relative_to(out).as_posix(),
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        sha256=sha256,
        source=source,
        source_sha256=source_sha256,
    )


def convert_image(image: ImageRecord, out: Path, series_number: int, instance_number: int,
                  problems: list[Problem]) -> tuple[Dataset, ManifestRow]:
    """Repair one image into OUT, its problems appended to ``problems``.

    Returns the repaired header (for the exam's SR and SEG) and its manifest row; raises
    :class:`~converter.errors.RepairError` or OSError when it cannot be converted.
    """
    assert image.path is not None
    with lenient_reading():
        return _convert_image(image, out, series_number, instance_number, problems)


def _convert_image(image: ImageRecord, out: Path, series_number: int, instance_number: int,
                   problems: list[Problem]) -> tuple[Dataset, ManifestRow]:
    assert image.path is not None
    source = read_source(image.path)
    where = {"file": image.relpath, "study_id": image.study_id, "image_id": image.image_id}
    left = _chest_wall_left(image, source, problems, where)
    header = repair_dataset(source.header, image,
                            patient_orientation(image.laterality, image.view, left),
                            series_number, instance_number)
    _report_source(source, problems, where)
    _report_changes(image, source, header, problems, where)
    dest = image_path(out, image)
    written = write_image(image.path, source, header, dest, image.sha256, mode=FILE_MODE)
    if image.sha256 is None:
        problems.append(Problem("warning", "unverified", "no checksum to verify against",
                                **where))
    row = manifest_row("MG", image, image.study_id, header, out, dest, written.sha256,
                       image.relpath, written.source_sha256)
    return header, row


def _chest_wall_left(image: ImageRecord, source: SourceImage, problems: list[Problem],
                     where: dict[str, str]) -> bool:
    """The chest-wall side from the pixels; the standard layout (warned) when unclear."""
    assert image.path is not None
    standard = standard_chest_wall_left(image.laterality)
    left = chest_wall_on_left(sample_rows(image.path, source), source.photometric)
    if left is None:
        problems.append(Problem("warning", "orientation-unclear",
                                "no breast edge found in the pixels: PatientOrientation "
                                "assumes the standard layout", **where))
        return standard
    if left != standard:
        problems.append(Problem("info", "flipped-layout",
                                f"chest wall on the {'left' if left else 'right'} edge for a "
                                f"{image.laterality} breast: PatientOrientation says so", **where))
    return left


def _report_source(source: SourceImage, problems: list[Problem], where: dict[str, str]) -> None:
    """Report what of the source file does not reach the output: dropped elements (once
    each, by name and tag, never by value) and bytes after the Pixel Data."""
    for name, valued in dropped_attributes(source.header):
        problems.append(Problem("warning" if valued else "info", "attribute-dropped",
                                f"{name} dropped: not on the de-identification keep-list",
                                **where))
    if source.trailing_bytes:
        problems.append(Problem("warning", "trailing-bytes",
                                f"{source.trailing_bytes} byte(s) after the Pixel Data "
                                "element: not copied", **where))


def _report_changes(image: ImageRecord, source: SourceImage, header: Dataset,
                    problems: list[Problem], where: dict[str, str]) -> None:
    """Values the repair removed or replaced; a series Laterality equal to the image's own
    is only ``info`` (the standard forbids it beside ImageLaterality)."""
    for keyword, change in changed_attributes(source.header, header):
        same_side = keyword == "Laterality" and source.header.Laterality == image.laterality
        problems.append(Problem("info" if same_side else "warning", "attribute-changed",
                                change + (" (series laterality is not allowed beside "
                                          "ImageLaterality)" if same_side else ""), **where))
