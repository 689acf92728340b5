"""A model's predictions as DICOM SR: the TID 1500 report we write, and every AI SR form we read.

Writing (:func:`build_model_sr`): one Comprehensive SR per exam and model version, built
with highdicom like the ground-truth SR (:mod:`.sr`):

- observer context: a device (TID 1004) named after the model, its UID derived from the
  name and version;
- "Imaging Measurements": one TID 1410 group per predicted box: closed 5-point SCOORD
  POLYLINE on its MG image, geometric purpose "Bounded by", finding category
  "Morphologically Abnormal Structure", finding type = the label's code when the model gives
  one, finding site Breast + laterality, TID 4019 Algorithm Identification (name, version)
  and the score as NUM "Probability of cancer" (DCM 111047) in UCUM "1";
- "Qualitative Evaluations" (TID 1500 row 12): per breast, NUM "Probability of cancer" (the
  recall score) and, when the model gives them, CODE "Assessment Category" (BI-RADS, CID
  6027) and "Breast composition" (density, CID 6000), each with the finding site and the
  breast's images as "Source", as in the ground-truth SR.

Reading (:func:`read_model_sr`) walks the content tree with pydicom, so it reads our form
and forms made elsewhere alike:

- TID 1500 in Enhanced, Comprehensive and Comprehensive 3D SR: every SCOORD region of a
  measurement group is a box (several groups may share one tracking UID, as
  orthanc-mammography writes them), its score the group's NUM "Probability of cancer" or
  "Certainty of Finding" (``%`` divided by 100);
- Mammography CAD SR (TID 4000): every "Single Image Finding" with an "Image Region" is a
  box, its score its "Certainty of Finding" or "Probability of cancer".

The model's name is the TID 4019 "Algorithm Name" found in the tree, else the device
observer's name (TID 1004), else the SR's Manufacturer Model Name, else the first tracking
identifier's text; its version is the TID 4019 "Algorithm Version", else the device
observer's model name (where we write the version, so that an SR with breast results only
still names it), else Software Versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from .. import __version__, codes
from ..naming import model_sr_uids, model_tracking_uid, uid_to_hex
from .common import fix_identity
from .masks import box_to_polyline
from .sr import _source_image, breast_site, birads_evaluation

BoxValues = tuple[float, float, float, float]

DEVICE = hd.sr.CodedConcept("121007", "DCM", "Device")
MEASUREMENT_GROUP = ("DCM", "125007")
SINGLE_IMAGE_FINDING = ("DCM", "111059")
FINDING = ("DCM", "121071")
TRACKING_IDENTIFIER = ("DCM", "112039")
DEVICE_OBSERVER_NAME = ("DCM", "121013")
DEVICE_OBSERVER_MODEL = ("DCM", "121015")
QUALITATIVE_EVALUATIONS = ("UMLS", "C0034375")
ASSESSMENT = ("DCM", "111005")
COMPOSITION = ("SCT", "129715009")
FINDING_SITE = ("SCT", "363698007")
LATERALITY = ("SCT", "272741003")
SCORES = {("DCM", "111047"), ("DCM", "111012")}
ALGORITHM_NAME = ("DCM", "111001")
ALGORITHM_VERSION = ("DCM", "111003")
SR_CLASSES = {codes.COMPREHENSIVE_SR: "Comprehensive SR", codes.COMPREHENSIVE_3D_SR:
              "Comprehensive 3D SR", codes.ENHANCED_SR: "Enhanced SR",
              codes.MAMMOGRAPHY_CAD_SR: "Mammography CAD SR"}


@dataclass(frozen=True)
class PredictedBox:
    """One box of a model on one image (pixel coordinates, score in [0, 1])."""

    image_id: str
    box: BoxValues
    score: float
    label: str | None = None


@dataclass(frozen=True)
class PredictedBreast:
    """One breast's score and, when given, the model's BI-RADS and density."""

    laterality: str
    score: float
    birads: int | None = None
    density: str | None = None


# --- writing ----------------------------------------------------------------------------------


def _device(name: str, version: str) -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model_sr_uids(name, version, "device")[0], name=name, model_name=version)))


def _probability(score: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=codes.PROBABILITY_OF_CANCER, value=float(score),
                             unit=codes.NO_UNITS)


def box_group(name: str, version: str, study_id: str, index: int, box: PredictedBox,
              image: Dataset) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 group of one predicted box (``index``: its place among the image's boxes)."""
    label = f" {box.label}" if box.label else ""
    values = tuple(float(np.float32(v)) for v in box.box)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=model_tracking_uid(name, version, study_id, box.image_id, index),
            identifier=f"{name} {version} box {index + 1}{label} score {box.score:g}"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=box_to_polyline(values),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID)),
        finding_type=codes.FINDING_CODES[box.label] if box.label else None,
        finding_category=codes.FINDING_CATEGORY,
        finding_sites=[breast_site(str(image.ImageLaterality))],
        algorithm_id=hd.sr.AlgorithmIdentification(name=name, version=version),
        measurements=[_probability(box.score)],
        geometric_purpose=codes.BOUNDED_BY,
    )


