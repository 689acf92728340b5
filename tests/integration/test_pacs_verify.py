"""``verify``: the fetch over DICOMweb returns Datasets per study; the checks catch missing
instances, unknown studies and patients shared between studies. The release each output was
converted from is the ``src`` (verify rebuilds its annotation CSVs from the PACS)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from pacs_testdata import hex_id, make_output
from pacs_tools import Pacs
from server.client import OrthancClient, dicomweb_client
from server.errors import ServerError
from server.transfer.load import load
from converter.manifest import read_manifest, write_manifest
from server.transfer.verify import describe, fetch_study, verify

pytestmark = pytest.mark.integration


def test_fetch_study_returns_datasets(pacs: Pacs) -> None:
    study = pacs.studies[0]
    objects = fetch_study(dicomweb_client(pacs.connection), study.study_uid)
    assert objects.patient_ids == {study.patient_id}
    assert objects.studies_of_patient == {study.patient_id: {study.study_uid}}
    assert {ds.SOPInstanceUID for ds in objects.mg_headers} == set(study.mg_uids.values())
    assert all(
        ds.ImageLaterality in ("L", "R") and ds.ViewPosition in ("CC", "MLO")
        for ds in objects.mg_headers
    )
    assert [ds.SOPInstanceUID for ds in objects.sr] == [study.sr_uid]
    assert [ds.SOPInstanceUID for ds in objects.seg] == [study.seg_uid]
    assert objects.seg[0].PixelData  # retrieved whole, not just metadata


def test_verify_session_output_is_clean(pacs: Pacs) -> None:
    seen: list[int] = []
    result = verify(
        pacs.release, pacs.out, pacs.connection, progress=lambda done, total: seen.append(done)
    )
    assert result.ok, result.problems
    assert (result.studies, result.instances) == (4, 24)
    assert seen == list(range(1, 4 + 24 + 1))  # studies, then the content of each instance


def test_verify_reports_unserved_instances_and_studies(pacs: Pacs, tmp_path: Path) -> None:
    entries = read_manifest(pacs.out)
    first = entries[0]
    extra = replace(first, sop_instance_uid="1.2.826.0.1.3680043.10.1", path="images/extra.dcm")
    ghost = replace(
        first,
        study_id=hex_id("ghost"),
        study_uid="1.2.826.0.1.3680043.10.2",
        sop_instance_uid="1.2.826.0.1.3680043.10.3",
    )
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, [*entries, extra, ghost])
    result = verify(pacs.release, out, pacs.connection)
    messages = [describe(p) for p in result.problems]
    assert any("4 MG instance(s) in the PACS, manifest lists 5" in m for m in messages), messages
    assert any("images/extra.dcm" in m and "not served" in m for m in messages), messages
    assert any(m.startswith(f"study {hex_id('ghost')}: not in the PACS") for m in messages), (
        messages
    )
    assert len(messages) == 3


def test_verify_reports_a_patient_shared_by_two_studies(pacs: Pacs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    output = make_output(out, n_studies=1, prefix="shared-patient")
    study = output.studies[0]
    assert load(out, pacs.connection).ok
    # a real converted image of an exam loaded nowhere, re-filed under this study's patient
    spare = tmp_path / "spare"
    other = make_output(spare, n_studies=1, prefix="intruder").studies[0]
    entry = next(e for e in read_manifest(spare) if e.sop_instance_uid == other.mg_uids["L", "CC"])
    intruder = pydicom.dcmread(entry.file(spare))
    assert intruder.PatientID != study.patient_id
    intruder.PatientID = study.patient_id
    intruder.save_as(entry.file(spare), enforce_file_format=True)
    dicomweb_client(pacs.connection).store_instances([pydicom.dcmread(entry.file(spare))])
    result = verify(output.release, out, pacs.connection)
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.study_id == study.study_id
    assert f"patient {study.patient_id} also holds studies" in problem.message
    assert str(intruder.StudyInstanceUID) in problem.message


def test_verify_needs_the_release_folder(pacs: Pacs, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="not a folder"):
        verify(tmp_path / "nowhere", pacs.out, pacs.connection)


def test_verify_reads_only_the_manifest(pacs: Pacs, tmp_path: Path) -> None:
    """The converted files need not be present: verify compares the PACS with manifest.csv."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("manifest.csv", "manifest.json"):
        shutil.copy(pacs.out / name, out / name)
    assert verify(pacs.release, out, pacs.connection).ok


def test_verify_proves_the_whole_release(pacs: Pacs, tmp_path: Path) -> None:
    """A manifest cut at an exam boundary, its record cut with it, passes every PACS check:
    verify still names each exam of the release's CSVs that the manifest lacks."""
    entries = read_manifest(pacs.out)
    kept = {e.study_id for e in entries[:1]}
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, [e for e in entries if e.study_id in kept])
    result = verify(pacs.release, out, pacs.connection)
    lacking = {p.study_id for p in result.problems if p.code == "release-not-converted"}
    assert lacking == {e.study_id for e in entries} - kept and lacking
    assert {p.code for p in result.problems} == {"release-not-converted"}
    assert all(p.file == "breast-level_annotations.csv" and p.row for p in result.problems)


def test_a_conflicting_patient_id_is_a_difference_not_an_abort(pacs: Pacs,
                                                                tmp_path: Path) -> None:
    """An MG stored into an exam under another PatientID (Orthanc accepts it, and then
    answers the exam's metadata 404): verify reports the exam and checks the rest."""
    out = tmp_path / "out"
    output = make_output(out, n_studies=2, prefix="conflicting-patient")
    assert load(out, pacs.connection).ok
    study = output.studies[0]
    entry = next(e for e in read_manifest(out) if e.sop_instance_uid == study.mg_uids["L", "CC"])
    intruder = pydicom.dcmread(entry.file(out))
    intruder.PatientID = "SOMEONE-ELSE"
    intruder.SOPInstanceUID = "1.2.826.0.1.3680043.10.99.1"
    dicomweb_client(pacs.connection).store_instances([intruder])
    client = OrthancClient.connect(pacs.connection)
    try:
        result = verify(output.release, out, pacs.connection)
    finally:  # the session's PACS serves that exam again (other tests read every exam)
        held = client.instance_index({intruder.StudyInstanceUID})
        client.delete_instance(held[intruder.SOPInstanceUID].orthanc_id)
    about = {p.study_id for p in result.problems}
    assert about == {study.study_id}, result.problems
    assert "pacs-patient-id" in {p.code for p in result.problems}


def test_verify_reports_a_seg_that_disagrees_with_its_sr(pacs: Pacs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    output = make_output(out, n_studies=1, prefix="bad-seg")
    study = output.studies[0]
    entry = next(e for e in read_manifest(out) if e.sop_instance_uid == study.seg_uid)
    seg = pydicom.dcmread(entry.file(out))
    seg.PixelData = bytes(b ^ 0xFF for b in seg.PixelData)  # every mask bit inverted
    seg.save_as(entry.file(out), enforce_file_format=True)
    digest = hashlib.sha256(entry.file(out).read_bytes()).hexdigest()  # the manifest follows
    write_manifest(out, [replace(e, sha256=digest) if e == entry else e
                         for e in read_manifest(out)])
    assert load(out, pacs.connection).ok
    result = verify(output.release, out, pacs.connection)
    assert {p.code for p in result.problems} == {"pacs-sr-seg"}
    assert all(p.study_id == study.study_id for p in result.problems)
