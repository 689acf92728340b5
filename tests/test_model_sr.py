"""A model's SR: written with highdicom, valid, read back; foreign AI SR forms read too."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from mgfixture import (
    DICOMDIR_WARNINGS,
    dciodvfy,
    mg_headers,
    pixelmed_available,
    pixelmed_sr,
    rich_study,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes as dcm_codes

from converter import codes
from converter.annotations.model_sr import (
    PredictedBox,
    PredictedBreast,
    build_model_sr,
    model_identity,
    read_model_sr,
)
from converter.naming import is_ground_truth_sr, model_sr_uids, uid_to_hex


def _bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exam():
    study = rich_study("model")
    return study, mg_headers(study)


def _ids(images):
    return [uid_to_hex(str(ds.SOPInstanceUID)) for ds in images]


@pytest.fixture(scope="module")
def model_sr(exam):
    study, images = exam
    ids = _ids(images)
    boxes = [PredictedBox(ids[0], (1.5, 2.25, 10.0, 12.0), 0.9, "Mass"),
             PredictedBox(ids[0], (3, 3, 8, 9), 0.25),
             PredictedBox(ids[1], (0, 0, 5, 5), 0.5, "Global Asymmetry")]
    breasts = [PredictedBreast("L", 0.7, 4, "B"), PredictedBreast("R", 0.125)]
    return build_model_sr("toy-model", "1.2", study.study_id, images, boxes, breasts)


@pytest.fixture(scope="module")
def model_file(model_sr, tmp_path_factory):
    path = tmp_path_factory.mktemp("model-sr") / "model.dcm"
    path.write_bytes(_bytes(model_sr))
    return path


def test_read_back_by_highdicom(model_sr, exam):
    sr = hd.sr.srread(io.BytesIO(_bytes(model_sr)))
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 3
    first = groups[0]
    assert first.roi.value.tolist() == [[1.5, 2.25], [10, 2.25], [10, 12], [1.5, 12],
                                        [1.5, 2.25]]
    measurement = first.get_measurements(name=codes.PROBABILITY_OF_CANCER)[0]
    assert measurement.value == pytest.approx(0.9)
    assert measurement.unit == codes.NO_UNITS
    assert first.finding_type == codes.FINDING_CODES["Mass"]
    assert groups[1].finding_type is None


def test_read_back_by_our_reader(model_sr, exam):
    _, images = exam
    report = read_model_sr(pydicom.dcmread(io.BytesIO(_bytes(model_sr))))
    assert (report.name, report.version) == ("toy-model", "1.2")
    assert report.form == "TID 1500 in Comprehensive SR"
    assert [(b.box, b.score, b.label) for b in report.boxes] == [
        ((1.5, 2.25, 10.0, 12.0), 0.9, "Mass"), ((3, 3, 8, 9), 0.25, None),
        ((0, 0, 5, 5), 0.5, "Global Asymmetry")]
    assert report.boxes[0].image_uid == str(images[0].SOPInstanceUID)
    breasts = {b.laterality: b for b in report.breasts}
    assert breasts["L"].score == 0.7 and breasts["L"].birads == 4 and breasts["L"].density == "B"
    assert breasts["R"].score == 0.125 and breasts["R"].birads is None
    assert report.problems == []


def test_identity_uids_and_determinism(model_sr, exam):
    study, images = exam
    series, sop = model_sr_uids("toy-model", "1.2", study.study_id)
    assert (model_sr.SeriesInstanceUID, model_sr.SOPInstanceUID) == (series, sop)
    assert model_sr.StudyInstanceUID == images[0].StudyInstanceUID
    assert model_sr.PatientID == images[0].PatientID
    assert not is_ground_truth_sr(sop, str(model_sr.StudyInstanceUID))
    other = model_sr_uids("toy-model", "1.3", study.study_id)
    assert other[0] != series and other[1] != sop
    again = build_model_sr("toy-model", "1.2", study.study_id, list(reversed(images)),
                           [PredictedBox(_ids(images)[0], (1.5, 2.25, 10.0, 12.0), 0.9, "Mass"),
                            PredictedBox(_ids(images)[0], (3, 3, 8, 9), 0.25),
                            PredictedBox(_ids(images)[1], (0, 0, 5, 5), 0.5,
                                         "Global Asymmetry")],
                           [PredictedBreast("L", 0.7, 4, "B"), PredictedBreast("R", 0.125)])
    assert _bytes(again) == _bytes(model_sr)


def test_exam_with_breast_scores_only(exam, tmp_path):
    study, images = exam
    sr = build_model_sr("toy-model", "1.2", study.study_id, images, [],
                        [PredictedBreast("L", 0.3)])
    path = tmp_path / "breasts.dcm"
    path.write_bytes(_bytes(sr))
    errors, _ = dciodvfy(path)
    assert errors == []
    report = read_model_sr(pydicom.dcmread(path))
    assert report.boxes == [] and [b.score for b in report.breasts] == [0.3]


def test_dciodvfy_clean(model_file):
    errors, warnings = dciodvfy(model_file)
    assert errors == []
    assert set(warnings) <= set(DICOMDIR_WARNINGS), warnings


@pytest.mark.slow
@pytest.mark.skipif(not pixelmed_available(), reason="java or PixelMed not installed")
def test_pixelmed_sr_validator(model_file):
    errors, warnings, text = pixelmed_sr(model_file)
    assert "Found Root Template TID_1500" in text
    assert errors == [], text
    for line in warnings:  # PixelMed's template tables, as for the ground-truth SR
        assert "Content Item not in template" in line, line


def test_codes_are_in_their_context_groups():
    assert codes.in_cid(("DCM", "111047"), 6048)
    assert codes.in_cid(("DCM", "111012"), 6048)
    assert codes.in_cid(("UCUM", "1"), 7181)


# --- foreign forms --------------------------------------------------------------------------


def test_orthanc_mammography_form_comprehensive_3d_shared_tracking_uid(exam):
    """As orthanc-mammography writes it: one tracking UID for every box, percent scores,
    no algorithm identification: the model is named by the tracking identifier's text."""
    _, images = exam
    shared = hd.sr.TrackingIdentifier(identifier="Orthanc Deep Learning for Mammography",
                                      uid="1.2.3.4.5")
    groups = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array([[x, y], [x + 4, y], [x + 4, y + 6], [x, y + 6], [x, y]],
                                      dtype=float),
                source_image=hd.sr.SourceImageForRegion.from_source_image(images[2])),
            tracking_identifier=shared,
            measurements=[hd.sr.Measurement(name=dcm_codes.DCM.ProbabilityOfCancer,
                                            value=value, unit=dcm_codes.UCUM.Percent)])
        for x, y, value in ((1, 2, 87.5), (10, 12, 30.0))
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.IMAGING_PROCEDURE, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(evidence=[images[2]], content=report, series_number=1,
                                 series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(),
                                 instance_number=1)
    read = read_model_sr(pydicom.dcmread(io.BytesIO(_bytes(sr))))
    assert read.form == "TID 1500 in Comprehensive 3D SR"
    assert read.name == "Orthanc Deep Learning for Mammography"
    assert [(b.box, b.score) for b in read.boxes] == [((1, 2, 5, 8), 0.875),
                                                     ((10, 12, 14, 18), 0.3)]
    assert {b.image_uid for b in read.boxes} == {str(images[2].SOPInstanceUID)}


