"""One BINARY Segmentation per image with finding boxes: one segment per box row.

- Segment ``i`` (1-based) is the ``i``-th box row of the image in CSV order; its mask follows
  :func:`converter.annotations.masks.box_mask` (pixel-centre rule, at least one pixel).
- Segmented property category "Morphologically Abnormal Structure", type = code of the
  row's first label, algorithm type MANUAL (radiologists' boxes).
- Tracking UID and Tracking ID are those of the matching SR group
  (:func:`converter.naming.finding_tracking_uid`,
  :func:`converter.naming.format_finding_identifier`),
  so the SEG alone also keeps the labels and the exact box text.
- Segment Label (LO, 64 characters) is the labels joined by ", ", shortened when too long
  (display only: the Tracking ID is the lossless copy).
- highdicom 0.28.2 traps with a 2D MG source are avoided: the SEG is made from a metadata
  copy of the MG without Pixel Spacing and Frame of Reference UID, and PatientOrientation is
  copied from the MG.  Native transfer syntax; fixed dates; UIDs derived from the image id.

:func:`build_seg` writes a SEG; :func:`read_seg` reads one back (file or DICOMweb object).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from .. import __version__, codes
from ..naming import derived_uid, finding_tracking_uid, format_finding_identifier
from ..records import ImageRecord
from .common import fix_identity, with_transfer_syntax
from .masks import box_mask

SEGMENT_LABEL_MAX = 64  # LO

NOMINAL_THICKNESS = 1  # mm, see add_plane_geometry
# Attributes removed from the metadata copy handed to highdicom (traps 1 and 2).
_STRIPPED = ("PixelData", "PixelSpacing", "FrameOfReferenceUID", "PositionReferenceIndicator")


def seg_uids(image: ImageRecord) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the image's SEG, in a series of its own.

    One series per SEG: viewers (OHIF) show one segmentation per series, so SEGs sharing
    a series hid each other.
    """
    return derived_uid("seg-series", image.image_id), derived_uid("seg", image.image_id)


def seg_instance_number(mg: Dataset) -> int:
    """The MG's place in the exam: ``100 * (SeriesNumber - 1) + InstanceNumber``.

    Equal to the MG's InstanceNumber in a one-series exam, unique in the 28 exams with 2-4
    series (fewer than 100 images per series). The SEG's SeriesNumber is
    :data:`converter.codes.SEG_SERIES_NUMBER` plus this number.
    """
    series = int(mg.get("SeriesNumber") or 1)
    instance = int(mg.get("InstanceNumber") or 1)
    return 100 * max(series - 1, 0) + instance


def add_plane_geometry(seg: Dataset, mg: Dataset) -> None:
    """Pixel Measures and Plane Orientation in the shared functional groups.

    The MG has no Frame of Reference, so highdicom writes neither; viewers need both to lay
    the mask on the image (OHIF reads ``PixelMeasures.SpacingBetweenSlices`` and the plane
    orientation, and failed without them), and highdicom's own reader needs SliceThickness
    beside PixelSpacing. PixelSpacing is the MG's (its PixelSpacing, else its
    ImagerPixelSpacing); SliceThickness and SpacingBetweenSlices are a nominal 1 mm and the
    orientation the pixel grid's own axes: one 2D frame, no patient coordinates.
    Merged into highdicom's shared item, which may hold a SegmentIdentificationSequence.
    """
    spacing = mg.get("PixelSpacing") or mg.get("ImagerPixelSpacing")
    shared = (seg.SharedFunctionalGroupsSequence[0]
              if seg.get("SharedFunctionalGroupsSequence") else Dataset())
    measures = Dataset()
    measures.PixelSpacing = list(spacing)
    measures.SliceThickness = NOMINAL_THICKNESS
    measures.SpacingBetweenSlices = NOMINAL_THICKNESS
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    seg.SharedFunctionalGroupsSequence = DicomSequence([shared])


def segment_label(labels: Sequence[str]) -> str:
    """Labels joined by ", ", fitted into 64 characters (LO)."""
    for separator in (", ", ","):
        text = separator.join(labels)
        if len(text) <= SEGMENT_LABEL_MAX:
            return text
    return text[: SEGMENT_LABEL_MAX - 3] + "..."


def source_metadata(mg: Dataset) -> Dataset:
    """A copy of the MG header that highdicom turns into a valid, readable SEG."""
    copy = Dataset()
    for element in mg:
        if element.keyword not in _STRIPPED:
            copy.add(element)
    if hasattr(mg, "file_meta"):
        copy.file_meta = mg.file_meta
    return copy


