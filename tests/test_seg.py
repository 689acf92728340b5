"""Box masks, the BINARY SEG encoder and the SR/SEG consistency check."""

from __future__ import annotations

import datetime
import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from mgfixture import (
    DICOMDIR_WARNINGS,
    PIXELMED_SEG_FALSE_POSITIVES,
    dciodvfy,
    finding,
    mg_header,
    mg_headers,
    pixelmed_available,
    pixelmed_instance,
    rich_study,
    study_record,
)

from converter import codes
from converter.annotations.checks import check_sr_seg
from converter.annotations.masks import box_mask, box_to_polyline, polyline_to_box, scoord_box
from converter.records import Box
from converter.annotations.seg import build_seg, seg_instance_number, seg_uids, segment_label
from converter.annotations.sr import build_sr
from converter.naming import finding_tracking_uid, format_finding_identifier


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _key(code) -> tuple[str, str]:
    return (str(code.scheme_designator), str(code.value))


# --- masks ------------------------------------------------------------------------------------


def test_pixel_centre_rule_is_inclusive():
    mask = box_mask(Box.from_text("1.5", "0.5", "3.5", "1.49"), 4, 6)
    # Columns 1..3 (centres 1.5, 2.5, 3.5), row 0 only (centre 1.5 > 1.49).
    expected = np.zeros((4, 6), bool)
    expected[0, 1:4] = True
    assert (mask == expected).all()


def test_pixel_centre_rule_excludes_partial_pixels():
    mask = box_mask((1.6, 1.6, 3.4, 3.4), 5, 5)
    expected = np.zeros((5, 5), bool)
    expected[2, 2] = True  # only the pixel whose centre (2.5, 2.5) is inside
    assert (mask == expected).all()


def test_thin_box_gets_its_centre_pixel():
    mask = box_mask(Box.from_text("30.2", "38.6", "30.4", "38.7"), 40, 32)
    assert mask.sum() == 1 and mask[38, 30]


def test_box_outside_is_clamped():
    mask = box_mask(Box.from_text("1234.5", "-3.5", "1500.25", "8"), 40, 32)
    assert mask.sum() == 1 and mask[4, 31]  # centre clamped to the last column
    mask = box_mask(Box.from_text("-27.25", "0", "5.000000000000001", "41.0"), 40, 32)
    assert mask[:, :5].all() and not mask[:, 5:].any()


def test_mask_uses_the_float32_scoord_values():
    # 2.50000001 rounds to 2.5 in float32: column 2 (centre 2.5) belongs to the box in the SR.
    box = Box.from_text("2.50000001", "0", "4", "1")
    assert scoord_box(box, 2, 8)[0] == 2.5
    assert box_mask(box, 2, 8)[0, 2]
    assert (box_mask(box, 2, 8) == box_mask(scoord_box(box, 2, 8), 2, 8)).all()


def test_polyline_round_trip_and_errors():
    points = box_to_polyline((1.0, 2.0, 3.0, 4.0))
    assert polyline_to_box(points) == (1.0, 2.0, 3.0, 4.0)
    assert polyline_to_box(points.ravel().tolist()) == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError):
        polyline_to_box(points[:4])
    bent = points.copy()
    bent[2, 0] = 3.5
    with pytest.raises(ValueError):
        polyline_to_box(bent)


def test_segment_label_fits_lo():
    labels = ("Suspicious Calcification", "Architectural Distortion",
              "Suspicious Lymph Node", "Nipple Retraction")
    label = segment_label(labels)
    assert len(label) <= 64
    assert label.startswith("Suspicious Calcification")
    assert segment_label(("Mass", "Focal Asymmetry")) == "Mass, Focal Asymmetry"


# --- SEG --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rich():
    study = rich_study("seg")
    images = mg_headers(study, pixel_spacing=True)  # trap 1 present in the source
    segs = {
        image.image_id: build_seg(image, header)
        for image, header in zip(study.images, images)
    }
    return study, images, segs


def test_no_boxes_no_seg(rich):
    study, _, segs = rich
    assert [i.view + i.laterality for i in study.images if segs[i.image_id] is None] == ["MLOR"]