def _item(value_type: str, concept: tuple[str, str, str], relationship: str = "CONTAINS",
          **attributes) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([_code(*concept)])
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _cad_sr(image: Dataset) -> Dataset:
    """A Mammography CAD SR (TID 4000) with two single image findings, built with pydicom."""
    ds = Dataset()
    ds.SOPClassUID = codes.MAMMOGRAPHY_CAD_SR
    ds.SOPInstanceUID = "1.2.3.9"
    ds.StudyInstanceUID = image.StudyInstanceUID
    ds.Modality = "SR"
    ds.ManufacturerModelName = "Vendor CAD"
    ds.SoftwareVersions = "7.1"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code("111036", "DCM",
                                                      "Mammography CAD Report")])
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID

    def finding(value: tuple[str, str, str], points: list[float], certainty: float,
                kind: str = "POLYLINE") -> Dataset:
        item = _item("CODE", ("111059", "DCM", "Single Image Finding"),
                     ConceptCodeSequence=DicomSequence([_code(*value)]))
        image_item = _item("IMAGE", ("111026", "DCM", "Image"), "SELECTED FROM",
                           ReferencedSOPSequence=DicomSequence([ref]))
        region = _item("SCOORD", ("111041", "DCM", "Outline"), "HAS PROPERTIES",
                       GraphicType=kind, GraphicData=points,
                       ContentSequence=DicomSequence([image_item]))
        center = _item("SCOORD", ("111010", "DCM", "Center"), "HAS PROPERTIES",
                       GraphicType="POINT", GraphicData=points[:2],
                       ContentSequence=DicomSequence([image_item]))
        unit = Dataset()
        unit.NumericValue = str(certainty)
        unit.MeasurementUnitsCodeSequence = DicomSequence([_code("%", "UCUM", "Percent")])
        score = _item("NUM", ("111012", "DCM", "Certainty of Finding"), "HAS PROPERTIES",
                      MeasuredValueSequence=DicomSequence([unit]))
        name = _item("TEXT", ("111001", "DCM", "Algorithm Name"), "INFERRED FROM",
                     TextValue="MassFinder")
        version = _item("TEXT", ("111003", "DCM", "Algorithm Version"), "INFERRED FROM",
                        TextValue="3.0")
        item.ContentSequence = DicomSequence([name, version, center, region, score])
        return item

    summary = _item("CODE", ("111017", "DCM", "CAD Processing and Findings Summary"),
                    ConceptCodeSequence=DicomSequence([_code("111242", "DCM",
                                                             "All algorithms succeeded; "
                                                             "with findings")]))
    summary.ContentSequence = DicomSequence([
        finding(("129788004", "SCT", "Mammographic breast mass"),
                [1, 1, 9, 1, 9, 7, 1, 7, 1, 1], 62.0),
        finding(("129769006", "SCT", "Calcification Cluster"), [5, 5, 8, 5], 20.0,
                kind="CIRCLE"),
    ])
    ds.ContentSequence = DicomSequence([summary])
    return ds


