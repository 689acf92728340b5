"""Check what the PACS serves over DICOMweb against the converted folder and the release.

Two separate halves:

- **fetch** (:func:`fetch_study`, :func:`fetch_studies`): QIDO-RS and WADO-RS through
  ``dicomweb-client`` give, per study, its PatientIDs, the instances QIDO lists, the MG
  headers (WADO-RS metadata) and the full SR and SEG objects (WADO-RS retrieve), as
  pydicom Datasets in a :class:`StudyObjects`.
- **compare**: :func:`check_study` (instance counts per kind and UIDs against the manifest;
  one PatientID per study, ``VINDR-<study_id>``, held by no other study) and
  :func:`compare_annotations`, the single call site for the converter's export/compare.
- **contents**: :func:`check_contents` compares every PACS copy with its manifest file
  (the size and MD5 Orthanc recorded, over REST; :mod:`server.integrity`).

Studies stream through one at a time, so memory stays flat over 5,000 studies.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from converter.annotations import check_sr_seg
from converter.annotations.model_sr import check_model_sr
from converter.errors import ExportError, ReleaseError
from converter.export import compare_with_release, rows_from_datasets
from converter.manifest import KINDS, ManifestRow, read_manifest
from converter.naming import is_ground_truth_sr
from converter.naming import patient_id as exam_patient_id
from converter.records import Problem, ProgressCallback
from converter.release import BREAST_CSV, BREAST_HEADER, read_csv_rows

from server.client import Connection, HeldInstance, OrthancClient, dicomweb_client
from server.errors import ServerError
from server.transfer.integrity import compare_copy, digest_file, manifest_mismatch

RETRY_ATTEMPTS = 4
RETRIABLE_STATUS = (429, 502, 503, 504)

INSTANCE_FIELDS = ("PatientID", "Modality", "SOPClassUID", "SeriesInstanceUID")


@dataclass
class StudyObjects:
    """What the PACS serves for one study.

    Attributes
    ----------
    study_uid
        The Study Instance UID asked for.
    patient_ids
        Every PatientID seen (QIDO study answer and each instance).
    studies_of_patient
        Study Instance UIDs QIDO finds for each of those PatientIDs.
    instances
        QIDO instance-level answers (with PatientID, Modality, SOPClassUID, series UID).
    mg_headers
        WADO-RS metadata of each MG instance (no pixel data).
    sr, seg
        The SR and SEG instances, retrieved whole over WADO-RS.
    """

    study_uid: str
    patient_ids: set[str] = field(default_factory=set)
    studies_of_patient: dict[str, set[str]] = field(default_factory=dict)
    instances: list[Dataset] = field(default_factory=list)
    mg_headers: list[Dataset] = field(default_factory=list)
    sr: list[Dataset] = field(default_factory=list)
    seg: list[Dataset] = field(default_factory=list)
    unreadable: str = ""  # why the PACS refused part of the study (an HTTP 4xx), if it did

    @property
    def found(self) -> bool:
        """True when the PACS knows the study at all."""
        return bool(self.instances)


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`: how much was checked and every problem found.

    Problems are the converter's :class:`converter.records.Problem` (severity, code,
    message, study_id...), so the export/compare can return its own directly.
    """

    studies: int = 0
    instances: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing differs."""
        return not self.problems


def describe(problem: Problem) -> str:
    """One line for a user: ``study <id>: <message>`` (the message alone without a study)."""
    return f"study {problem.study_id}: {problem.message}" if problem.study_id else problem.message


# --- fetch ------------------------------------------------------------------------------


def fetch_study(client: DICOMwebClient, study_uid: str) -> StudyObjects:
    """Fetch one study over DICOMweb (QIDO + WADO-RS metadata/retrieve).

    QIDO filters are exact UIDs and PatientIDs (digits, letters, dots, hyphens): safe on
    Debian's Orthanc, which does not URL-decode query arguments.
    """
    study = StudyObjects(study_uid)
    answers = client.search_for_studies(
        search_filters={"StudyInstanceUID": study_uid}, fields=["PatientID"]
    )
    for answer in answers:
        study.patient_ids.update(_values(Dataset.from_json(answer), "PatientID"))
    if not answers:
        return study
    study.instances = [
        Dataset.from_json(a)
        for a in client.search_for_instances(
            study_instance_uid=study_uid, fields=list(INSTANCE_FIELDS)
        )
    ]
    for ds in study.instances:
        study.patient_ids.update(_values(ds, "PatientID"))
    for patient_id in sorted(study.patient_ids):
        found = client.search_for_studies(
            search_filters={"PatientID": patient_id}, fields=["PatientID"]
        )
        study.studies_of_patient[patient_id] = {
            str(Dataset.from_json(a).get("StudyInstanceUID", "")) for a in found
        }
    mg_series: dict[str, set[str]] = defaultdict(set)
    for ds in study.instances:
        series_uid, sop_uid = (
            str(ds.get("SeriesInstanceUID", "")),
            str(ds.get("SOPInstanceUID", "")),
        )
        modality = str(ds.get("Modality", ""))
        if modality == "MG":
            mg_series[series_uid].add(sop_uid)
        elif modality in ("SR", "SEG"):
            whole = client.retrieve_instance(study_uid, series_uid, sop_uid)
            (study.sr if modality == "SR" else study.seg).append(whole)
    for series_uid, sop_uids in mg_series.items():  # one metadata request per MG series
        for metadata in client.retrieve_series_metadata(study_uid, series_uid):
            header = Dataset.from_json(metadata, bulk_data_uri_handler=_no_bulk_data)
            if str(header.get("SOPInstanceUID", "")) in sop_uids:
                study.mg_headers.append(header)
    return study


def retrying_client(connection: Connection) -> DICOMwebClient:
    """A dicomweb-client for ``connection`` that retries what a busy PACS (503, 429) or a
    proxy hiccup answers, with its own exponential wait (one per thread: a session each)."""
    client = dicomweb_client(connection)
    client.set_http_retry_params(
        retry=True, max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=250,
        retriable_error_codes=RETRIABLE_STATUS)
    return client


def fetch_studies(
    connection: Connection, study_uids: Sequence[str], workers: int = 2
) -> Iterator[StudyObjects]:
    """Fetch ``study_uids`` in order, ``workers`` at a time, each thread on its own session.

    Raises
    ------
    ServerError
        When a DICOMweb request fails (HTTP error or no answer).
    """
    local = threading.local()

    def fetch(uid: str) -> StudyObjects:
        if not hasattr(local, "client"):
            local.client = retrying_client(connection)
        try:
            return fetch_study(local.client, uid)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if 400 <= status < 500:  # this study only (a conflicting object makes Orthanc
                # answer its metadata 404): a difference to report, the rest goes on
                found = StudyObjects(uid, unreadable=f"{exc.response.url} answered {status}")
                try:
                    found.instances = [Dataset.from_json(a) for a in
                                       local.client.search_for_instances(
                                           study_instance_uid=uid, fields=list(INSTANCE_FIELDS))]
                except requests.RequestException:
                    pass
                return found
            raise ServerError(f"DICOMweb request for study {uid} failed: {exc}") from exc
        except requests.RequestException as exc:
            raise ServerError(f"DICOMweb request for study {uid} failed: {exc}") from exc

    window = max(1, workers) * 2
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(study_uids), window):
            yield from pool.map(fetch, study_uids[start : start + window])


def _no_bulk_data(tag: str, vr: str, uri: str) -> None:
    """Leave bulk data (pixel data) of MG headers empty: it is not fetched."""
    return None


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    return [str(value)] if value not in (None, "") else []


# --- compare ----------------------------------------------------------------------------


def _problem(code: str, study_id: str, message: str) -> Problem:
    return Problem("error", code, message, study_id=study_id)


def _kind(modality: str) -> str:
    """The manifest kind of an instance: its Modality (MG, SR, SEG), else "other"."""
    return modality if modality in KINDS else "other"


def check_study(expected: Sequence[ManifestRow], study: StudyObjects) -> list[Problem]:
    """Instance counts and UIDs per kind against the manifest, and the patient-per-study rule."""
    study_id = expected[0].study_id
    if study.unreadable:
        problems = [_problem("pacs-study-unreadable", study_id,
                             f"the PACS refused to serve study {study.study_uid}: "
                             f"{study.unreadable}")]
        patients = {str(p) for ds in study.instances for p in _values(ds, "PatientID")}
        if patients - {exam_patient_id(study_id)}:
            problems.append(_problem("pacs-patient-id", study_id,
                                     f"PatientID(s) {sorted(patients)}, expected only "
                                     f"{exam_patient_id(study_id)}"))
        return problems
    if not study.found:
        return [
            _problem("pacs-study-missing", study_id, f"not in the PACS (study {study.study_uid})")
        ]
    problems: list[Problem] = []
    want = Counter(e.kind for e in expected)
    have = Counter(
        _kind(str(ds.get("Modality", ""))) for ds in study.instances
    )
    for kind in sorted(set(want) | set(have)):
        if want[kind] != have[kind]:
            problems.append(
                _problem(
                    "pacs-count-mismatch",
                    study_id,
                    f"{have[kind]} {kind} instance(s) in the PACS, manifest lists {want[kind]}",
                )
            )
    served = {str(ds.get("SOPInstanceUID", "")) for ds in study.instances}
    for entry in expected:
        if entry.sop_instance_uid not in served:
            problems.append(
                _problem(
                    "pacs-instance-missing",
                    study_id,
                    f"{entry.kind} {entry.path} ({entry.sop_instance_uid}) not served",
                )
            )
    fetched = {"MG": len(study.mg_headers), "SR": len(study.sr), "SEG": len(study.seg)}
    for kind, count in fetched.items():
        if count != have[kind]:
            problems.append(
                _problem(
                    "pacs-retrieve-failed",
                    study_id,
                    f"{count} of {have[kind]} {kind} instance(s) could be retrieved",
                )
            )
    patient = exam_patient_id(study_id)
    if study.patient_ids != {patient}:
        problems.append(
            _problem(
                "pacs-patient-id",
                study_id,
                f"PatientID(s) {sorted(study.patient_ids)}, expected only {patient}",
            )
        )
    for patient_id, studies in study.studies_of_patient.items():
        if studies != {study.study_uid}:
            others = sorted(studies - {study.study_uid})
            problems.append(
                _problem(
                    "pacs-patient-shared",
                    study_id,
                    f"patient {patient_id} also holds studies {others}",
                )
            )
    return problems


def compare_annotations(
    src: Path,
    studies: Iterable[StudyObjects],
    image_ids: Iterable[str],
    study_ids: Mapping[str, str],
) -> list[Problem]:
    """Rebuild the annotation CSV rows from what the PACS serves and compare with ``src``.

    Each study's SR and SEGs as served are first checked against each other
    (:func:`converter.annotations.check_sr_seg`: read back with highdicom, every SR box equal to
    its SEG mask, codes in their context groups).
    Each study's MG headers and SR go through the converter's export
    (:func:`converter.export.rows_from_datasets`) as they stream past; the rows of all
    studies are then compared with the release's rows of ``image_ids`` (the images the
    manifest says were loaded), so an image missing from the PACS is a difference too.
    ``study_ids`` maps each Study Instance UID to the manifest's VinDr study id.
    """
    breast: list[dict[str, str]] = []
    finding: list[dict[str, str]] = []
    problems: list[Problem] = []
    for study in studies:
        study_id = study_ids[study.study_uid]
        ground_truth = [sr for sr in study.sr if is_ground_truth_sr(
            str(sr.get("SOPInstanceUID", "")), study.study_uid)]
        for sr in study.sr:
            if sr in ground_truth:
                problems += [_problem("pacs-sr-seg", study_id, text)
                             for text in check_sr_seg(sr, study.seg, study.mg_headers)]
            else:  # a model's SR (`predictions import`)
                problems += [_problem("pacs-model-sr", study_id, text)
                             for text in check_model_sr(sr, study.mg_headers)]
        try:
            rows = rows_from_datasets(study.mg_headers, ground_truth)
        except ExportError as exc:
            problems += [_problem("pacs-annotations", study_id, text) for text in exc.problems]
            continue
        breast += rows[0]
        finding += rows[1]
    return problems + compare_with_release(src, breast, finding, image_ids=image_ids)


def verify(
    src: Path,
    out: Path,
    connection: Connection,
    *,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Prove the release is in the PACS at ``connection``: every exam and image of ``src``'s
    CSVs is in ``out``'s manifest, and every study of the manifest is served as it should be.

    Parameters
    ----------
    src
        The original release folder (for the annotation comparison).
    out
        The converted folder (its ``manifest.csv`` says what the PACS must hold).
    connection
        The PACS (REST URL; DICOMweb under ``/dicom-web``).
    workers
        Studies fetched in parallel.
    progress
        Called with ``(done, total)`` studies.

    Raises
    ------
    ServerError
        When ``src`` is not a folder, the manifest is unreadable or a request fails.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ServerError(f"{src}: not a folder (expected the original VinDr-Mammo release)")
    entries = read_manifest(out)
    by_study: Mapping[str, list[ManifestRow]] = _group(entries)
    result = VerifyResult(studies=len(by_study), instances=len(entries))
    result.problems.extend(release_coverage(src, entries))
    total = result.studies + result.instances  # progress: studies, then instances

    def checked() -> Iterator[StudyObjects]:
        for done, study in enumerate(fetch_studies(connection, list(by_study), workers), start=1):
            result.problems.extend(check_study(by_study[study.study_uid], study))
            if progress is not None:
                progress(done, total)
            yield study

    image_ids = [entry.image_id for entry in entries if entry.kind == "MG"]
    study_ids = {uid: rows[0].study_id for uid, rows in by_study.items()}
    result.problems.extend(compare_annotations(src, checked(), image_ids, study_ids))

    def content_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(result.studies + done, total)

    result.problems.extend(check_contents(entries, out, connection, workers, content_progress))
    return result


def release_coverage(src: Path, entries: Sequence[ManifestRow]) -> list[Problem]:
    """Every exam and image of the release's CSVs in the manifest (so in the PACS, which the
    other checks prove): one problem per exam with images the manifest lacks, naming the
    first CSV line of each.

    Raises
    ------
    ServerError
        When the release's breast-level CSV cannot be read.
    """
    try:
        rows = read_csv_rows(Path(src) / BREAST_CSV, BREAST_HEADER)
    except ReleaseError as exc:
        raise ServerError(str(exc)) from exc
    converted = {entry.image_id for entry in entries if entry.kind == "MG"}
    missing: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line, row in rows:
        study_id, image_id = row[0], row[2]
        if image_id not in converted:
            missing[study_id].append((line, image_id))
    exams = {entry.study_id for entry in entries}
    problems = []
    for study_id, images in sorted(missing.items()):
        lines = ", ".join(f"{image} (line {line})" for line, image in images[:4])
        more = f" and {len(images) - 4} more" if len(images) > 4 else ""
        what = ("the exam is not in the manifest" if study_id not in exams
                else f"{len(images)} of its images are not in the manifest")
        problems.append(Problem("error", "release-not-converted",
                                f"{what}, so not in the PACS: {BREAST_CSV} {lines}{more}",
                                file=BREAST_CSV, row=images[0][0], study_id=study_id))
    return problems


def check_contents(entries: Sequence[ManifestRow], out: Path, connection: Connection,
                   workers: int = 2, progress: ProgressCallback | None = None) -> list[Problem]:
    """Compare the PACS copy of every manifest object with its file, ``workers`` at a time.

    One ``/tools/find`` per 100 studies gives the Orthanc IDs; each local file is checked
    against its manifest SHA-256, then its size and MD5 against the PACS copy's. Without
    the local file, the PACS copy is downloaded and its SHA-256 compared with the
    manifest's. Objects the PACS lacks are left to :func:`check_study`.

    Raises
    ------
    ServerError
        When Orthanc cannot be asked.
    """
    held = OrthancClient.connect(connection).instance_index({e.study_uid for e in entries})
    local = threading.local()

    def check(entry: ManifestRow) -> Problem | None:
        if entry.sop_instance_uid not in held:
            return None
        if not hasattr(local, "client"):
            local.client = OrthancClient.connect(connection)
        return _content_problem(local.client, entry, out, held[entry.sop_instance_uid])

    problems: list[Problem] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, problem in enumerate(pool.map(check, entries), start=1):
            if problem is not None:
                problems.append(problem)
            if progress is not None:
                progress(done, len(entries))
    return problems


def _content_problem(client: OrthancClient, entry: ManifestRow, out: Path,
                     held: HeldInstance) -> Problem | None:
    """The difference between one PACS copy and its manifest file, if any."""
    path = entry.file(out)
    where = f"{entry.kind} {entry.path} ({entry.sop_instance_uid})"
    if not path.exists():  # verify needs only the manifest: hash what the PACS serves
        served = hashlib.sha256(client.instance_file(held.orthanc_id)).hexdigest()
        if served == entry.sha256.lower():
            return None
        return _problem("pacs-content-differs", entry.study_id,
                        f"{where}: the SHA-256 of the PACS copy is not the manifest's (no local "
                        "file to compare data sets with, as for objects loaded over C-STORE)")
    try:
        digest = digest_file(path)
    except OSError as exc:
        return _problem("local-file-differs", entry.study_id,
                        f"{where}: cannot read the manifest file ({exc.strerror or exc})")
    mismatch = manifest_mismatch(entry, digest)
    if mismatch is not None:
        return _problem("local-file-differs", entry.study_id,
                        f"{where}: the local file {mismatch}; PACS copy not compared")
    comparison = compare_copy(client, held, path, digest)
    if comparison.same:
        return None
    return _problem("pacs-content-differs", entry.study_id,
                    f"{where}: {comparison.describe(digest)}")


def _group(entries: Iterable[ManifestRow]) -> dict[str, list[ManifestRow]]:
    grouped: dict[str, list[ManifestRow]] = defaultdict(list)
    for entry in entries:
        grouped[entry.study_uid].append(entry)
    return dict(grouped)
