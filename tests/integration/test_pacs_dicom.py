"""The DIMSE side of the PACS, with dcmtk (``/usr/bin/...``) and pynetdicom alike.

C-ECHO, C-FIND at the four levels, C-GET and C-MOVE of a study (objects come back equal to
what was loaded), and association refusals for unknown or wrong AE titles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    PatientRootQueryRetrieveInformationModelFind,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacs_testdata import LoadedStudy
from pacs_tools import (
    DCMTK_AET,
    PYNETDICOM_AET,
    SERVER_AET,
    Pacs,
    c_find_answers,
    dcmtk,
    files_read,
    run,
)
from converter.manifest import read_manifest

pytestmark = pytest.mark.integration

STORAGE_CLASSES = (
    DigitalMammographyXRayImageStorageForPresentation,
    ComprehensiveSRStorage,
    SegmentationStorage,
)
TOOLS = ("dcmtk", "pynetdicom")


# --- helpers ------------------------------------------------------------------------------


def dcmtk_address(pacs: Pacs, calling: str = DCMTK_AET, called: str = SERVER_AET) -> list[str]:
    return ["-aet", calling, "-aec", called, "127.0.0.1", str(pacs.dicom_port)]


def pynetdicom_associate(
    pacs: Pacs,
    contexts: tuple[Any, ...],
    calling: str = PYNETDICOM_AET,
    called: str = SERVER_AET,
    **kwargs: Any,
):
    ae = AE(ae_title=calling)
    for context in contexts:
        ae.add_requested_context(
            context, ExplicitVRLittleEndian if context in STORAGE_CLASSES else None
        )
    return ae.associate("127.0.0.1", pacs.dicom_port, ae_title=called, **kwargs)


def originals(pacs: Pacs, study: LoadedStudy) -> dict[str, Dataset]:
    """The loaded files of ``study``, by SOP Instance UID."""
    return {
        e.sop_instance_uid: pydicom.dcmread(e.file(pacs.out))
        for e in read_manifest(pacs.out)
        if e.study_uid == study.study_uid
    }


def assert_same_objects(received: list[Dataset], expected: dict[str, Dataset]) -> None:
    """Same SOP Instance UIDs, and each dataset equal (pixel data included) to the loaded one."""
    got = {str(ds.SOPInstanceUID): ds for ds in received}
    assert sorted(got) == sorted(expected)
    for uid, ds in got.items():
        original = expected[uid]
        assert ds == original, f"{uid} differs from the loaded object"
        if "PixelData" in original:
            assert ds.PixelData == original.PixelData


def find(tool: str, pacs: Pacs, level: str, query: dict[str, str], tmp_path: Path) -> list[Dataset]:
    """C-FIND with ``tool``; patient root at PATIENT level, study root otherwise."""
    root = "patient" if level == "PATIENT" else "study"
    if tool == "dcmtk":
        args = [
            dcmtk("findscu"),
            "-P" if root == "patient" else "-S",
            "-k",
            f"QueryRetrieveLevel={level}",
        ]
        for key, value in query.items():
            args += ["-k", f"{key}={value}" if value else key]
        proc = run(args + ["-X", "-od", str(tmp_path)] + dcmtk_address(pacs))
        assert proc.returncode == 0, proc.stderr
        return [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    model = (
        PatientRootQueryRetrieveInformationModelFind
        if root == "patient"
        else StudyRootQueryRetrieveInformationModelFind
    )
    assoc = pynetdicom_associate(pacs, (model,))
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in query.items():
        setattr(ds, key, value)
    return c_find_answers(assoc, ds, model)


def values(answers: list[Dataset], keyword: str) -> list[str]:
    return sorted(str(ds.get(keyword, "")) for ds in answers)


# --- C-ECHO and refusals ------------------------------------------------------------------


def test_echo_dcmtk(pacs: Pacs) -> None:
    proc = run([dcmtk("echoscu")] + dcmtk_address(pacs))
    assert proc.returncode == 0, proc.stderr


def test_echo_pynetdicom(pacs: Pacs) -> None:
    assoc = pynetdicom_associate(pacs, (Verification,))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize(
    ("calling", "called", "reason"),
    [
        ("STRANGER", SERVER_AET, "Calling AE Title Not Recognized"),
        (DCMTK_AET, "NOT-THE-PACS", "Called AE Title Not Recognized"),
    ],
    ids=["unknown-calling-aet", "wrong-called-aet"],
)
def test_association_refused_dcmtk(pacs: Pacs, calling: str, called: str, reason: str) -> None:
    proc = run([dcmtk("echoscu")] + dcmtk_address(pacs, calling, called))
    assert proc.returncode != 0
    assert reason in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("calling", "called"),
    [("STRANGER", SERVER_AET), (PYNETDICOM_AET, "NOT-THE-PACS")],
    ids=["unknown-calling-aet", "wrong-called-aet"],
)
def test_association_refused_pynetdicom(pacs: Pacs, calling: str, called: str) -> None:
    assoc = pynetdicom_associate(pacs, (Verification,), calling=calling, called=called)
    assert assoc.is_rejected
    assert not assoc.is_established


@pytest.mark.parametrize("calling", [DCMTK_AET, "VINDR-LOADER"])
def test_no_configured_aet_may_store(pacs: Pacs, calling: str) -> None:
    """DCMTK may find/get/move only; the store-enabled AE title earlier versions registered
    is gone (a C-STORE load registers its own for its run: test_pacs_exposure.py)."""
    path = next(e.file(pacs.out) for e in read_manifest(pacs.out) if e.kind == "MG")
    proc = run([dcmtk("storescu"), "-R"] + dcmtk_address(pacs, calling) + [str(path)])
    assert proc.returncode != 0, proc.stdout + proc.stderr


# --- C-FIND -------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOLS)
def test_find_patient_by_patient_id(pacs: Pacs, tool: str, tmp_path: Path) -> None:
    study = pacs.studies[0]
    answers = find(
        tool, pacs, "PATIENT", {"PatientID": study.patient_id, "PatientName": ""}, tmp_path
    )
    assert values(answers, "PatientID") == [study.patient_id]


@pytest.mark.parametrize("tool", TOOLS)
def test_find_study_by_uid(pacs: Pacs, tool: str, tmp_path: Path) -> None:
    study = pacs.studies[1]
    query = {"StudyInstanceUID": study.study_uid, "PatientID": "", "StudyDescription": ""}
    answers = find(tool, pacs, "STUDY", query, tmp_path)
    assert len(answers) == 1
    assert answers[0].PatientID == study.patient_id
    assert answers[0].StudyDescription == f"VinDr-Mammo-{study.split}"


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("split", ["training", "test"])
def test_find_study_by_description(pacs: Pacs, tool: str, split: str, tmp_path: Path) -> None:
    query = {"StudyDescription": f"VinDr-Mammo-{split}", "StudyInstanceUID": ""}
    answers = find(tool, pacs, "STUDY", query, tmp_path)
    found = set(values(answers, "StudyInstanceUID"))
    ours = {s.study_uid: s.split for s in pacs.studies}
    assert {uid for uid, s in ours.items() if s == split} <= found
    assert not {uid for uid, s in ours.items() if s != split} & found
    assert set(values(answers, "StudyDescription")) == {f"VinDr-Mammo-{split}"}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(("modality", "count"), [("MG", 4), ("SR", 1), ("SEG", 1)])
def test_find_series_by_modality(
    pacs: Pacs, tool: str, modality: str, count: int, tmp_path: Path
) -> None:
    study = pacs.studies[0]
    query = {
        "StudyInstanceUID": study.study_uid,
        "Modality": modality,
        "SeriesInstanceUID": "",
        "NumberOfSeriesRelatedInstances": "",
    }
    answers = find(tool, pacs, "SERIES", query, tmp_path)
    assert values(answers, "Modality") == [modality]
    assert int(answers[0].NumberOfSeriesRelatedInstances) == count


def test_viewers_series_queries_read_no_file(pacs: Pacs, tmp_path: Path) -> None:
    """The series-level keys of dcmjs-dimse's and many viewers' C-FIND (SeriesDate and
    SeriesDescription among them) and OHIF's series QIDO-RS are answered from the index: the
    MG series carry SeriesDescription and an (empty) SeriesDate, so Orthanc opens no file."""
    study = pacs.studies[0]
    before = files_read(pacs)
    query = {"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": "", "Modality": "",
             "SeriesNumber": "", "SeriesDate": "", "SeriesDescription": "",
             "NumberOfSeriesRelatedInstances": ""}
    answers = find("pynetdicom", pacs, "SERIES", query, tmp_path)
    mg = [ds for ds in answers if ds.Modality == "MG"]
    assert sorted(str(ds.SeriesDescription) for ds in mg) == ["L CC", "L MLO", "R CC", "R MLO"] \
        or len(mg) < 4  # one series per image unless the release groups them
    assert all(str(ds.SeriesDescription) for ds in answers)
    series = pacs.front().session().get(
        f"{pacs.front().url}/dicom-web/studies/{study.study_uid}/series",
        params={"includefield": ["0008103E", "00080021", "00200011"]}, timeout=60)
    assert series.status_code == 200 and len(series.json()) == len(answers)
    assert files_read(pacs) == before


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(("laterality", "view"), [("L", "CC"), ("R", "MLO")])
def test_find_image_by_laterality_and_view(
    pacs: Pacs, tool: str, laterality: str, view: str, tmp_path: Path
) -> None:
    study = pacs.studies[2]
    query = {
        "StudyInstanceUID": study.study_uid,
        "ImageLaterality": laterality,
        "ViewPosition": view,
        "SOPInstanceUID": "",
    }
    answers = find(tool, pacs, "IMAGE", query, tmp_path)
    assert values(answers, "SOPInstanceUID") == [study.mg_uids[(laterality, view)]]
    assert values(answers, "ImageLaterality") == [laterality]


# --- C-GET and C-MOVE ---------------------------------------------------------------------


def test_get_study_dcmtk(pacs: Pacs, tmp_path: Path) -> None:
    study = pacs.studies[0]
    args = [
        dcmtk("getscu"),
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study.study_uid}",
    ]
    proc = run(args + ["-od", str(tmp_path)] + dcmtk_address(pacs))
    assert proc.returncode == 0, proc.stderr
    received = [pydicom.dcmread(p) for p in tmp_path.iterdir()]
    assert_same_objects(received, originals(pacs, study))


def test_get_study_pynetdicom(pacs: Pacs) -> None:
    study = pacs.studies[1]
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    roles = [build_role(cls, scp_role=True) for cls in STORAGE_CLASSES]
    assoc = pynetdicom_associate(
        pacs,
        (StudyRootQueryRetrieveInformationModelGet, *STORAGE_CLASSES),
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_uid
    statuses = [
        status.Status
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert_same_objects(received, originals(pacs, study))


@pytest.mark.parametrize("tool", TOOLS)
def test_move_study_to_storage_scp(pacs: Pacs, tool: str) -> None:
    study = pacs.studies[3]
    pacs.scp.take()
    if tool == "dcmtk":
        args = [
            dcmtk("movescu"),
            "-S",
            "-aem",
            PYNETDICOM_AET,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study.study_uid}",
        ]
        proc = run(args + dcmtk_address(pacs))
        assert proc.returncode == 0, proc.stderr
    else:
        assoc = pynetdicom_associate(pacs, (StudyRootQueryRetrieveInformationModelMove,))
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study.study_uid
        model = StudyRootQueryRetrieveInformationModelMove
        statuses = [status.Status for status, _ in assoc.send_c_move(query, PYNETDICOM_AET, model)]
        assoc.release()
        assert statuses[-1] == 0x0000
    assert_same_objects(pacs.scp.take(), originals(pacs, study))
