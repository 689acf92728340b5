"""One Comprehensive SR (TID 1500 Measurement Report) per exam.

Content tree, built with highdicom from small value builders up:

- Image library: every repaired image of the exam.
- "Imaging Measurements": one TID 1410 group per finding box row, in image order then CSV
  order: SCOORD POLYLINE
  (closed 5-point box, clipped to the image, see :mod:`.masks`), geometric purpose
  "Bounded by", finding type = code of the first label, finding category "Morphologically
  Abnormal Structure", finding site Breast + laterality, and the finding BI-RADS as a
  qualitative evaluation when the CSV gives one. Absent for an exam without boxes.
- "Qualitative Evaluations" (TID 1500 row 12): per breast, "Assessment Category" =
  BI-RADS (CID 6027) and "Breast composition" = density (CID 6000), each with finding site
  Breast + laterality and the breast's images (INFERRED FROM, "Source"). Images of one side
  that disagree (never in the release) get items of their own, so nothing is lost. They
  are not measurement groups: a viewer (OHIF) draws every measurement group as a region
  and fails on a group without one.

Tracking identifier of a finding group (the text is lossless; the UID links SR and SEG)::

    VinDr finding <labels> [BI-RADS <n>] box <xmin> <ymin> <xmax> <ymax>

``<labels>`` is the CSV's ``finding_categories`` Python-list literal
(:func:`converter.naming.format_categories`, order kept, e.g. ``['Mass', 'Focal Asymmetry']``);
the finding BI-RADS follows when the CSV gives one (for a viewer's label; the coded value is
the qualitative evaluation, and the two must agree); the four coordinates are the CSV's text
verbatim (no spaces inside a value), e.g.
``VinDr finding ['Mass'] BI-RADS 4 box 1234.5678710938 412.3456789012345 1500.25 -3.5``.
:func:`converter.naming.parse_finding_identifier` inverts it; the UID is
:func:`converter.naming.finding_tracking_uid`.

Every date and time the SR carries is fixed (:data:`converter.codes.ANNOTATION_DATE`), all
UIDs are derived from the VinDr ids, so the same input gives the same bytes.

:func:`build_sr` writes the SR; :func:`read_sr` reads it back (from a file or from objects
fetched over DICOMweb) into :class:`SrReport`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import highdicom as hd
from pydicom.dataset import Dataset

from .. import __version__, codes
from ..errors import ExportError
from ..naming import (
    derived_uid,
    finding_tracking_uid,
    format_finding_identifier,
    hex_to_uid,
    parse_finding_identifier,
    sr_uids,
)
from ..records import Box, Finding, ImageRecord, StudyRecord
from .common import CodeKey, code_key, fix_identity, key_of, with_transfer_syntax
from .masks import box_to_polyline, polyline_to_box, scoord_box

_BIRADS_BY_CODE = {(c.scheme_designator, c.value): n for n, c in codes.BIRADS_CODES.items()}
_DENSITY_BY_CODE = {(c.scheme_designator, c.value): d for d, c in codes.DENSITY_CODES.items()}
_LATERALITY_BY_CODE = {
    (c.scheme_designator, c.value): lat for lat, c in codes.LATERALITY_CODES.items()
}
_IMAGE_LIBRARY = ("DCM", "111028")
_IMAGING_MEASUREMENTS = code_key(codes.IMAGING_MEASUREMENTS)
_ASSESSMENT = code_key(codes.ASSESSMENT_CATEGORY)
_COMPOSITION = code_key(codes.BREAST_COMPOSITION)
_FINDING_SITE = ("SCT", "363698007")
_LATERALITY = ("SCT", "272741003")

# --- value builders -------------------------------------------------------------------------


def birads_evaluation(birads: int) -> hd.sr.QualitativeEvaluation:
    """Assessment Category = BI-RADS ``birads`` (CID 6027)."""
    return hd.sr.QualitativeEvaluation(codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[birads])


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
            uid=finding_tracking_uid(image.study_id, image.image_id, index),
            identifier=format_finding_identifier(finding.categories, finding.box, finding.birads),
        ),
        referenced_region=box_region(finding.box, dataset),
        finding_type=codes.FINDING_CODES[first],
        finding_category=codes.FINDING_CATEGORY,
        finding_sites=[breast_site(image.laterality)],
        qualitative_evaluations=evaluations or None,
        geometric_purpose=codes.BOUNDED_BY,
    )


def breast_assessments(
    study: StudyRecord, datasets: dict[str, Dataset]
) -> list[hd.sr.CodeContentItem]:
    """Breast-level BI-RADS and density, two CODE items per breast (R, then L).

    Each item ("Assessment Category" = BI-RADS, CID 6027; "Breast composition" = density,
    CID 6000) carries the finding site Breast with its laterality and, as INFERRED FROM
    "Source" images, the images of that breast. Images of one side that disagree (never in
    the release) get items of their own, so nothing is lost.
    """
    keys: dict[tuple[str, int, str], list[ImageRecord]] = {}
    for image in study.images:
        key = (image.laterality, image.breast_birads, image.breast_density)
        keys.setdefault(key, []).append(image)
    order = sorted(keys, key=lambda k: ({"R": 0, "L": 1}.get(k[0], 2), k[0], k[1], k[2]))
    items = []
    for laterality, birads, density in order:
        sources = [datasets[image.image_id] for image in keys[(laterality, birads, density)]]
        for name, value in ((codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[birads]),
                            (codes.BREAST_COMPOSITION, codes.DENSITY_CODES[density])):
            item = hd.sr.CodeContentItem(name=name, value=value,
                                         relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
            item.ContentSequence = hd.sr.ContentSequence(
                [breast_site(laterality), *(_source_image(ds) for ds in sources)])
            items.append(item)
    return items


def _source_image(image: Dataset) -> hd.sr.ImageContentItem:
    """An image an assessment was inferred from (concept name "Source", as in TID 1501)."""
    return hd.sr.ImageContentItem(
        name=codes.SOURCE,
        referenced_sop_class_uid=image.SOPClassUID,
        referenced_sop_instance_uid=image.SOPInstanceUID,
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )


def measurement_report(study: StudyRecord, images: Sequence[Dataset]) -> hd.sr.MeasurementReport:
    """TID 1500 content of one exam.

    The finding boxes are the measurement groups of "Imaging Measurements"; the breast-level
    assessments are in the report's "Qualitative Evaluations" container (TID 1500 row 12),
    not in measurement groups: viewers (OHIF) expect every measurement group to be a region.
    An exam without boxes has no "Imaging Measurements" container (TID 1500 asks for one of
    the two); highdicom 0.28 insists on one measurement group, so it builds the report
    with a placeholder group and that container is then removed.
    """
    datasets = _by_image_id(study, images)
    groups: list = [
        finding_group(image, index, finding, datasets[image.image_id])
        for image in study.images
        for index, finding in enumerate(image.findings)
    ]
    placeholder = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid("placeholder"),
                                                     identifier="placeholder"))]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups or placeholder,
        referenced_images=list(images),
    )
    root = report[0]
    if not groups:
        root.ContentSequence = hd.sr.ContentSequence(
            [item for item in root.ContentSequence if _concept(item) != _IMAGING_MEASUREMENTS],
            is_root=False)
    evaluations = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    evaluations.ContentSequence = hd.sr.ContentSequence(breast_assessments(study, datasets))
    root.ContentSequence.append(evaluations)
    return report


def _concept(item: Dataset) -> CodeKey | None:
    """(scheme, value) of a content item's concept name, None without one."""
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return None
    return (str(names[0].CodingSchemeDesignator), str(names[0].CodeValue))


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


