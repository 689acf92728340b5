"""Comprehensive SR (TID 1500) encoder: content, read-back, determinism, validators."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from mgfixture import (
    ALL_LABELS,
    DICOMDIR_WARNINGS,
    dciodvfy,
    mg_headers,
    pixelmed_available,
    pixelmed_sr,
    rich_study,
    study_record,
)

from converter import codes
from converter.annotations.masks import scoord_box
from converter.annotations.sr import build_sr, read_sr
from converter.naming import (
    finding_tracking_uid,
    format_finding_identifier,
    is_valid_uid,
    parse_finding_identifier,
    sr_uids,
)
from converter.records import Box


def _key(code) -> tuple[str, str]:
    return (str(code.scheme_designator), str(code.value))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def reread(ds: pydicom.Dataset) -> hd.sr.ComprehensiveSR:
    """The SR as highdicom reads it from its bytes."""
    return hd.sr.srread(io.BytesIO(_bytes(ds)))


@pytest.fixture(scope="module")
def rich():
    study = rich_study()
    images = mg_headers(study)
    return study, images, build_sr(study, images)


@pytest.fixture(scope="module")
def rich_file(rich, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sr") / "rich.dcm"
    rich[2].save_as(path, enforce_file_format=True)
    return path


# --- tracking identifier ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, text, birads",
    [
        (("Mass",), ("1234.5678710938", "412.3456789012345", "1500.25", "-3.5"), 4),
        (("Nipple Retraction", "Mass", "Asymmetry", "Global Asymmetry"), ("0", "0", "1", "1e3"),
         None),
    ],
)
def test_identifier_round_trip(labels, text, birads):
    box = Box.from_text(*text)
    identifier = format_finding_identifier(labels, box, birads)
    assert identifier.startswith("VinDr finding [")
    parsed = parse_finding_identifier(identifier)
    assert parsed.labels == labels
    assert parsed.box.text == text
    assert parsed.birads == birads


def test_identifier_documented_example():
    box = Box.from_text("1234.5678710938", "412.3456789012345", "1500.25", "-3.5")
    assert (
        format_finding_identifier(["Mass", "Focal Asymmetry"], box, 4)
        == "VinDr finding ['Mass', 'Focal Asymmetry'] BI-RADS 4 box "
        "1234.5678710938 412.3456789012345 1500.25 -3.5"
    )
    assert format_finding_identifier(["Mass"], box) == (
        "VinDr finding ['Mass'] box 1234.5678710938 412.3456789012345 1500.25 -3.5")


@pytest.mark.parametrize(
    "text",
    [
        "VinDr breast L",
        "VinDr finding [] box 1 2 3 4",
        "VinDr finding ['Mass'] box 1 2 3",
        "VinDr finding ['Mass'] box 1 2 3 x",
        "VinDr finding Mass box 1 2 3 4",
        "VinDr finding ['Mass'] BI-RADS 7 box 1 2 3 4",
        "VinDr finding ['Mass'] BI-RADS box 1 2 3 4",
    ],
)
def test_identifier_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_finding_identifier(text)


# --- content --------------------------------------------------------------------------------------


def test_sr_header(rich):
    study, images, sr = rich
    series_uid, sop_uid = sr_uids(study.study_id)
    assert sr.SOPClassUID == codes.COMPREHENSIVE_SR
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (series_uid, sop_uid)
    assert is_valid_uid(sop_uid) and is_valid_uid(series_uid)
    assert sr.SeriesNumber == codes.SR_SERIES_NUMBER
    assert sr.InstanceNumber == codes.SR_INSTANCE_NUMBER
    for keyword in (
        "StudyInstanceUID", "PatientID", "PatientName", "PatientSex", "PatientBirthDate",
        "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
        "StudyDescription",
    ):
        assert sr[keyword].value == images[0][keyword].value, keyword
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.file_meta.TransferSyntaxUID == codes.EXPLICIT_VR_LITTLE_ENDIAN
    assert sr.file_meta.ImplementationClassUID == codes.IMPLEMENTATION_CLASS_UID


def test_findings_read_back(rich, rich_file):
    study, images, _ = rich
    sr = hd.sr.srread(rich_file)
    groups = sr.content.get_planar_roi_measurement_groups()
    expected = [(image, i, f) for image in study.images for i, f in enumerate(image.findings)]
    assert len(groups) == len(expected) == 14
    headers = {ds.SOPInstanceUID: ds for ds in images}
    for group, (image, index, item) in zip(groups, expected):
        assert group.tracking_uid == finding_tracking_uid(image.study_id, image.image_id, index)
        parsed = parse_finding_identifier(group.tracking_identifier)
        assert parsed.labels == item.categories
        assert parsed.box.text == item.box.text
        assert parsed.birads == item.birads
        assert _key(group.finding_type) == _key(codes.FINDING_CODES[item.categories[0]])
        assert _key(group.finding_category) == _key(codes.FINDING_CATEGORY)
        site = group.finding_sites[0]
        assert _key(site.value) == _key(codes.BREAST)
        assert _key(site.laterality) == _key(codes.LATERALITY_CODES[image.laterality])
        evaluations = {_key(q.name): _key(q.value) for q in group.get_qualitative_evaluations()}
        assert evaluations[_key(codes.GEOMETRIC_PURPOSE)] == _key(codes.BOUNDED_BY)
        if item.birads is None:
            assert _key(codes.ASSESSMENT_CATEGORY) not in evaluations
        else:
            assert evaluations[_key(codes.ASSESSMENT_CATEGORY)] == _key(
                codes.BIRADS_CODES[item.birads]
            )
        roi = group.roi
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0]
        header = headers[ref.ReferencedSOPInstanceUID]
        assert header.ImageLaterality == image.laterality
        points = roi.value
        assert points.shape == (5, 2)
        assert (points[0] == points[-1]).all()
        assert points[:, 0].min() >= 0 and points[:, 0].max() <= header.Columns
        assert points[:, 1].min() >= 0 and points[:, 1].max() <= header.Rows
        xmin, ymin, xmax, ymax = scoord_box(item.box, header.Rows, header.Columns)
        assert points.tolist() == [
            [xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax], [xmin, ymin]
        ]


def test_every_label_is_a_finding_type(rich):
    study, _, sr = rich
    firsts = {f.categories[0] for image in study.images for f in image.findings}
    assert firsts == set(ALL_LABELS)
    report = read_sr(sr)
    assert {f.finding_type for f in report.findings} == {
        _key(code) for code in codes.FINDING_CODES.values()
    }
    assert max(len(f.labels) for f in report.findings) == 4


def test_clipped_box_keeps_original_text(rich):
    _, _, sr = rich
    report = read_sr(sr)
    outside = [f for f in report.findings if f.box.text[0] == "-27.25"]
    assert len(outside) == 1
    assert outside[0].scoord[0] == 0.0  # clipped in the SCOORD
    assert outside[0].box.text == ("-27.25", "0", "5.000000000000001", "41.0")
    assert outside[0].birads is None


def _evaluations(sr):
    """The items of the report's Qualitative Evaluations container."""
    containers = [item for item in sr.ContentSequence
                  if _key(item.ConceptNameCodeSequence[0]) == _key(codes.QUALITATIVE_EVALUATIONS)]
    assert len(containers) == 1
    return list(containers[0].ContentSequence)


