"""QIDO-RS from the index (server.front.plugin.qido, inside Orthanc, through the front door
with a read-only account) against Orthanc's own DICOMweb plugin (its own port, the admin).

Each search is sent to both: the front must find exactly the same studies, series or
instances, and every attribute both return must have the same value. The searches answered
from the index must not make Orthanc read a DICOM file (no W001 in its log).
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from pacs_tools import Pacs, files_read
from server.client import Connection, dicomweb_client
from server.front.plugin import qido

pytestmark = pytest.mark.integration

PARENT_OPTIONAL = {"SeriesDescription", "TimezoneOffsetFromUTC",
                   "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"}
UID_OF = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}


@dataclass(frozen=True)
class Front:
    """The front door as the reader sees it, and what Orthanc's index holds."""

    url: str
    auth: str
    index: qido.IndexTags

    def get(self, target: str) -> tuple[int, dict, list]:
        return _get(self.url, target, self.auth)


def _basic(connection: Connection) -> str:
    token = f"{connection.username}:{connection.password}".encode()
    return "Basic " + base64.b64encode(token).decode()


@pytest.fixture(scope="module")
def indexed(pacs: Pacs, orthanc_version: tuple[int, ...]) -> Front:
    index = qido.IndexTags.from_system(pacs.client.session.get(
        pacs.client.url + "/system", timeout=10).json())
    if index is None:
        pytest.skip(f"Orthanc {orthanc_version} does not list its index (needs >= 1.11)")
    front = pacs.front()
    return Front(front.url, _basic(front), index)


