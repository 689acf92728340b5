"""The DICOMweb side of the PACS through dicomweb-client, and HTTP authentication.

QIDO filters use exact values of letters, digits, dots and hyphens only, and includefield
is repeated (Debian's Orthanc does not URL-decode ``*``, ``^`` or ``,``).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from pacs_testdata import make_output
from pacs_tools import Pacs
from server.client import dicomweb_client
from converter.manifest import read_manifest

pytestmark = pytest.mark.integration

FRAME_MEDIA_TYPES = (("application/octet-stream", "1.2.840.10008.1.2.1"),)


@pytest.fixture(scope="module")
def web(pacs: Pacs):
    return dicomweb_client(pacs.connection)


def answers(results: list[dict]) -> list[Dataset]:
    """DICOM JSON answers as Datasets (bulk data URIs left unresolved)."""
    return [Dataset.from_json(r, bulk_data_uri_handler=lambda tag, vr, uri: None) for r in results]


def file_of(pacs: Pacs, sop_uid: str) -> Dataset:
    entry = next(e for e in read_manifest(pacs.out) if e.sop_instance_uid == sop_uid)
    return pydicom.dcmread(entry.file(pacs.out))


# --- QIDO ---------------------------------------------------------------------------------


def test_qido_study_by_uid_with_includefields(pacs: Pacs, web) -> None:
    study = pacs.studies[0]
    found = answers(
        web.search_for_studies(
            search_filters={"StudyInstanceUID": study.study_uid},
            fields=["StudyDescription", "PatientAge", "ModalitiesInStudy"],
        )
    )
    assert len(found) == 1
    assert found[0].PatientID == study.patient_id
    assert found[0].StudyDescription == f"VinDr-Mammo-{study.split}"
    assert str(found[0].PatientAge).endswith("Y")  # an includefield outside the defaults


def test_qido_study_by_patient_id(pacs: Pacs, web) -> None:
    study = pacs.studies[1]
    found = answers(web.search_for_studies(search_filters={"PatientID": study.patient_id}))
    assert [ds.StudyInstanceUID for ds in found] == [study.study_uid]


@pytest.mark.parametrize("split", ["training", "test"])
def test_qido_study_by_description(pacs: Pacs, web, split: str) -> None:
    found = answers(
        web.search_for_studies(search_filters={"StudyDescription": f"VinDr-Mammo-{split}"})
    )
    uids = {ds.StudyInstanceUID for ds in found}
    assert {s.study_uid for s in pacs.studies if s.split == split} <= uids
    assert not {s.study_uid for s in pacs.studies if s.split != split} & uids
    assert {ds.StudyDescription for ds in found} == {f"VinDr-Mammo-{split}"}


@pytest.mark.parametrize(("modality", "count"), [("MG", 4), ("SR", 1), ("SEG", 1)])
def test_qido_series_by_modality(pacs: Pacs, web, modality: str, count: int) -> None:
    study = pacs.studies[2]
    found = answers(web.search_for_series(study.study_uid, search_filters={"Modality": modality}))
    assert [ds.Modality for ds in found] == [modality]
    assert int(found[0].NumberOfSeriesRelatedInstances) == count


@pytest.mark.parametrize(("laterality", "view"), [("R", "CC"), ("L", "MLO")])
def test_qido_instance_by_laterality_and_view(pacs: Pacs, web, laterality: str, view: str) -> None:
    study = pacs.studies[3]
    found = answers(
        web.search_for_instances(
            study.study_uid,
            search_filters={"ImageLaterality": laterality, "ViewPosition": view},
            fields=["ImageLaterality", "ViewPosition"],
        )
    )
    assert [ds.SOPInstanceUID for ds in found] == [study.mg_uids[(laterality, view)]]
    assert (found[0].ImageLaterality, found[0].ViewPosition) == (laterality, view)


# --- WADO-RS ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["MG", "SR", "SEG"])
def test_wado_retrieve_instance(pacs: Pacs, web, kind: str) -> None:
    study = pacs.studies[0]
    entry = next(
        e for e in read_manifest(pacs.out) if e.study_uid == study.study_uid and e.kind == kind
    )
    got = web.retrieve_instance(entry.study_uid, entry.series_uid, entry.sop_instance_uid)
    original = pydicom.dcmread(entry.file(pacs.out))
    assert got == original


def test_wado_metadata(pacs: Pacs, web) -> None:
    study = pacs.studies[1]
    metadata = answers(web.retrieve_study_metadata(study.study_uid))
    assert {ds.SOPInstanceUID for ds in metadata} == {
        *study.mg_uids.values(),
        study.sr_uid,
        study.seg_uid,
    }
    mg = [ds for ds in metadata if ds.Modality == "MG"]
    assert {(ds.ImageLaterality, ds.ViewPosition) for ds in mg} == set(study.mg_uids)
    for ds in mg:  # pixel module kept ("Full")
        original = file_of(pacs, ds.SOPInstanceUID)
        assert (ds.Rows, ds.Columns) == (original.Rows, original.Columns)
        assert ds.PhotometricInterpretation == original.PhotometricInterpretation


def test_wado_frames(pacs: Pacs, web) -> None:
    study = pacs.studies[2]
    uid = study.mg_uids[("R", "MLO")]
    original = file_of(pacs, uid)
    frames = web.retrieve_instance_frames(
        study.study_uid,
        original.SeriesInstanceUID,
        uid,
        frame_numbers=[1],
        media_types=FRAME_MEDIA_TYPES,
    )
    assert frames == [original.PixelData]


# --- STOW-RS ------------------------------------------------------------------------------


def test_stow_new_instance(pacs: Pacs, web, tmp_path: Path) -> None:
    """A real converted image of an exam loaded nowhere else."""
    study = make_output(tmp_path, n_studies=1, prefix="stow").studies[0]
    uid = study.mg_uids["L", "CC"]
    entry = next(e for e in read_manifest(tmp_path) if e.sop_instance_uid == uid)
    ds = pydicom.dcmread(entry.file(tmp_path))
    assert not web.search_for_instances(ds.StudyInstanceUID)
    answer = web.store_instances([ds])
    assert not answer.get("FailedSOPSequence")
    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [
        ds.SOPInstanceUID
    ]
    found = answers(web.search_for_instances(ds.StudyInstanceUID))
    assert [f.SOPInstanceUID for f in found] == [ds.SOPInstanceUID]
    assert web.retrieve_instance(entry.study_uid, entry.series_uid, entry.sop_instance_uid) == ds


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/system", "/dicom-web/studies", "/instances"])
@pytest.mark.parametrize(
    "auth", [None, ("tester", "wrong-password")], ids=["no-credentials", "wrong-password"]
)
def test_requests_without_valid_credentials_get_401(pacs: Pacs, route: str, auth) -> None:
    response = requests.get(pacs.connection.url + route, auth=auth, timeout=10)
    assert response.status_code == 401


def test_requests_with_credentials_succeed(pacs: Pacs) -> None:
    response = pacs.connection.session().get(pacs.connection.url + "/dicom-web/studies", timeout=10)
    assert response.status_code == 200