def test_breast_assessments_are_qualitative_evaluations_not_groups(rich):
    study, images, sr = rich
    assert reread(sr).content.get_image_measurement_groups() == []  # every group is a region
    items = _evaluations(sr)
    uids = {image.image_id: ds.SOPInstanceUID for image, ds in zip(study.images, images)}
    expected = []
    for laterality, birads, density in zip("RL", (3, 5), "DA"):
        expected += [(_key(codes.ASSESSMENT_CATEGORY), _key(codes.BIRADS_CODES[birads]), laterality),
                     (_key(codes.BREAST_COMPOSITION), _key(codes.DENSITY_CODES[density]),
                      laterality)]
    found = []
    for item in items:
        assert item.RelationshipType == "CONTAINS" and item.ValueType == "CODE"
        site, *sources = item.ContentSequence
        assert site.RelationshipType == "HAS CONCEPT MOD"
        assert _key(site.ConceptCodeSequence[0]) == _key(codes.BREAST)
        (lat,) = site.ContentSequence
        laterality = "R" if _key(lat.ConceptCodeSequence[0]) == _key(codes.LATERALITY_CODES["R"]) else "L"
        assert {s.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for s in sources} == {
            uids[i.image_id] for i in study.images if i.laterality == laterality}
        assert all(s.RelationshipType == "INFERRED FROM" and s.ValueType == "IMAGE"
                   for s in sources)
        found.append((_key(item.ConceptNameCodeSequence[0]), _key(item.ConceptCodeSequence[0]),
                      laterality))
    assert found == expected
    report = read_sr(sr)
    assert [(b.laterality, b.birads, b.density) for b in report.breasts] == [
        ("R", 3, "D"), ("L", 5, "A")]