def _get(base: str, target: str, auth: str | None = None) -> tuple[int, dict, list]:
    """GET ``target`` as written (no re-encoding), JSON answer."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {"Accept": "application/dicom+json"}
    if auth:
        headers["Authorization"] = auth
    conn.request("GET", parts.path + target, headers=headers)
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    found = json.loads(body) if answer.status == 200 and body.strip() else []
    return answer.status, dict(answer.getheaders()), found


def _plugin(pacs: Pacs, target: str) -> list:
    status, _, items = _get(pacs.connection.url, target, _basic(pacs.connection))
    assert status == 200, target
    return items


def _values(element: dict) -> list:
    return [str(v) if not isinstance(v, dict) else v for v in element.get("Value", [])]


def _searches(pacs: Pacs) -> list[str]:
    study = pacs.studies[0]
    return [
        "/dicom-web/studies",
        f"/dicom-web/studies?PatientID={study.patient_id}",
        f"/dicom-web/studies?StudyInstanceUID={study.study_uid}",
        "/dicom-web/studies?StudyDescription=VinDr-Mammo-test",
        "/dicom-web/studies?PatientID=VINDR-*&limit=2&offset=1",
        "/dicom-web/studies?limit=101&offset=0&includefield=00081030&includefield=00101010",
        "/dicom-web/studies?ModalitiesInStudy=SEG",
        "/dicom-web/series?Modality=SR",
        "/dicom-web/series?Modality=MG&StudyDescription=VinDr-Mammo-training",
        f"/dicom-web/studies/{study.study_uid}/series",
        f"/dicom-web/studies/{study.study_uid}/instances",
        "/dicom-web/instances?ImageLaterality=L&ViewPosition=CC",
        "/dicom-web/instances?ImageLaterality=R&ViewPosition=MLO&includefield=PatientAge",
        f"/dicom-web/instances?StudyInstanceUID={study.study_uid}&ImageLaterality=L",
    ]


def test_same_answers_as_the_plugin_without_reading_files(indexed: Front, pacs: Pacs) -> None:
    before = files_read(pacs)
    answers = {target: indexed.get(target) for target in _searches(pacs)}
    assert files_read(pacs) == before  # no DICOM file read: everything came from the index
    for target, (status, headers, ours) in answers.items():
        assert status == 200 and headers["Content-Type"] == "application/dicom+json", target
        theirs = _plugin(pacs, target)  # (the plugin itself reads files: W001)
        level = target.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        key = UID_OF[level]
        if "limit=" not in target:
            assert sorted(i[key]["Value"][0] for i in ours) == sorted(
                i[key]["Value"][0] for i in theirs), target
        else:
            assert len(ours) == len(theirs), target
        by_uid = {i[key]["Value"][0]: i for i in theirs}
        ours_loaded = {study.study_uid for study in pacs.studies}
        for item in ours:
            other = by_uid.get(item[key]["Value"][0])
            if other is None:  # paging may pick other items than the plugin's order
                continue
            if item["0020000D"]["Value"][0] not in ours_loaded:
                # Other tests file studies under a patient whose record names someone else
                # (test_pacs_verify): the index answers its patient record, the plugin
                # the file's own PatientName. Values are compared on our exams.
                continue
            for tag, element in item.items():
                if tag in other and tag != "00081190":  # RetrieveURL: each server's own
                    assert element["vr"] == other[tag]["vr"], (target, tag)
                    assert _values(element) == _values(other[tag]), (target, tag)
            # The plugin also returns optional attributes of the levels above (read from the
            # files); the index answers those only when named (server.qido.ALWAYS_PRESENT).
            missing = {qido.dictionary_keyword(int(t, 16)) for t in set(other) - set(item)}
            assert missing <= PARENT_OPTIONAL, (target, missing)


def test_filters_on_laterality_and_view_are_exact(indexed: Front, pacs: Pacs) -> None:
    status, _, found = indexed.get("/dicom-web/instances?ImageLaterality=L&ViewPosition=CC")
    assert status == 200
    expected = {s.mg_uids[("L", "CC")] for s in pacs.studies if ("L", "CC") in s.mg_uids}
    got = {i["00080018"]["Value"][0] for i in found}
    assert expected <= got  # other tests may have added images; ours are all there
    for item in found:
        assert item["00200062"]["Value"] == ["L"] and item["00185101"]["Value"] == ["CC"]


def test_retrieve_urls_point_at_the_front(indexed: Front, pacs: Pacs) -> None:
    study = pacs.studies[0]
    _, _, found = indexed.get(f"/dicom-web/studies/{study.study_uid}/series")
    for item in found:
        url = item["00081190"]["Value"][0]
        assert url.startswith(indexed.url + "/dicom-web/studies/" + study.study_uid + "/series/")


def test_searches_outside_the_index_go_to_the_plugin(indexed: Front, pacs: Pacs) -> None:
    """An attribute the index does not hold is never dropped: the plugin answers."""
    target = "/dicom-web/instances?PatientOrientation=A%5CR"  # not an indexed attribute
    assert qido.plan(qido.parse("/instances", "PatientOrientation=A%5CR"),
                     indexed.index) is None
    status, _, ours = indexed.get(target)
    assert status == 200
    assert len(ours) == len(_plugin(pacs, "/dicom-web/instances?PatientOrientation=A\\R"))


def test_bad_searches_are_refused_with_a_reason(indexed: Front) -> None:
    for target in ("/dicom-web/studies?NoSuchAttribute=1", "/dicom-web/studies?limit=-1",
                   "/dicom-web/studies?PatientID=a&PatientID=b"):
        status, _, _ = indexed.get(target)
        assert status == 400, target


def test_fuzzy_matching_is_literal_with_a_warning(indexed: Front, pacs: Pacs) -> None:
    study = pacs.studies[0]
    status, headers, found = indexed.get(
        f"/dicom-web/studies?PatientID={study.patient_id}&fuzzymatching=true")
    assert status == 200 and len(found) == 1
    assert "fuzzymatching" in headers["Warning"]


def test_dicomweb_client_searches_through_the_front(indexed: Front, pacs: Pacs) -> None:
    client = dicomweb_client(pacs.front())
    study = pacs.studies[0]
    studies = client.search_for_studies(search_filters={"PatientID": study.patient_id})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study.study_uid]
    series = client.search_for_series(study.study_uid)
    assert {s["00080060"]["Value"][0] for s in series} >= {"MG"}
    left_cc = client.search_for_instances(
        search_filters={"ImageLaterality": "L", "ViewPosition": "CC"}, fields=["PatientAge"])
    assert left_cc and all(i["00200062"]["Value"] == ["L"] for i in left_cc)
    wild = client.search_for_studies(search_filters={"PatientID": "VINDR-*"}, limit=2)
    assert len(wild) == 2