# --- reading back ----------------------------------------------------------------------



# --- reading an SR --------------------------------------------------------------------------


@dataclass(frozen=True)
class SrBreast:
    """One breast's assessments as read back (its BI-RADS and density items, paired)."""

    laterality: str | None
    birads: int | None
    density: str | None
    image_uids: tuple[str, ...]
    birads_code: CodeKey | None = None
    density_code: CodeKey | None = None
    laterality_code: CodeKey | None = None

    @property
    def label(self) -> str:
        """How messages name it: ``breast R (2 images)``."""
        return f"breast {self.laterality or '?'} ({len(self.image_uids)} images)"


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


def _finding_site(group: object) -> tuple[CodeKey | None, CodeKey | None]:
    """(site, laterality) code keys of a group's first finding site."""
    sites = list(getattr(group, "finding_sites", []) or [])
    if not sites:
        return None, None
    return key_of(sites[0].value), key_of(sites[0].laterality)


def _evaluation(group: object, name: object) -> CodeKey | None:
    wanted = code_key(name)
    for item in group.get_qualitative_evaluations():  # type: ignore[attr-defined]
        if key_of(item.name) == wanted:
            return key_of(item.value)
    return None


def _library_uids(ds: Dataset) -> tuple[str, ...]:
    """SOP instance UIDs listed in the SR's image library (TID 1600)."""
    found: list[str] = []

    def walk(items: Iterable[Dataset], inside: bool) -> None:
        for item in items:
            here = inside or _concept(item) == _IMAGE_LIBRARY
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
        A Comprehensive SR written by :func:`build_sr`.

    Returns
    -------
    SrReport
        ``problems`` lists groups that could not be interpreted (they are left out).
    """
    if ds.get("SOPClassUID") != codes.COMPREHENSIVE_SR:
        raise ExportError(f"{ds.get('SOPInstanceUID')}: not a Comprehensive SR")
    sr = hd.sr.ComprehensiveSR.from_dataset(with_transfer_syntax(ds), copy=True)
    report = SrReport(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        study_description=str(ds.get("StudyDescription", "") or ""),
        library=_library_uids(ds),
    )
    content = sr.content
    report.breasts, problems = _read_breasts(ds)
    report.problems += [f"SR {report.sop_instance_uid}: {text}" for text in problems]
    for group in content.get_planar_roi_measurement_groups():
        try:
            report.findings.append(_read_finding(group))
        except (ValueError, AttributeError, IndexError) as exc:
            report.problems.append(f"SR {report.sop_instance_uid}: finding group "
                                   f"{str(group.tracking_identifier)!r}: {exc}")
    return report


def _read_breasts(ds: Dataset) -> tuple[list[SrBreast], list[str]]:
    """The breast assessments of the "Qualitative Evaluations" container, paired per breast."""
    pending: dict[tuple[CodeKey | None, tuple[str, ...]], dict[str, CodeKey | None]] = {}
    problems: list[str] = []
    for container in ds.get("ContentSequence", []):
        if _concept(container) != code_key(codes.QUALITATIVE_EVALUATIONS):
            continue
        for item in container.get("ContentSequence", []):
            name = _concept(item)
            kind = {_ASSESSMENT: "birads", _COMPOSITION: "density"}.get(name)  # type: ignore[arg-type]
            if kind is None or not item.get("ConceptCodeSequence"):
                problems.append(f"qualitative evaluation {name} is not a breast assessment")
                continue
            children = list(item.get("ContentSequence", []))
            lat_code = next((_laterality_of(c) for c in children
                             if _concept(c) == _FINDING_SITE), None)
            images = tuple(str(c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                           for c in children if c.get("ValueType") == "IMAGE")
            codes_of = pending.setdefault((lat_code, images), {})
            if kind in codes_of:
                problems.append(f"two {kind} items for breast {lat_code} images {images}")
            value = item.ConceptCodeSequence[0]
            codes_of[kind] = (str(value.CodingSchemeDesignator), str(value.CodeValue))
    breasts = []
    for (lat_code, images), found in pending.items():
        birads_code, density_code = found.get("birads"), found.get("density")
        breasts.append(SrBreast(
            laterality=_LATERALITY_BY_CODE.get(lat_code) if lat_code else None,
            birads=_BIRADS_BY_CODE.get(birads_code) if birads_code else None,
            density=_DENSITY_BY_CODE.get(density_code) if density_code else None,
            image_uids=images,
            birads_code=birads_code,
            density_code=density_code,
            laterality_code=lat_code,
        ))
    return breasts, problems


def _laterality_of(site: Dataset) -> CodeKey | None:
    """The Laterality modifier of a Finding Site item."""
    for child in site.get("ContentSequence", []):
        if _concept(child) == _LATERALITY and child.get("ConceptCodeSequence"):
            value = child.ConceptCodeSequence[0]
            return (str(value.CodingSchemeDesignator), str(value.CodeValue))
    return None


def _read_finding(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> SrFinding:
    """A TID 1410 finding group as read back; raises ValueError when it is not one of ours."""
    text = str(group.tracking_identifier)
    parsed = parse_finding_identifier(text)
    roi = group.roi
    if roi is None:
        raise ValueError("no SCOORD image region")
    image_uid = str(roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    site, lat_code = _finding_site(group)
    birads_code = _evaluation(group, codes.ASSESSMENT_CATEGORY)
    birads = _BIRADS_BY_CODE.get(birads_code) if birads_code else None
    if parsed.birads != birads:
        raise ValueError(f"BI-RADS {parsed.birads} in the tracking identifier, {birads} coded")
    return SrFinding(
        tracking_uid=str(group.tracking_uid),
        tracking_identifier=text,
        image_uid=image_uid,
        labels=parsed.labels,
        box=parsed.box,
        birads=birads,
        scoord=polyline_to_box(roi.value),
        finding_type=key_of(group.finding_type),
        finding_category=key_of(group.finding_category),
        birads_code=birads_code,
        laterality=_LATERALITY_BY_CODE.get(lat_code) if lat_code else None,
        laterality_code=lat_code,
        site=site,
        geometric_purpose=_evaluation(group, codes.GEOMETRIC_PURPOSE),
    )


__all__ = [
    "SrBreast",
    "SrFinding",
    "SrReport",
    "birads_evaluation",
    "box_region",
    "breast_assessments",
    "breast_site",
    "build_sr",
    "finding_group",
    "measurement_report",
    "read_sr",
]