def test_image_library_and_procedure(rich):
    _, images, sr = rich
    report = read_sr(sr)
    assert set(report.library) == {ds.SOPInstanceUID for ds in images}
    procedure = [
        item for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"  # Procedure reported
    ]
    assert len(procedure) == 1
    assert _key(procedure[0].ConceptCodeSequence[0]) == _key(codes.IMAGING_PROCEDURE)


def test_exam_without_findings():
    study = study_record("empty", birads={"L": 1, "R": 2}, density={"L": "B", "R": "C"})
    images = mg_headers(study)
    sr = build_sr(study, images)
    assert reread(sr).content.get_planar_roi_measurement_groups() == []
    names = [_key(item.ConceptNameCodeSequence[0]) for item in sr.ContentSequence]
    assert _key(codes.IMAGING_MEASUREMENTS) not in names  # no empty container
    assert _key(codes.QUALITATIVE_EVALUATIONS) in names
    report = read_sr(sr)
    assert [(b.laterality, b.birads, b.density) for b in report.breasts] == [
        ("R", 2, "C"), ("L", 1, "B")
    ]


def test_disagreeing_views_get_their_own_group():
    study = study_record("odd")
    first = study.images[0]  # R CC
    changed = type(first)(**{**first.__dict__, "breast_birads": 4})
    study = type(study)(study.study_id, study.split, (changed, *study.images[1:]))
    report = read_sr(build_sr(study, mg_headers(study)))
    right = sorted((b.birads, len(b.image_uids)) for b in report.breasts if b.laterality == "R")
    assert right == [(1, 1), (4, 1)]


def test_missing_header_is_an_error():
    study = study_record("missing")
    with pytest.raises(ValueError, match="no repaired header"):
        build_sr(study, mg_headers(study)[:3])


def test_same_input_same_bytes(rich):
    study, _, sr = rich
    again = build_sr(study, mg_headers(study))
    assert _bytes(again) == _bytes(sr)
    today = datetime.date.today().strftime("%Y%m%d")
    assert today.encode() not in _bytes(sr)
    assert str(sr.InstanceCreationDate) == codes.ANNOTATION_DATE
    assert str(sr.ContentDate) == codes.ANNOTATION_DATE
    for item in sr.ContributingEquipmentSequence:
        assert item.get("ContributionDateTime", codes.ANNOTATION_DATETIME) == (
            codes.ANNOTATION_DATETIME
        )


def test_headers_with_pixel_spacing_are_fine():
    study = rich_study("spacing")
    sr = build_sr(study, mg_headers(study, pixel_spacing=True))
    assert len(read_sr(sr).findings) == 14


# --- validators -------------------------------------------------------------------------------


def test_dciodvfy_clean(rich_file, tmp_path):
    errors, warnings = dciodvfy(rich_file)
    assert errors == []
    assert set(warnings) <= set(DICOMDIR_WARNINGS), warnings
    empty = study_record("empty-v")
    path = tmp_path / "empty.dcm"
    build_sr(empty, mg_headers(empty)).save_as(path, enforce_file_format=True)
    errors, warnings = dciodvfy(path)
    assert errors == []
    assert set(warnings) <= set(DICOMDIR_WARNINGS), warnings


@pytest.mark.skipif(not pixelmed_available(), reason="java or PixelMed not installed")
def test_pixelmed_sr_validator(rich_file):
    errors, warnings, text = pixelmed_sr(rich_file)
    assert "Found Root Template TID_1500" in text
    assert "IOD validation complete" in text
    assert errors == [], text
    # The remaining warnings are PixelMed's (2022) template tables not listing the finding
    # category, geometric purpose and qualitative evaluation rows of TID 1410 / 1501.
    for line in warnings:
        assert "Content Item not in template" in line, line
