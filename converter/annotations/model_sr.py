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

Reading (:func:`read_model_sr`) walks the content tree (:class:`Node`, from a pydicom
Dataset or straight from DICOM JSON), so it reads our form
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
from .sr import _concept as _dataset_concept
from .sr import _source_image, breast_site

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
            [item for item in root.ContentSequence if _dataset_concept(item) != ("DCM", "126010")],
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
    """One breast's items of a Qualitative Evaluations container (``images``: its Source
    images)."""

    laterality: str | None
    score: float | None
    birads: int | None
    density: str | None
    images: tuple[str, ...] = ()


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


# The reader works on a light copy of the content tree, built once: from a pydicom Dataset
# (tag access), or straight from DICOM JSON (WADO-RS metadata), which skips pydicom's parsing
# of thousands of nested items (an AI SR of 40 boxes has some 1,500 content items).
_VALUE_TYPE, _CONCEPT_NAME, _CONCEPT_CODE = 0x0040A040, 0x0040A043, 0x0040A168
_TEXT_VALUE, _UID_VALUE, _CONTENT = 0x0040A160, 0x0040A124, 0x0040A730
_CODE_VALUE, _SCHEME = 0x00080100, 0x00080102
_MEASURED, _NUMERIC, _UNITS = 0x0040A300, 0x0040A30A, 0x004008EA
_GRAPHIC_TYPE, _GRAPHIC_DATA = 0x00700023, 0x00700022
_REFERENCED_SOP, _REFERENCED_UID = 0x00081199, 0x00081155


class Node:
    """One content item (or the SR itself): value type, concept name and value codes, text,
    children, and what boxes and scores need (graphic type and data, numeric value and unit,
    referenced SOP Instance UIDs). ``get(keyword)`` reads a top-level attribute."""

    __slots__ = ("value_type", "concept", "code", "text", "children", "graphic_type",
                 "graphic_data", "number", "unit", "references", "_attributes")

    def __init__(self) -> None:
        self.value_type, self.concept, self.code, self.text = "", None, None, ""
        self.children: list[Node] = []
        self.graphic_type, self.graphic_data = "", ()
        self.number: float | None = None
        self.unit: str | None = None
        self.references: tuple[str, ...] = ()
        self._attributes: object = None

    @classmethod
    def from_dataset(cls, item: Dataset) -> Node:
        node = cls()
        node._attributes = item
        node.value_type = str(item[_VALUE_TYPE].value) if _VALUE_TYPE in item else ""
        node.concept = _first_code(item, _CONCEPT_NAME)
        node.code = _first_code(item, _CONCEPT_CODE)
        text = item[_TEXT_VALUE].value if _TEXT_VALUE in item else (
            item[_UID_VALUE].value if _UID_VALUE in item else "")
        node.text = str(text or "")
        if node.value_type in ("SCOORD", "SCOORD3D"):
            node.graphic_type = str(item[_GRAPHIC_TYPE].value) if _GRAPHIC_TYPE in item else ""
            node.graphic_data = tuple(item[_GRAPHIC_DATA].value) if _GRAPHIC_DATA in item else ()
        elif node.value_type == "NUM" and _MEASURED in item and item[_MEASURED].value:
            measured = item[_MEASURED].value[0]
            if _NUMERIC in measured:
                node.number = float(measured[_NUMERIC].value)
            units = _first_code(measured, _UNITS)
            node.unit = units[1] if units else None
        elif node.value_type == "IMAGE" and _REFERENCED_SOP in item:
            node.references = tuple(str(ref[_REFERENCED_UID].value)
                                    for ref in item[_REFERENCED_SOP].value
                                    if _REFERENCED_UID in ref)
        node.children = ([cls.from_dataset(child) for child in item[_CONTENT].value]
                         if _CONTENT in item else [])
        return node

    @classmethod
    def from_json(cls, item: dict) -> Node:
        """From DICOM JSON (PS3.18 F.2), as WADO-RS metadata returns it."""
        node = cls()
        node._attributes = item
        node.value_type = str(_json_value(item, "0040A040") or "")
        node.concept = _json_code(item, "0040A043")
        node.code = _json_code(item, "0040A168")
        node.text = str(_json_value(item, "0040A160") or _json_value(item, "0040A124") or "")
        if node.value_type in ("SCOORD", "SCOORD3D"):
            node.graphic_type = str(_json_value(item, "00700023") or "")
            node.graphic_data = tuple(item.get("00700022", {}).get("Value", ()))
        elif node.value_type == "NUM":
            measured = _json_items(item, "0040A300")
            if measured:
                value = _json_value(measured[0], "0040A30A")
                node.number = None if value is None else float(value)
                units = _json_code(measured[0], "004008EA")
                node.unit = units[1] if units else None
        elif node.value_type == "IMAGE":
            node.references = tuple(str(_json_value(ref, "00081155"))
                                    for ref in _json_items(item, "00081199")
                                    if _json_value(ref, "00081155"))
        node.children = [cls.from_json(child) for child in _json_items(item, "0040A730")]
        return node

    def get(self, keyword: str, default: object = None) -> object:
        """A top-level attribute by keyword (its first value in DICOM JSON)."""
        if isinstance(self._attributes, dict):
            from pydicom.datadict import tag_for_keyword

            tag = tag_for_keyword(keyword)
            value = None if tag is None else _json_value(self._attributes, f"{tag:08X}")
            return default if value is None else value
        if self._attributes is None:
            return default
        return self._attributes.get(keyword, default)  # type: ignore[attr-defined]


