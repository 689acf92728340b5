"""One Comprehensive SR (TID 1500 Measurement Report) per exam.

Content tree, built with highdicom from small value builders up:

- Image library: every repaired image of the exam.
- One TID 1501 group per breast: finding site Breast + laterality, qualitative evaluations
  "Assessment Category" = BI-RADS (CID 6027) and "Breast composition" = density (CID 6000),
  source images = that breast's images.  Images of one side that disagree (never in the
  release) get one group each, so nothing is lost.
- One TID 1410 group per finding box row, in image order then CSV order: SCOORD POLYLINE
  (closed 5-point box, clipped to the image, see :mod:`converter.masks`), geometric purpose
  "Bounded by", finding type = code of the first label, finding category "Morphologically
  Abnormal Structure", finding site Breast + laterality, and the finding BI-RADS as a
  qualitative evaluation when the CSV gives one.

Tracking identifier of a finding group (the text is lossless; the UID links SR and SEG)::

    VinDr finding <labels> box <xmin> <ymin> <xmax> <ymax>

``<labels>`` is the CSV's ``finding_categories`` Python-list literal
(:func:`converter.release.format_categories`, order kept, e.g. ``['Mass', 'Focal Asymmetry']``); the four coordinates are the CSV's text
verbatim (no spaces inside a value), e.g.
``VinDr finding ['Mass'] box 1234.5678710938 412.3456789012345 1500.25 -3.5``.
:func:`parse_finding_identifier` inverts it.  The UID is :func:`finding_tracking_uid`.
Breast groups are identified ``VinDr breast L`` (``VinDr breast L #2`` for a further group).

Every date and time the SR carries is fixed (:data:`converter.codes.ANNOTATION_DATE`), all
UIDs are derived from the VinDr ids, so the same input gives the same bytes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset

from converter import __version__, codes
from converter.masks import box_to_polyline, scoord_box
from converter.records import Box, Finding, ImageRecord, StudyRecord
from converter.release import format_categories
from converter.uids import derived_uid, hex_to_uid

# --- identifiers --------------------------------------------------------------------------

_FINDING_ID = re.compile(
    rf"^{re.escape(codes.FINDING_TRACKING_PREFIX)} (\[.*\]) box (\S+) (\S+) (\S+) (\S+)$"
)


@dataclass(frozen=True)
class FindingIdentifier:
    """Parsed tracking identifier of a finding group: labels in order, exact box text."""

    labels: tuple[str, ...]
    box: Box


def format_finding_identifier(labels: Sequence[str], box: Box) -> str:
    """Tracking identifier text of a finding (see module docstring)."""
    if not labels:
        raise ValueError("a finding needs at least one label")
    for value in box.text:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError(f"coordinate text with whitespace cannot be encoded: {value!r}")
    return f"{codes.FINDING_TRACKING_PREFIX} {format_categories(tuple(labels))} box {' '.join(box.text)}"


def parse_finding_identifier(text: str) -> FindingIdentifier:
    """Inverse of :func:`format_finding_identifier`; raises ValueError if malformed."""
    match = _FINDING_ID.match(text)
    if not match:
        raise ValueError(f"not a VinDr finding tracking identifier: {text!r}")
    try:
        labels = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"bad label list in tracking identifier: {text!r}") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        raise ValueError(f"bad label list in tracking identifier: {text!r}")
    return FindingIdentifier(tuple(labels), Box.from_text(*match.group(2, 3, 4, 5)))


def finding_tracking_uid(image: ImageRecord, index: int) -> str:
    """Tracking UID of the ``index``-th (0-based, CSV order) finding of ``image``.

    Shared by the SR group and the SEG segment of the same box row.
    """
    return derived_uid("finding", image.study_id, image.image_id, str(index))


def breast_tracking(study_id: str, laterality: str, number: int) -> tuple[str, str]:
    """(text, UID) of the ``number``-th (1-based) breast group of one side."""
    text = f"{codes.BREAST_TRACKING_PREFIX} {laterality}"
    if number > 1:
        text += f" #{number}"
    return text, derived_uid("breast", study_id, laterality, str(number))


def sr_uids(study_id: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the exam's SR."""
    return derived_uid("sr-series", study_id), derived_uid("sr", study_id)


# --- value builders -------------------------------------------------------------------------


def birads_evaluation(birads: int) -> hd.sr.QualitativeEvaluation:
    """Assessment Category = BI-RADS ``birads`` (CID 6027)."""
    return hd.sr.QualitativeEvaluation(codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[birads])


def density_evaluation(density: str) -> hd.sr.QualitativeEvaluation:
    """Breast composition = density ``A``..``D`` (CID 6000)."""
    return hd.sr.QualitativeEvaluation(codes.BREAST_COMPOSITION, codes.DENSITY_CODES[density])


def breast_site(laterality: str) -> hd.sr.FindingSite:
    """Finding site Breast with laterality (CID 244)."""
    return hd.sr.FindingSite(codes.BREAST, laterality=codes.LATERALITY_CODES[laterality])


def box_region(box: Box, image: Dataset) -> hd.sr.ImageRegion:
    """Closed 5-point SCOORD POLYLINE of ``box`` clipped to ``image``."""
    values = scoord_box(box, int(image.Rows), int(image.Columns))
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=box_to_polyline(values),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
        ),
    )