def segment_description(image: ImageRecord, index: int) -> hd.seg.SegmentDescription:
    """Description of segment ``index + 1`` (the ``index``-th box row of ``image``)."""
    finding = image.findings[index]
    return hd.seg.SegmentDescription(
        segment_number=index + 1,
        segment_label=segment_label(finding.categories),
        segmented_property_category=codes.FINDING_CATEGORY,
        segmented_property_type=codes.FINDING_CODES[finding.categories[0]],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=finding_tracking_uid(image.study_id, image.image_id, index),
        tracking_id=format_finding_identifier(finding.categories, finding.box, finding.birads),
    )


def say_which_breast(seg: Dataset, laterality: str) -> None:
    """Mark ``seg`` as one breast: BodyPartExamined, and each segment's anatomic region
    (Breast, CID 4, modified by Left or Right, CID 2; the codes of CID 244).

    Not General Series Laterality: PixelMed's validator asks for it (Type 2C, a paired body
    part without Image or Frame Laterality), but dciodvfy reports it as an error ("present when
    condition unsatisfied") on a Segmentation, and Frame Laterality (Frame Anatomy) is not in
    the Segmentation IOD; the segment-level region is in the IOD and satisfies dciodvfy.
    """
    seg.BodyPartExamined = "BREAST"
    for item in seg.SegmentSequence:
        region = _code_dataset(codes.BREAST)
        region.AnatomicRegionModifierSequence = DicomSequence(
            [_code_dataset(codes.LATERALITY_CODES[laterality])])
        item.AnatomicRegionSequence = DicomSequence([region])


def _code_dataset(code: codes.Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        code.value, code.scheme_designator, code.meaning)
    return item


def segment_masks(image: ImageRecord, rows: int, columns: int) -> np.ndarray:
    """Boolean array (1, rows, columns, segments), one mask per box row."""
    masks = [box_mask(finding.box, rows, columns) for finding in image.findings]
    return np.stack(masks, axis=-1)[np.newaxis]


def build_seg(image: ImageRecord, mg: Dataset) -> hd.seg.Segmentation | None:
    """The image's BINARY Segmentation, or None when it has no box.

    Parameters
    ----------
    image: converter.records.ImageRecord
        The image record with its findings.
    mg: pydicom.Dataset
        The repaired MG header (Pixel Data not needed).

    Returns
    -------
    highdicom.seg.Segmentation | None
        Deterministic: same input, same bytes.
    """
    if not image.findings:
        return None
    rows, columns = int(mg.Rows), int(mg.Columns)
    series_uid, sop_uid = seg_uids(image)
    seg = hd.seg.Segmentation(
        source_images=[source_metadata(mg)],
        pixel_array=segment_masks(image, rows, columns),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            segment_description(image, index) for index in range(len(image.findings))
        ],
        series_instance_uid=series_uid,
        series_number=codes.SEG_SERIES_NUMBER + seg_instance_number(mg),
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        manufacturer_model_name=codes.MANUFACTURER,
        software_versions=__version__,
        device_serial_number=codes.DEVICE_SERIAL_NUMBER,
        content_label=codes.SEG_CONTENT_LABEL,
        content_description=codes.SEG_CONTENT_DESCRIPTION,
        transfer_syntax_uid=codes.EXPLICIT_VR_LITTLE_ENDIAN,
        omit_empty_frames=True,
        series_description=f"{image.laterality}-{image.view} {codes.SEG_SERIES_DESCRIPTION}",
        content_date=codes.ANNOTATION_DATE,
        content_time=codes.ANNOTATION_TIME,
        series_date=codes.ANNOTATION_DATE,
        series_time=codes.ANNOTATION_TIME,
    )
    if "PatientOrientation" in mg:
        seg.PatientOrientation = mg.PatientOrientation  # trap 3
    add_plane_geometry(seg, mg)
    say_which_breast(seg, image.laterality)
    dimension_uid = derived_uid("seg-dimensions", image.image_id)
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dimension_uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dimension_uid
    fix_identity(seg)
    return seg


def read_seg(seg: Dataset | Path | str) -> hd.seg.Segmentation:
    """A SEG read back with highdicom, from a file or a data set (DICOMweb objects included)."""
    if isinstance(seg, Dataset):
        return hd.seg.Segmentation.from_dataset(with_transfer_syntax(seg), copy=True)
    return hd.seg.segread(seg)


__all__ = [
    "add_plane_geometry",
    "build_seg",
    "read_seg",
    "seg_instance_number",
    "seg_uids",
    "segment_description",
    "segment_label",
    "segment_masks",
    "source_metadata",
]
