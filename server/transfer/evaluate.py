"""Fetch what ``evaluate`` scores from the PACS over DICOMweb: per exam of a split, its MG
images and every SR's content as DICOM JSON, in one WADO-RS study metadata request (DICOM
JSON reads several times faster than the Part-10 objects through pydicom), with the account
of a :class:`Connection`.

The exams of a split are found by their Study Description (``VinDr-Mammo-<split>``, an
exact QIDO match); the scoring itself is :mod:`converter.evaluation.evaluate`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests
from pydicom.dataset import Dataset

from converter import codes
from converter.annotations.model_sr import tree
from converter.evaluation.evaluate import Evaluation, ExamObjects, evaluate_exams
from converter.evaluation.metrics import MatchRule
from converter.naming import study_description
from converter.records import ProgressCallback

from server.client import Connection, dicomweb_client
from server.errors import ServerError
from server.transfer.verify import retrying_client


def split_studies(connection: Connection, split: str) -> list[tuple[str, str]]:
    """(Study Instance UID, Study Description) of every exam of ``split`` (or ``all``)."""
    client = dicomweb_client(connection)
    splits = codes.SPLITS if split == "all" else (split,)
    found = []
    try:
        for name in splits:
            description = study_description(name)
            for answer in client.search_for_studies(
                    search_filters={"StudyDescription": description},
                    fields=["StudyDescription"], get_remaining=True):
                ds = Dataset.from_json(answer)
                found.append((str(ds.StudyInstanceUID), description))
    except requests.RequestException as exc:
        raise ServerError(f"QIDO-RS search for the {split} studies failed: {exc}") from exc
    return sorted(set(found))


def fetch_exam(client, study_uid: str, description: str) -> ExamObjects:
    """One exam's MG images and SR content trees, from one WADO-RS study metadata request
    (the DICOM JSON of every instance: 40 ms for an exam here, against 60 ms for a QIDO-RS
    instance search and one metadata request per SR)."""
    exam = ExamObjects(study_uid, description, {})
    for item in client.retrieve_study_metadata(study_uid):
        modality = _first(item, "00080060")
        uid = str(_first(item, "00080018") or "")
        if modality == "MG":
            exam.images[uid] = str(_first(item, "00200062") or "")
        elif modality == "SR":  # read straight from DICOM JSON (model_sr.Node)
            exam.srs.append(tree(item))
    return exam


def _first(item: dict, tag: str) -> object:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def fetch_exams(connection: Connection, studies: Sequence[tuple[str, str]], workers: int = 2,
                progress: ProgressCallback | None = None) -> list[ExamObjects]:
    """:func:`fetch_exam` of every study, ``workers`` at a time, each thread its own session.

    Raises
    ------
    ServerError
        When a DICOMweb request fails.
    """
    local = threading.local()

    def fetch(item: tuple[str, str]) -> ExamObjects:
        if not hasattr(local, "client"):
            local.client = retrying_client(connection)
        try:
            return fetch_exam(local.client, *item)
        except requests.RequestException as exc:
            raise ServerError(f"DICOMweb request for study {item[0]} failed: {exc}") from exc

    exams = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, exam in enumerate(pool.map(fetch, studies), start=1):
            exams.append(exam)
            if progress is not None:
                progress(done, len(studies))
    return exams


def evaluate_pacs(
    connection: Connection,
    name: str,
    version: str | None = None,
    *,
    split: str = "test",
    rule: MatchRule = "iou",
    ignore_unboxed_suspicious: bool = False,
    threshold: float | None = None,
    seed: int = 0,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Fetch the split's exams from the PACS and score model ``name`` on them.

    Raises
    ------
    ServerError
        A DICOMweb request failed.
    PredictionsError
        The split holds no exam, or no SR of the model (or several versions, none chosen).
    """
    from converter.errors import PredictionsError

    studies = split_studies(connection, split)
    if not studies:
        raise PredictionsError(f"no exam of the {split} split in the PACS at {connection.url}")
    exams = fetch_exams(connection, studies, workers, progress)
    return evaluate_exams(exams, name, version, split=split, rule=rule,
                          ignore_unboxed_suspicious=ignore_unboxed_suspicious,
                          threshold=threshold, seed=seed)