def test_seg_read_back(rich, tmp_path):
    study, images, segs = rich
    for image, header in zip(study.images, images):
        seg = segs[image.image_id]
        if seg is None:
            continue
        path = tmp_path / f"{image.image_id}.dcm"
        seg.save_as(path, enforce_file_format=True)
        back = hd.seg.segread(path)
        assert back.SegmentationType == "BINARY"
        assert back.file_meta.TransferSyntaxUID == codes.EXPLICIT_VR_LITTLE_ENDIAN
        assert (back.SeriesInstanceUID, back.SOPInstanceUID) == seg_uids(image)
        assert back.StudyInstanceUID == header.StudyInstanceUID
        assert back.PatientID == header.PatientID
        assert list(back.PatientOrientation) == list(header.PatientOrientation)
        assert "FrameOfReferenceUID" not in back
        assert list(back.segment_numbers) == list(range(1, len(image.findings) + 1))
        pixels = back.get_pixels_by_source_instance(
            source_sop_instance_uids=[header.SOPInstanceUID]
        )
        assert pixels.shape == (1, header.Rows, header.Columns, len(image.findings))
        for index, item in enumerate(image.findings):
            desc = back.get_segment_description(index + 1)
            assert desc.tracking_uid == finding_tracking_uid(image.study_id, image.image_id, index)
            assert desc.tracking_id == format_finding_identifier(item.categories, item.box,
                                                                item.birads)
            assert _key(desc.segmented_property_type) == _key(
                codes.FINDING_CODES[item.categories[0]]
            )
            assert _key(desc.segmented_property_category) == _key(codes.FINDING_CATEGORY)
            assert desc.segment_label == segment_label(item.categories)
            mask = pixels[0, :, :, index].astype(bool)
            assert mask.any()
            assert (mask == box_mask(item.box, header.Rows, header.Columns)).all()


def test_seg_dciodvfy_clean(rich, tmp_path):
    study, _, segs = rich
    checked = 0
    for image in study.images:
        seg = segs[image.image_id]
        if seg is None:
            continue
        path = tmp_path / f"{image.image_id}.dcm"
        seg.save_as(path, enforce_file_format=True)
        errors, warnings = dciodvfy(path)
        assert errors == [], errors
        assert set(warnings) <= set(DICOMDIR_WARNINGS), warnings
        checked += 1
    assert checked == 3


def test_seg_says_which_breast(rich):
    study, _, segs = rich
    side = {"L": "7771000", "R": "24028007"}
    for image in study.images:
        seg = segs[image.image_id]
        if seg is None:
            continue
        assert seg.BodyPartExamined == "BREAST" and "Laterality" not in seg
        for item in seg.SegmentSequence:
            region = item.AnatomicRegionSequence[0]
            assert (region.CodeValue, region.CodingSchemeDesignator) == ("76752008", "SCT")
            modifier = region.AnatomicRegionModifierSequence[0]
            assert modifier.CodeValue == side[image.laterality]


@pytest.mark.skipif(not pixelmed_available(), reason="java or PixelMed not installed")
def test_pixelmed_instance_validator_on_every_seg(rich, tmp_path):
    """PixelMed's IOD check of the Segmentation: none but the three explained messages."""
    study, _, segs = rich
    checked = 0
    for image in study.images:
        seg = segs[image.image_id]
        if seg is None:
            continue
        path = tmp_path / f"{image.image_id}.dcm"
        seg.save_as(path, enforce_file_format=True)
        errors, text = pixelmed_instance(str(path))
        assert "Found Segmentation IOD" in text and "IOD validation complete" in text, text
        assert set(errors) <= set(PIXELMED_SEG_FALSE_POSITIVES), errors
        checked += 1
    assert checked == 3


def test_frame_of_reference_in_source_is_stripped(tmp_path):
    study = study_record("for", {("L", "CC"): [finding(["Mass"], ["1", "1", "5", "5"])]})
    image = study.images[1]
    header = mg_header(image, 2, pixel_spacing=True)
    header.FrameOfReferenceUID = "2.25.1"
    seg = build_seg(image, header)
    assert "FrameOfReferenceUID" not in seg
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy(path)[0] == []
    hd.seg.segread(path)
    assert "PixelSpacing" in header and "FrameOfReferenceUID" in header  # input untouched