def test_mammography_cad_sr_read_with_pydicom(exam):
    _, images = exam
    ds = _cad_sr(images[0])
    with pytest.raises(Exception):  # noqa: B017 - whatever highdicom raises: it cannot read TID 4000
        hd.sr.ComprehensiveSR.from_dataset(ds)
    report = read_model_sr(ds)
    assert report.form == "Mammography CAD SR (TID 4000)"
    assert (report.name, report.version) == ("MassFinder", "3.0")
    assert [(b.box, b.score, b.label) for b in report.boxes] == [
        ((1, 1, 9, 7), pytest.approx(0.62), "Mass"),
        ((2, 2, 8, 8), pytest.approx(0.2), "Suspicious Calcification")]
    assert report.problems == []


def test_unreadable_regions_are_reported(exam):
    _, images = exam
    ds = _cad_sr(images[0])
    outline = ds.ContentSequence[0].ContentSequence[0].ContentSequence[3]
    outline.GraphicType, outline.GraphicData = "POINT", [1, 1]
    report = read_model_sr(ds)
    assert len(report.boxes) == 1
    assert report.problems and "not a region" in report.problems[0]


def test_model_identity_fallbacks(exam):
    _, images = exam
    ds = _cad_sr(images[0])
    for finding in ds.ContentSequence[0].ContentSequence:
        finding.ContentSequence = DicomSequence(list(finding.ContentSequence)[2:])
    assert model_identity(ds) == ("Vendor CAD", "7.1")


def test_read_from_dicom_json_as_from_the_dataset(model_sr, exam):
    """WADO-RS metadata (DICOM JSON) reads to the same report as the Part-10 object."""
    from converter.annotations.model_sr import reference_boxes, reference_breasts
    from converter.annotations.sr import build_sr

    ds = pydicom.dcmread(io.BytesIO(_bytes(model_sr)))
    from_json = read_model_sr(ds.to_json_dict())
    assert from_json == read_model_sr(ds)
    study, images = exam
    truth = pydicom.dcmread(io.BytesIO(_bytes(build_sr(study, images))))
    assert reference_boxes(truth.to_json_dict()) == reference_boxes(truth)
    assert reference_breasts(truth.to_json_dict()) == reference_breasts(truth)
    assert {b.laterality for b in reference_breasts(truth)} == {"L", "R"}
    assert len(reference_boxes(truth)[0]) == sum(len(i.findings) for i in study.images)