def _json_items(item: dict, tag: str) -> list[dict]:
    return list(item.get(tag, {}).get("Value", []) or [])


def _json_value(item: dict, tag: str) -> object:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def _json_code(item: dict, tag: str) -> tuple[str, str] | None:
    codes_ = _json_items(item, tag)
    if not codes_:
        return None
    scheme, value = _json_value(codes_[0], "00080102"), _json_value(codes_[0], "00080100")
    return None if scheme is None or value is None else (str(scheme), str(value))


def _first_code(item: Dataset, tag: int) -> tuple[str, str] | None:
    if tag not in item:
        return None
    sequence = item[tag].value
    if not sequence:
        return None
    code = sequence[0]
    if _SCHEME not in code or _CODE_VALUE not in code:
        return None
    return (str(code[_SCHEME].value), str(code[_CODE_VALUE].value))


def tree(ds: Dataset | Node | dict) -> Node:
    """The content tree of an SR: from a Dataset or DICOM JSON (``ds`` when already one)."""
    if isinstance(ds, Node):
        return ds
    return Node.from_json(ds) if isinstance(ds, dict) else Node.from_dataset(ds)


def _concept(item: Node) -> tuple[str, str] | None:
    return item.concept


def _code(item: Node) -> tuple[str, str] | None:
    return item.code


def _children(item: Node) -> list[Node]:
    return item.children


_LABEL_BY_CODE: dict[tuple[str, str], str] = {}
for _label, _c in codes.FINDING_CODES.items():
    _LABEL_BY_CODE.setdefault((_c.scheme_designator, _c.value), _label)
_BIRADS = {(c.scheme_designator, c.value): n for n, c in codes.BIRADS_CODES.items()}
_DENSITY = {(c.scheme_designator, c.value): d for d, c in codes.DENSITY_CODES.items()}
_LATERALITY = {(c.scheme_designator, c.value): lat for lat, c in codes.LATERALITY_CODES.items()}
_BREAST_SIDE = {(c.scheme_designator, c.value): lat for lat, c in codes.BREAST_SIDE_CODES.items()}


def _score(items: Iterable[Node]) -> float | None:
    """The first "Probability of cancer" / "Certainty of Finding" NUM (``%`` -> ratio)."""
    for item in items:
        if item.value_type != "NUM" or item.concept not in SCORES:
            continue
        if item.number is None:
            continue
        return item.number / 100.0 if item.unit == "%" else item.number
    return None


def _label(group: Node, context: Node | None) -> str | None:
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


def _tracking_text(group: Node) -> str:
    for item in _children(group):
        if item.concept == TRACKING_IDENTIFIER and item.value_type == "TEXT":
            return item.text
    return ""


def _box_of(scoord: Node, empty: bool = False) -> tuple[BoxValues | None, str | None, str]:
    """(bounding box, image UID, problem) of a SCOORD item; ``empty`` accepts a box without
    area (a reference box lying wholly outside its image, clipped to a line)."""
    refs = [uid for c in scoord.children if c.value_type == "IMAGE" for uid in c.references]
    image_uid = refs[0] if refs else None
    kind = scoord.graphic_type
    data = np.asarray(scoord.graphic_data, dtype=float).reshape(-1, 2)
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
    if not empty and not (box[0] < box[2] and box[1] < box[3]):
        return None, image_uid, f"SCOORD {kind} encloses no area"
    return box, image_uid, ""


def _find_text(root: Node, concept: tuple[str, str]) -> str:
    """The first TEXT item of ``concept`` anywhere in the content tree ('' if none)."""
    for item in _walk(root):
        if item.concept == concept and item.value_type in ("TEXT", "UIDREF"):
            return item.text
    return ""


def model_identity(ds: Dataset | Node) -> tuple[str, str]:
    """(name, version) of the model an AI SR comes from (the rules in the module docstring)."""
    root = tree(ds)
    name = _find_text(root, ALGORITHM_NAME) or _find_text(root, DEVICE_OBSERVER_NAME) \
        or str(root.get("ManufacturerModelName", "") or "")
    if not name:
        name = next((_tracking_text(item) for item in _walk(root) if _tracking_text(item)), "")
    versions = root.get("SoftwareVersions", "")
    fallback = str(versions[0] if isinstance(versions, (list, tuple)) or
                   getattr(versions, "VM", 1) > 1 else versions or "")
    version = _find_text(root, ALGORITHM_VERSION) or _find_text(root, DEVICE_OBSERVER_MODEL)
    return name or "unnamed", version or fallback