def breast_items(breast: PredictedBreast, images: Sequence[Dataset]) -> list[Dataset]:
    """NUM score, and CODE BI-RADS / density when given, of one breast."""
    sources = [ds for ds in images if ds.ImageLaterality == breast.laterality]
    score = hd.sr.NumContentItem(name=codes.PROBABILITY_OF_CANCER, value=float(breast.score),
                                 unit=codes.NO_UNITS,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    items: list[Dataset] = [score]
    if breast.birads is not None:
        items.append(hd.sr.CodeContentItem(
            name=codes.ASSESSMENT_CATEGORY, value=codes.BIRADS_CODES[breast.birads],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    if breast.density is not None:
        items.append(hd.sr.CodeContentItem(
            name=codes.BREAST_COMPOSITION, value=codes.DENSITY_CODES[breast.density],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    for item in items:
        item.ContentSequence = hd.sr.ContentSequence(
            [breast_site(breast.laterality), *(_source_image(ds) for ds in sources)])
    return items


def build_model_sr(
    name: str,
    version: str,
    study_id: str,
    images: Sequence[Dataset],
    boxes: Iterable[PredictedBox],
    breasts: Iterable[PredictedBreast] = (),
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR of model ``name`` ``version`` for one exam.

    Parameters
    ----------
    images: Sequence[pydicom.Dataset]
        The repaired MG headers of the exam (every box must be on one of them).
    boxes, breasts
        The model's output for the exam, already checked (inside the image, scores in [0, 1]).

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        Deterministic: UIDs from name, version and exam, fixed dates.
    """
    by_image = {uid_to_hex(str(ds.SOPInstanceUID)): ds for ds in images}
    ordered = sorted(images, key=lambda ds: str(ds.SOPInstanceUID))
    counters: dict[str, int] = {}
    groups = []
    for box in boxes:
        index = counters.get(box.image_id, 0)
        counters[box.image_id] = index + 1
        groups.append(box_group(name, version, study_id, index, box, by_image[box.image_id]))
    placeholder = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=model_tracking_uid(name, version, study_id, "placeholder", 0),
            identifier="placeholder"))]
    report = hd.sr.MeasurementReport(
        observation_context=_device(name, version),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups or placeholder,
        referenced_images=ordered,
    )
    root = report[0]
    if not groups:
        root.ContentSequence = hd.sr.ContentSequence(
            [item for item in root.ContentSequence if _concept(item) != ("DCM", "126010")],
            is_root=False)
    items = [item for breast in sorted(breasts, key=lambda b: b.laterality != "R")
             for item in breast_items(breast, ordered)]
    if items:
        container = hd.sr.ContainerContentItem(
            name=codes.QUALITATIVE_EVALUATIONS,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        container.ContentSequence = hd.sr.ContentSequence(items)
        root.ContentSequence.append(container)
    series_uid, sop_uid = model_sr_uids(name, version, study_id)
    sr = hd.sr.ComprehensiveSR(
        evidence=ordered,
        content=report,
        series_instance_uid=series_uid,
        series_number=codes.MODEL_SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        is_complete=True,
        is_final=True,
        series_description=f"AI {name} {version}"[:64],
        content_date=codes.ANNOTATION_DATE,
        content_time=codes.ANNOTATION_TIME,
        series_date=codes.ANNOTATION_DATE,
        series_time=codes.ANNOTATION_TIME,
        manufacturer_model_name=name[:64],
        software_versions=__version__,
    )
    fix_identity(sr)
    return sr


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadBox:
    """A box read from an AI SR (``image_uid``: the SOP Instance UID it references)."""

    image_uid: str
    box: BoxValues
    score: float | None
    label: str | None


@dataclass(frozen=True)
class ReadBreast:
    laterality: str | None
    score: float | None
    birads: int | None
    density: str | None


@dataclass
class ModelReport:
    """What an AI SR says: which model, its boxes and breast results, what could not be read."""

    sop_instance_uid: str
    study_instance_uid: str
    form: str  # "TID 1500 in Comprehensive SR", "Mammography CAD SR (TID 4000)"...
    name: str
    version: str
    boxes: list[ReadBox] = field(default_factory=list)
    breasts: list[ReadBreast] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _concept(item: Dataset) -> tuple[str, str] | None:
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return None
    return (str(names[0].CodingSchemeDesignator), str(names[0].CodeValue))


def _code(item: Dataset) -> tuple[str, str] | None:
    values = item.get("ConceptCodeSequence")
    if not values:
        return None
    return (str(values[0].CodingSchemeDesignator), str(values[0].CodeValue))


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence", []))


_LABEL_BY_CODE: dict[tuple[str, str], str] = {}
for _label, _c in codes.FINDING_CODES.items():
    _LABEL_BY_CODE.setdefault((_c.scheme_designator, _c.value), _label)
_BIRADS = {(c.scheme_designator, c.value): n for n, c in codes.BIRADS_CODES.items()}
_DENSITY = {(c.scheme_designator, c.value): d for d, c in codes.DENSITY_CODES.items()}
_LATERALITY = {(c.scheme_designator, c.value): lat for lat, c in codes.LATERALITY_CODES.items()}
_BREAST_SIDE = {(c.scheme_designator, c.value): lat for lat, c in codes.BREAST_SIDE_CODES.items()}


def _score(items: Iterable[Dataset]) -> float | None:
    """The first "Probability of cancer" / "Certainty of Finding" NUM (``%`` -> ratio)."""
    for item in items:
        if item.get("ValueType") != "NUM" or _concept(item) not in SCORES:
            continue
        values = item.get("MeasuredValueSequence")
        if not values:
            continue
        value = float(values[0].NumericValue)
        units = values[0].get("MeasurementUnitsCodeSequence")
        if units and str(units[0].CodeValue) == "%":
            value /= 100.0
        return value
    return None


def _label(group: Dataset, context: Dataset | None) -> str | None:
    """VinDr label of a finding: TID 1410 "Finding" or TID 4000 "Single Image Finding" value."""
    found = None
    for item in _children(group):
        if _concept(item) == FINDING:
            found = _code(item)
    if found is None and context is not None:
        found = _code(context)
    label = _LABEL_BY_CODE.get(found) if found else None
    if label == "Asymmetry":  # one code for two labels: our tracking text says which
        text = _tracking_text(group)
        if "Global Asymmetry" in text:
            label = "Global Asymmetry"
    return label


def _tracking_text(group: Dataset) -> str:
    for item in _children(group):
        if _concept(item) == TRACKING_IDENTIFIER and item.get("ValueType") == "TEXT":
            return str(item.TextValue)
    return ""


def _box_of(scoord: Dataset) -> tuple[BoxValues | None, str | None, str]:
    """(bounding box, image UID, problem) of a SCOORD item."""
    refs = [c for c in _children(scoord) if c.get("ValueType") == "IMAGE"]
    image_uid = (str(refs[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                 if refs and refs[0].get("ReferencedSOPSequence") else None)
    kind = str(scoord.get("GraphicType", ""))
    data = np.asarray(scoord.get("GraphicData", []), dtype=float).reshape(-1, 2)
    if image_uid is None:
        return None, None, "SCOORD without a referenced image"
    if kind in ("POLYLINE", "MULTIPOINT") and len(data) >= 2:
        xs, ys = data[:, 0], data[:, 1]
    elif kind == "CIRCLE" and len(data) == 2:
        r = float(np.hypot(*(data[1] - data[0])))
        xs = np.array([data[0, 0] - r, data[0, 0] + r])
        ys = np.array([data[0, 1] - r, data[0, 1] + r])
    elif kind == "ELLIPSE" and len(data) == 4:
        xs, ys = data[:, 0], data[:, 1]
    else:
        return None, image_uid, f"SCOORD {kind} with {len(data)} point(s) is not a region"
    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    if not (box[0] < box[2] and box[1] < box[3]):
        return None, image_uid, f"SCOORD {kind} encloses no area"
    return box, image_uid, ""


def _find_text(ds: Dataset, concept: tuple[str, str]) -> str:
    """The first TEXT item of ``concept`` anywhere in the content tree ('' if none)."""
    stack = list(reversed(_children(ds)))
    while stack:
        item = stack.pop()
        if _concept(item) == concept and item.get("ValueType") in ("TEXT", "UIDREF"):
            return str(item.get("TextValue", item.get("UID", "")))
        stack.extend(reversed(_children(item)))
    return ""


def model_identity(ds: Dataset) -> tuple[str, str]:
    """(name, version) of the model an AI SR comes from (the rules in the module docstring)."""
    name = _find_text(ds, ALGORITHM_NAME) or _find_text(ds, DEVICE_OBSERVER_NAME) \
        or str(ds.get("ManufacturerModelName", "") or "")
    if not name:
        name = next((_tracking_text(item) for item in _walk(ds) if _tracking_text(item)), "")
    versions = ds.get("SoftwareVersions", "")
    fallback = str(versions[0] if isinstance(versions, (list, tuple)) or
                   getattr(versions, "VM", 1) > 1 else versions or "")
    version = _find_text(ds, ALGORITHM_VERSION) or _find_text(ds, DEVICE_OBSERVER_MODEL)
    return name or "unnamed", version or fallback


def _walk(ds: Dataset) -> Iterable[Dataset]:
    stack = list(reversed(_children(ds)))
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(_children(item)))


def reference_boxes(ds: Dataset) -> tuple[list[tuple[str, BoxValues, tuple[str, ...]]],
                                            list[str]]:
    """(image UID, box, labels) of every finding group of a ground-truth SR, and problems.

    A pydicom walk, several times faster than highdicom's reader (``evaluate`` reads
    thousands): the box is the SCOORD's, the labels those of the tracking identifier.
    """
    from ..naming import parse_finding_identifier

    boxes, problems = [], []
    for item in _walk(ds):
        if _concept(item) != MEASUREMENT_GROUP:
            continue
        regions = [c for c in _children(item) if c.get("ValueType") == "SCOORD"]
        if not regions:
            continue
        box, image_uid, problem = _box_of(regions[0])
        text = _tracking_text(item)
        try:
            labels = parse_finding_identifier(text).labels
        except ValueError as exc:
            problems.append(f"reference SR {ds.get('SOPInstanceUID')}: {exc}")
            continue
        if box is None:
            problems.append(f"reference SR {ds.get('SOPInstanceUID')}: {text!r}: {problem}")
            continue
        boxes.append((str(image_uid), box, labels))
    return boxes, problems


def read_model_sr(ds: Dataset) -> ModelReport:
    """Read an AI SR of any form listed in the module docstring.

    Boxes that cannot be read (a 3D or point region, no image, no score) go to ``problems``
    with the reason, never silently.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    cad = sop_class == codes.MAMMOGRAPHY_CAD_SR
    form = ("Mammography CAD SR (TID 4000)" if cad
            else f"TID 1500 in {SR_CLASSES.get(sop_class, sop_class)}")
    name, version = model_identity(ds)
    report = ModelReport(str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", "")),
                         form, name, version)
    if sop_class not in SR_CLASSES:
        report.problems.append(f"SR {report.sop_instance_uid}: SOP class {sop_class} is not "
                               "an SR form we read")
        return report

    def visit(item: Dataset, group: Dataset | None) -> None:
        concept = _concept(item)
        is_group = concept in (MEASUREMENT_GROUP, SINGLE_IMAGE_FINDING)
        if is_group:
            group = item
        regions = []
        for child in _children(item):
            if child.get("ValueType") in ("SCOORD", "SCOORD3D") and group is not None:
                regions.append(child)
            else:
                visit(child, group)
        if regions and group is not None:
            _read_regions(report, regions, group)
        if concept == QUALITATIVE_EVALUATIONS:
            report.breasts.extend(_read_breasts(item))

    visit(ds, None)
    return report


def _read_regions(report: ModelReport, regions: list[Dataset], group: Dataset) -> None:
    """The box of a group: its SCOORD regions (a TID 4000 "Center" point beside an
    "Outline" is not a box of its own); a group without a usable region is reported."""
    where = f"SR {report.sop_instance_uid}"
    read = []
    problems = []
    for scoord in regions:
        if scoord.get("ValueType") == "SCOORD3D":
            problems.append("a SCOORD3D region (no image coordinates)")
            continue
        box, image_uid, problem = _box_of(scoord)
        if box is None:
            problems.append(problem)
        else:
            read.append((box, image_uid, scoord))
    if not read:
        report.problems.append(f"{where}: a finding with {'; '.join(problems)} left out")
        return
    for box, image_uid, scoord in read:
        score = _score([*_children(group), *_children(scoord)])
        if score is None:
            report.problems.append(f"{where}: a box on image {image_uid} has no score, left out")
            continue
        report.boxes.append(ReadBox(str(image_uid), box, score, _label(group, group)))


def _read_breasts(container: Dataset) -> list[ReadBreast]:
    """Breast results of a "Qualitative Evaluations" container, one per laterality."""
    found: dict[str | None, dict[str, object]] = {}
    for item in _children(container):
        laterality = None
        for child in _children(item):
            if _concept(child) == FINDING_SITE:
                laterality = _BREAST_SIDE.get(_code(child))
                for mod in _children(child):
                    if _concept(mod) == LATERALITY:
                        laterality = _LATERALITY.get(_code(mod), laterality)
        entry = found.setdefault(laterality, {})
        concept = _concept(item)
        if item.get("ValueType") == "NUM" and concept in SCORES:
            entry["score"] = _score([item])
        elif concept == ASSESSMENT:
            entry["birads"] = _BIRADS.get(_code(item))
        elif concept == COMPOSITION:
            entry["density"] = _DENSITY.get(_code(item))
    return [ReadBreast(lat, v.get("score"), v.get("birads"), v.get("density"))  # type: ignore[arg-type]
            for lat, v in found.items() if v]


def check_model_sr(ds: Dataset, images: Sequence[Dataset]) -> list[str]:
    """What is wrong with a model's SR against its exam's images ([] when nothing).

    Read back by :func:`read_model_sr` with no problem; every box on an image of the exam
    and inside it; every score in [0, 1]; the breasts' lateralities among the exam's.
    """
    report = read_model_sr(ds)
    found = list(report.problems)
    by_uid = {str(image.SOPInstanceUID): image for image in images}
    where = f"model SR {report.sop_instance_uid} ({report.name} {report.version})"
    for box in report.boxes:
        image = by_uid.get(box.image_uid)
        if image is None:
            found.append(f"{where}: a box references image {box.image_uid}, not one of the "
                         "exam's")
            continue
        x0, y0, x1, y1 = box.box
        if x0 < 0 or y0 < 0 or x1 > int(image.Columns) or y1 > int(image.Rows):
            found.append(f"{where}: box {box.box} outside image {box.image_uid}")
        if box.score is None or not 0 <= box.score <= 1:
            found.append(f"{where}: score {box.score} outside [0, 1]")
    sides = {str(image.get("ImageLaterality", "")) for image in images}
    for breast in report.breasts:
        if breast.laterality not in sides:
            found.append(f"{where}: breast result for laterality {breast.laterality}, not "
                         "among the exam's images")
        if breast.score is not None and not 0 <= breast.score <= 1:
            found.append(f"{where}: breast score {breast.score} outside [0, 1]")
    return found


__all__ = [
    "ModelReport",
    "PredictedBox",
    "PredictedBreast",
    "ReadBox",
    "ReadBreast",
    "build_model_sr",
    "check_model_sr",
    "model_identity",
    "read_model_sr",
]