def test_seg_same_input_same_bytes(rich):
    study, _, segs = rich
    image = study.images[0]
    again = build_seg(image, mg_header(image, 1, pixel_spacing=True))
    data = _bytes(again)
    assert data == _bytes(segs[image.image_id])
    assert datetime.date.today().strftime("%Y%m%d").encode() not in data


def test_instance_numbers():
    header = pydicom.Dataset()
    header.SeriesNumber, header.InstanceNumber = 1, 3
    assert seg_instance_number(header) == 3
    header.SeriesNumber = 2
    assert seg_instance_number(header) == 103


# --- SR / SEG consistency -----------------------------------------------------------------------


def test_check_sr_seg_accepts_consistent_objects(rich):
    study, images, segs = rich
    sr = build_sr(study, images)
    assert check_sr_seg(sr, [s for s in segs.values() if s is not None], images) == []


def test_check_sr_seg_reads_files(rich, tmp_path):
    study, images, segs = rich
    sr_path = tmp_path / "sr.dcm"
    build_sr(study, images).save_as(sr_path, enforce_file_format=True)
    paths = []
    for image_id, seg in segs.items():
        if seg is not None:
            paths.append(tmp_path / f"{image_id}.dcm")
            seg.save_as(paths[-1], enforce_file_format=True)
    assert check_sr_seg(sr_path, paths, images) == []


def test_check_sr_seg_finds_problems(rich):
    study, images, segs = rich
    sr = build_sr(study, images)
    present = [s for s in segs.values() if s is not None]

    missing = check_sr_seg(sr, present[1:], images)
    assert any("has no SEG segment" in m for m in missing)

    # A mask that no longer follows the box (left CC, first box moved two columns).
    image, header = study.images[1], images[1]
    assert (image.laterality, image.view) == ("L", "CC")
    first = image.findings[0]
    box = first.box
    moved = type(first)(first.categories, first.birads,
                        Box(box.xmin + 2, box.ymin, box.xmax + 2, box.ymax, box.text), 0)
    changed = type(image)(**{**image.__dict__, "findings": (moved, *image.findings[1:])})
    others = [s for i, s in segs.items() if s is not None and i != image.image_id]
    messages = check_sr_seg(sr, [build_seg(changed, header), *others], images)
    assert any("segment 1: mask differs" in m for m in messages), messages
    assert len(messages) == 1, messages

    # A finding type outside its context group / not the label's code.
    tampered = pydicom.dcmread(io.BytesIO(_bytes(sr)))
    (measurements,) = [item for item in tampered.ContentSequence
                       if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    for group in measurements.ContentSequence:
        for item in group.get("ContentSequence", []):
            if item.ConceptNameCodeSequence[0].CodeValue == "121071":  # Finding
                item.ConceptCodeSequence[0].CodeValue = "999999"
                break
    messages = check_sr_seg(tampered, present, images)
    assert any("finding type" in m for m in messages), messages


def test_check_sr_seg_wrong_image_set(rich):
    study, images, segs = rich
    sr = build_sr(study, images)
    present = [s for s in segs.values() if s is not None]
    messages = check_sr_seg(sr, present, images[:2])
    assert any("not among the exam's images" in m for m in messages)


def test_one_series_per_seg_with_plane_geometry(rich):
    """Viewers show one SEG per series and need pixel measures and plane orientation."""
    study, images, segs = rich
    made = [(image, header, segs[image.image_id]) for image, header in zip(study.images, images)
            if segs[image.image_id] is not None]
    assert len({seg.SeriesInstanceUID for _, _, seg in made}) == len(made) > 1
    assert len({seg.SeriesNumber for _, _, seg in made}) == len(made)
    for image, header, seg in made:
        assert seg.SeriesNumber == codes.SEG_SERIES_NUMBER + seg_instance_number(header)
        assert seg.SeriesDescription.startswith(f"{image.laterality}-{image.view} ")
        shared = seg.SharedFunctionalGroupsSequence[0]
        measures = shared.PixelMeasuresSequence[0]
        assert list(measures.PixelSpacing) == list(header.get("PixelSpacing")
                                                   or header.ImagerPixelSpacing)
        assert measures.SliceThickness == measures.SpacingBetweenSlices == 1
        assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
        if len(image.findings) == 1:  # highdicom's own shared item is kept, merged
            assert "SegmentIdentificationSequence" in shared