# --- templates ---------------------------------------------------------------------------------


def finding_group(
    image: ImageRecord, index: int, finding: Finding, dataset: Dataset
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 group of one finding box row."""
    first = finding.categories[0]
    if first not in codes.FINDING_CODES:
        raise ValueError(f"unknown finding label {first!r} in image {image.image_id}")
    evaluations = [] if finding.birads is None else [birads_evaluation(finding.birads)]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=finding_tracking_uid(image, index),
            identifier=format_finding_identifier(finding.categories, finding.box),
        ),
        referenced_region=box_region(finding.box, dataset),
        finding_type=codes.FINDING_CODES[first],
        finding_category=codes.FINDING_CATEGORY,
        finding_sites=[breast_site(image.laterality)],
        qualitative_evaluations=evaluations or None,
        geometric_purpose=codes.BOUNDED_BY,
    )


def breast_groups(
    study: StudyRecord, datasets: dict[str, Dataset]
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """TID 1501 groups with breast-level BI-RADS and density, one per breast (R, then L)."""
    keys: dict[tuple[str, int, str], list[ImageRecord]] = {}
    for image in study.images:
        key = (image.laterality, image.breast_birads, image.breast_density)
        keys.setdefault(key, []).append(image)
    order = sorted(keys, key=lambda k: ({"R": 0, "L": 1}.get(k[0], 2), k[0], k[1], k[2]))
    groups = []
    numbers: dict[str, int] = {}
    for laterality, birads, density in order:
        numbers[laterality] = numbers.get(laterality, 0) + 1
        text, uid = breast_tracking(study.study_id, laterality, numbers[laterality])
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=text),
                finding_sites=[breast_site(laterality)],
                qualitative_evaluations=[birads_evaluation(birads), density_evaluation(density)],
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup.from_source_image(
                        datasets[image.image_id]
                    )
                    for image in keys[(laterality, birads, density)]
                ],
            )
        )
    return groups


def measurement_report(study: StudyRecord, images: Sequence[Dataset]) -> hd.sr.MeasurementReport:
    """TID 1500 content of one exam."""
    datasets = _by_image_id(study, images)
    groups: list = breast_groups(study, datasets)
    for image in study.images:
        for index, finding in enumerate(image.findings):
            groups.append(finding_group(image, index, finding, datasets[image.image_id]))
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
        referenced_images=list(images),
    )


# --- IOD ----------------------------------------------------------------------------------------


def build_sr(study: StudyRecord, images: Sequence[Dataset]) -> hd.sr.ComprehensiveSR:
    """The exam's Comprehensive SR.

    Parameters
    ----------
    study: converter.records.StudyRecord
        The exam with its breast-level assessments and findings.
    images: Sequence[pydicom.Dataset]
        The repaired MG headers of all of ``study.images`` (any order; Pixel Data not needed).

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        Deterministic: same input, same bytes.
    """
    series_uid, sop_uid = sr_uids(study.study_id)
    ordered = list(_by_image_id(study, images).values())
    sr = hd.sr.ComprehensiveSR(
        evidence=ordered,
        content=measurement_report(study, ordered),
        series_instance_uid=series_uid,
        series_number=codes.SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=codes.SR_INSTANCE_NUMBER,
        manufacturer=codes.MANUFACTURER,
        is_complete=True,
        is_final=True,
        series_description=codes.SR_SERIES_DESCRIPTION,
        content_date=codes.ANNOTATION_DATE,
        content_time=codes.ANNOTATION_TIME,
        series_date=codes.ANNOTATION_DATE,
        series_time=codes.ANNOTATION_TIME,
        manufacturer_model_name=codes.MANUFACTURER,
        software_versions=__version__,
    )
    fix_identity(sr)
    return sr


def fix_identity(ds: Dataset) -> None:
    """Overwrite what highdicom stamps with the current time, and set our file meta identity."""
    ds.InstanceCreationDate = codes.ANNOTATION_DATE
    ds.InstanceCreationTime = codes.ANNOTATION_TIME
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = codes.ANNOTATION_DATETIME
    ds.file_meta.ImplementationClassUID = codes.IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = codes.IMPLEMENTATION_VERSION_NAME


def _by_image_id(study: StudyRecord, images: Sequence[Dataset]) -> dict[str, Dataset]:
    """Headers keyed by VinDr image id in ``study.images`` order; raises if one is missing."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in images}
    result = {}
    for image in study.images:
        uid = hex_to_uid(image.image_id)
        if uid not in by_uid:
            raise ValueError(f"no repaired header for image {image.image_id} of {study.study_id}")
        result[image.image_id] = by_uid[uid]
    if len(result) != len(by_uid):
        extra = set(by_uid) - {hex_to_uid(i) for i in result}
        raise ValueError(f"headers not in study {study.study_id}: {sorted(extra)}")
    return result


__all__ = [
    "FindingIdentifier",
    "birads_evaluation",
    "box_region",
    "breast_groups",
    "breast_site",
    "breast_tracking",
    "build_sr",
    "density_evaluation",
    "finding_group",
    "finding_tracking_uid",
    "fix_identity",
    "format_finding_identifier",
    "measurement_report",
    "parse_finding_identifier",
    "sr_uids",
]