def _walk(root: Node) -> Iterable[Node]:
    stack = list(reversed(root.children))
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(_children(item)))


def reference_boxes(ds: Dataset | Node) -> tuple[list[tuple[str, BoxValues, tuple[str, ...]]],
                                            list[str]]:
    """(image UID, box, labels) of every finding group of a ground-truth SR, and problems.

    A pydicom walk, several times faster than highdicom's reader (``evaluate`` reads
    thousands): the box is the SCOORD's, the labels those of the tracking identifier.
    """
    from ..naming import parse_finding_identifier

    root = tree(ds)
    where = f"reference SR {root.get('SOPInstanceUID')}"
    boxes, problems = [], []
    for item in _walk(root):
        if item.concept != MEASUREMENT_GROUP:
            continue
        regions = [c for c in item.children if c.value_type == "SCOORD"]
        if not regions:
            continue
        box, image_uid, problem = _box_of(regions[0], empty=True)
        text = _tracking_text(item)
        try:
            labels = parse_finding_identifier(text).labels
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if box is None:
            problems.append(f"{where}: {text!r}: {problem}")
            continue
        boxes.append((str(image_uid), box, labels))
    return boxes, problems


def read_model_sr(ds: Dataset | Node) -> ModelReport:
    """Read an AI SR of any form listed in the module docstring.

    Boxes that cannot be read (a 3D or point region, no image, no score) go to ``problems``
    with the reason, never silently.
    """
    root = tree(ds)
    sop_class = str(root.get("SOPClassUID", ""))
    cad = sop_class == codes.MAMMOGRAPHY_CAD_SR
    form = ("Mammography CAD SR (TID 4000)" if cad
            else f"TID 1500 in {SR_CLASSES.get(sop_class, sop_class)}")
    name, version = model_identity(root)
    report = ModelReport(str(root.get("SOPInstanceUID", "")),
                         str(root.get("StudyInstanceUID", "")),
                         form, name, version)
    if sop_class not in SR_CLASSES:
        report.problems.append(f"SR {report.sop_instance_uid}: SOP class {sop_class} is not "
                               "an SR form we read")
        return report

    def visit(item: Node, group: Node | None) -> None:
        concept = item.concept
        if concept in (MEASUREMENT_GROUP, SINGLE_IMAGE_FINDING):
            group = item
        regions = []
        for child in item.children:
            if child.value_type in ("SCOORD", "SCOORD3D") and group is not None:
                regions.append(child)
            else:
                visit(child, group)
        if regions and group is not None:
            _read_regions(report, regions, group)
        if concept == QUALITATIVE_EVALUATIONS:
            report.breasts.extend(_read_breasts(item))

    visit(root, None)
    return report


def _read_regions(report: ModelReport, regions: list[Node], group: Node) -> None:
    """The box of a group: its SCOORD regions (a TID 4000 "Center" point beside an
    "Outline" is not a box of its own); a group without a usable region is reported."""
    where = f"SR {report.sop_instance_uid}"
    read = []
    problems = []
    for scoord in regions:
        if scoord.value_type == "SCOORD3D":
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


def _read_breasts(container: Node) -> list[ReadBreast]:
    """Breast results of a "Qualitative Evaluations" container, one per laterality."""
    found: dict[str | None, dict[str, object]] = {}
    for item in container.children:
        laterality = None
        images: list[str] = []
        for child in item.children:
            if child.concept == FINDING_SITE:
                laterality = _BREAST_SIDE.get(child.code)  # type: ignore[arg-type]
                for mod in child.children:
                    if mod.concept == LATERALITY:
                        laterality = _LATERALITY.get(mod.code, laterality)  # type: ignore[arg-type]
            elif child.value_type == "IMAGE":
                images += child.references
        entry = found.setdefault(laterality, {})
        entry["images"] = tuple(dict.fromkeys([*entry.get("images", ()), *images]))  # type: ignore[misc]
        concept = item.concept
        if item.value_type == "NUM" and concept in SCORES:
            entry["score"] = _score([item])
        elif concept == ASSESSMENT:
            entry["birads"] = _BIRADS.get(item.code)  # type: ignore[arg-type]
        elif concept == COMPOSITION:
            entry["density"] = _DENSITY.get(item.code)  # type: ignore[arg-type]
    return [ReadBreast(lat, v.get("score"), v.get("birads"), v.get("density"),  # type: ignore[arg-type]
                       v.get("images", ()))  # type: ignore[arg-type]
            for lat, v in found.items() if set(v) - {"images"}]


def reference_breasts(ds: Dataset | Node) -> list[ReadBreast]:
    """The breasts of a ground-truth SR's Qualitative Evaluations (BI-RADS, density, images)."""
    return [breast for item in tree(ds).children if item.concept == QUALITATIVE_EVALUATIONS
            for breast in _read_breasts(item)]


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
