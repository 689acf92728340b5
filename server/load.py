"""Send every object of a converted output folder to Orthanc, then check they are all there.

The steps, each visible in :func:`load`:

1. read ``manifest.csv``;
2. ask Orthanc which of its instances are already stored (batched ``/tools/find`` by
   study, which also gives their Orthanc IDs);
3. for those, check the local file against its manifest SHA-256 and compare the PACS copy
   with it (size and MD5 Orthanc recorded, :mod:`server.integrity`): an equal copy is not
   sent again, so re-running a load is harmless; a differing one is deleted and re-sent
   ("replaced a differing copy");
4. send the rest from parallel workers, each with its own keep-alive connection, over REST
   ``POST /instances`` (default), STOW-RS or C-STORE (``pynetdicom``), each file checked
   against its manifest SHA-256 first (a file that differs is an error and is never sent),
   reading every answer (STOW hides per-instance failures inside a 200);
5. retry the failures a few times;
6. check again that every manifest instance is in Orthanc.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

import pydicom
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from converter.manifest import MANIFEST_NAME, ManifestRow, read_manifest
from converter.records import ProgressCallback

from .client import Connection, HeldInstance, OrthancClient, OrthancError
from .errors import ServerError
from .integrity import compare_copy, digest_file, manifest_mismatch
from .settings import DEFAULT_LOADER_AET, DICOMWEB_ROOT

Method = Literal["rest", "stow", "cstore"]
METHODS: tuple[str, ...] = ("rest", "stow", "cstore")

STORED, ALREADY, REPLACE = "stored", "already", "replace"
CSTORE_TRANSFER_SYNTAXES = (
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.JPEG2000Lossless,
    pydicom.uid.JPEGLSLossless,
    pydicom.uid.RLELossless,
)


@dataclass(frozen=True)
class LoadError:
    """Why one object is not (known to be) in the PACS."""

    path: Path
    sop_instance_uid: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class LocalFileError(ServerError):
    """The local file is not the manifest's: it is never sent, and not retried."""


def verified_bytes(entry: ManifestRow, path: Path) -> bytes:
    """The file's bytes, once checked against the manifest SHA-256 (LocalFileError if not)."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256.lower():
        raise LocalFileError(f"differs from its SHA-256 in the manifest (file {digest[:16]}..., "
                             f"manifest {entry.sha256[:16]}...)")
    return data


@dataclass
class LoadResult:
    """What a load did.

    Attributes
    ----------
    total
        Objects in the manifest.
    sent
        Objects stored by this run.
    already_present
        Objects whose PACS copy was already the manifest's file (not re-sent).
    replaced
        One line per object whose PACS copy differed from the manifest's file and was
        deleted and sent again (those are counted in ``sent`` once stored).
    failed
        Objects whose every attempt failed.
    missing
        Manifest objects not found in the PACS at the final check (failed ones included;
        all of them when the check itself failed).
    errors
        One entry per failed or missing object, naming its file.
    """

    total: int = 0
    sent: int = 0
    already_present: int = 0
    failed: int = 0
    missing: int = 0
    errors: list[LoadError] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every manifest object is confirmed in the PACS."""
        return self.failed == 0 and self.missing == 0 and not self.errors


class Sender(Protocol):
    """Sends one file; returns STORED or ALREADY, raises on failure. One per worker thread."""

    def send(self, entry: ManifestRow, path: Path) -> str: ...

    def close(self) -> None: ...


class RestSender:
    """``POST /instances`` on a keep-alive session of its own."""

    def __init__(self, connection: Connection) -> None:
        self.client = OrthancClient.connect(connection)

    def send(self, entry: ManifestRow, path: Path) -> str:
        answer = self.client.store_instance(verified_bytes(entry, path))
        return ALREADY if answer.already_stored else STORED

    def close(self) -> None:
        self.client.session.close()


class StowSender:
    """STOW-RS, one instance per request, the file's own bytes, reading the per-instance answer.

    The file is posted as it is (not re-encoded by pydicom), so the PACS stores the
    manifest's bytes.
    """

    def __init__(self, connection: Connection) -> None:
        self.session = connection.session()
        self.url = connection.url.rstrip("/") + DICOMWEB_ROOT + "studies"

    def _post(self, data: bytes) -> requests.Response:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + data + f"\r\n--{boundary}--\r\n".encode())
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        try:
            return self.session.post(self.url, data=body, timeout=300, headers={
                "Content-Type": content_type, "Accept": "application/dicom+json"})
        except requests.RequestException as exc:
            raise ServerError(f"STOW-RS: {exc}") from exc

    def send(self, entry: ManifestRow, path: Path) -> str:
        response = self._post(verified_bytes(entry, path))
        if response.status_code not in (200, 202):
            raise ServerError(f"STOW-RS answered HTTP {response.status_code}")
        answer = Dataset.from_json(response.json())
        for item in answer.get("FailedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") == entry.sop_instance_uid:
                reason = item.get("FailureReason", "?")
                raise ServerError(f"STOW-RS refused it (FailureReason {reason})")
        for item in answer.get("ReferencedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") == entry.sop_instance_uid:
                return STORED
        raise ServerError("STOW-RS answer does not list this instance")

    def close(self) -> None:
        self.session.close()


class CStoreSender:
    """C-STORE over one association per worker (re-opened after a failure)."""

    def __init__(
        self, host: str, port: int, called_aet: str, calling_aet: str, sop_classes: Sequence[str]
    ):
        self.address = (host, port, called_aet)
        self.ae = AE(ae_title=calling_aet)
        for sop_class in sorted(set(sop_classes)):
            for syntax in CSTORE_TRANSFER_SYNTAXES:
                self.ae.add_requested_context(sop_class, syntax)
        self.assoc: Association | None = None

    def send(self, entry: ManifestRow, path: Path) -> str:
        mismatch = manifest_mismatch(entry, digest_file(path))
        if mismatch is not None:
            raise LocalFileError(mismatch)
        if self.assoc is None or not self.assoc.is_established:
            host, port, called = self.address
            self.assoc = self.ae.associate(host, port, ae_title=called)
            if not self.assoc.is_established:
                self.assoc = None
                raise ServerError(
                    f"C-STORE association to {called}@{host}:{port} refused or failed"
                )
        try:
            status = self.assoc.send_c_store(path)
        except (ValueError, RuntimeError) as exc:
            raise ServerError(f"C-STORE: {exc}") from exc
        code = int(getattr(status, "Status", -1))
        if code >= 0 and code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING):
            return STORED
        self.close()
        raise ServerError(
            f"C-STORE status 0x{code & 0xFFFF:04X}" if code >= 0 else "C-STORE: no answer"
        )

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


def _sender_factory(
    method: str,
    connection: Connection,
    client: OrthancClient,
    entries: Sequence[ManifestRow],
    calling_aet: str,
) -> Callable[[], Sender]:
    if method == "rest":
        return lambda: RestSender(connection)
    if method == "stow":
        if not client.system().has_dicomweb:
            raise ServerError("STOW-RS needs Orthanc's DICOMweb plugin, which this server lacks")
        return lambda: StowSender(connection)
    if method == "cstore":
        system = client.system()
        host = urlsplit(connection.url).hostname or "127.0.0.1"
        classes = [e.sop_class_uid for e in entries]
        return lambda: CStoreSender(host, system.dicom_port, system.dicom_aet, calling_aet, classes)
    raise ServerError(f"method {method!r}: choose one of {', '.join(METHODS)}")


def _send_round(
    todo: Sequence[ManifestRow],
    out_dir: Path,
    make_sender: Callable[[], Sender],
    workers: int,
    on_done: Callable[[], None],
) -> dict[str, str | Exception]:
    """Send ``todo`` from ``workers`` threads; SOP Instance UID -> STORED/ALREADY or the error."""
    local = threading.local()
    senders: list[Sender] = []
    lock = threading.Lock()

    def send_one(entry: ManifestRow) -> str:
        sender = getattr(local, "sender", None)
        if sender is None:
            sender = local.sender = make_sender()
            with lock:
                senders.append(sender)
        return sender.send(entry, entry.file(out_dir))

    outcomes: dict[str, str | Exception] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(send_one, e): e for e in todo}
        for future in as_completed(futures):
            entry = futures[future]
            try:
                outcomes[entry.sop_instance_uid] = future.result()
            except Exception as exc:  # every failure is reported per file, then retried
                outcomes[entry.sop_instance_uid] = exc
            on_done()
    for sender in senders:
        try:
            sender.close()
        except Exception:  # closing a dead connection must not hide the results
            pass
    return outcomes


def load(
    out_dir: Path,
    connection: Connection,
    *,
    method: Method = "rest",
    workers: int = 2,
    retries: int = 2,
    retry_delay: float = 2.0,
    calling_aet: str = DEFAULT_LOADER_AET,
    progress: ProgressCallback | None = None,
) -> LoadResult:
    """Load the converted folder ``out_dir`` into the PACS at ``connection``.

    Parameters
    ----------
    out_dir
        Converted output folder (with ``manifest.csv``).
    connection
        The PACS (its REST URL and credentials).
    method
        ``rest`` (``POST /instances``), ``stow`` (STOW-RS) or ``cstore`` (C-STORE to the
        DICOM port and AE title ``GET /system`` reports).
    workers
        Parallel connections.
    retries
        Extra rounds for the objects that failed.
    retry_delay
        Seconds between rounds.
    calling_aet
        Our AE title for C-STORE; Orthanc must list it (``serve`` registers the default).
    progress
        Called with ``(done, total)`` as objects are handled.

    Returns
    -------
    LoadResult
        Counts and per-file errors; ``result.ok`` tells whether all is in the PACS.

    Raises
    ------
    ServerError
        When the manifest is unreadable or the PACS cannot be asked what it holds.
    """
    out_dir = Path(out_dir)
    entries = read_manifest(out_dir)
    result = LoadResult(total=len(entries))
    tick = _Ticker(result.total, progress)
    client = OrthancClient.connect(connection)
    studies = {e.study_uid for e in entries}
    held = client.instance_index(studies)
    todo = _to_send(entries, out_dir, held, result, tick)
    todo += _check_held([e for e in entries if e.sop_instance_uid in held], out_dir, held,
                        connection, workers, result, tick)
    if todo:
        make_sender = _sender_factory(method, connection, client, todo, calling_aet)
        failures = _send_with_retries(todo, out_dir, make_sender, workers, retries, retry_delay,
                                      result, tick)
        by_uid = {e.sop_instance_uid: e for e in entries}
        for uid, exc in failures.items():
            result.failed += 1
            message = f"{exc}: not sent" if isinstance(exc, LocalFileError) else f"not stored: {exc}"
            result.errors.append(LoadError(by_uid[uid].file(out_dir), uid, message))
    _check_present(entries, out_dir, client, studies, result)
    return result


class _Ticker:
    """Counts handled objects and reports ``progress(done, total)``."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _to_send(entries: list[ManifestRow], out_dir: Path, held: Mapping[str, HeldInstance],
             result: LoadResult, tick: Callable[[], None]) -> list[ManifestRow]:
    """The entries the PACS does not hold yet, with their file on disk."""
    todo: list[ManifestRow] = []
    for entry in entries:
        if entry.sop_instance_uid in held:
            continue
        if not entry.file(out_dir).is_file():
            result.failed += 1
            result.errors.append(
                LoadError(entry.file(out_dir), entry.sop_instance_uid, "file not found")
            )
            tick()
        else:
            todo.append(entry)
    return todo


def _check_held(entries: list[ManifestRow], out_dir: Path, held: Mapping[str, HeldInstance],
                connection: Connection, workers: int, result: LoadResult,
                tick: Callable[[], None]) -> list[ManifestRow]:
    """Compare each PACS copy in ``entries`` with its manifest file, from ``workers`` threads.

    Equal copies count as already present; differing ones are deleted from the PACS and
    returned, to be sent again; a local file that is missing or not the manifest's is an
    error (and its PACS copy is left alone: there is nothing trustworthy to compare with).
    """
    local = threading.local()

    def check(entry: ManifestRow) -> str:
        if not hasattr(local, "client"):
            local.client = OrthancClient.connect(connection)
        return _check_one(local.client, entry, entry.file(out_dir),
                          held[entry.sop_instance_uid], result)

    replace: list[ManifestRow] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(check, entry): entry for entry in entries}
        for future in as_completed(futures):
            entry = futures[future]
            try:
                outcome = future.result()
            except (OSError, ServerError) as exc:  # reported per file, never sent
                outcome = ""
                result.failed += 1
                message = (f"{exc}: not sent (its PACS copy was left unchecked)"
                           if isinstance(exc, LocalFileError) else f"PACS copy not checked: {exc}")
                result.errors.append(LoadError(entry.file(out_dir), entry.sop_instance_uid,
                                               message))
            if outcome == REPLACE:
                replace.append(entry)
            else:
                result.already_present += outcome == ALREADY
                tick()
    return replace


def _check_one(client: OrthancClient, entry: ManifestRow, path: Path, held: HeldInstance,
               result: LoadResult) -> str:
    """ALREADY when the PACS copy is the manifest's file; else delete it and say REPLACE."""
    if not path.is_file():
        raise LocalFileError("file not found")
    digest = digest_file(path)
    mismatch = manifest_mismatch(entry, digest)
    if mismatch is not None:
        raise LocalFileError(mismatch)
    comparison = compare_copy(client, held, path, digest)
    if comparison.same:
        return ALREADY
    client.delete_instance(held.orthanc_id)
    result.replaced.append(f"{path}: replaced a differing copy ({comparison.describe(digest)})")
    return REPLACE


def _send_with_retries(
    todo: list[ManifestRow], out_dir: Path, make_sender: Callable[[], Sender], workers: int,
    retries: int, retry_delay: float, result: LoadResult, tick: Callable[[], None],
) -> dict[str, Exception]:
    """Send ``todo``, then re-send the failures ``retries`` times; the last error of each
    object still not stored."""
    last_error: dict[str, Exception] = {}
    for attempt in range(1 + max(0, retries)):
        if not todo:
            break
        if attempt:
            time.sleep(retry_delay)
        outcomes = _send_round(todo, out_dir, make_sender, workers,
                               tick if attempt == 0 else lambda: None)
        retry: list[ManifestRow] = []
        for entry in todo:
            outcome = outcomes[entry.sop_instance_uid]
            if isinstance(outcome, Exception):
                last_error[entry.sop_instance_uid] = outcome
                if not isinstance(outcome, LocalFileError):  # a bad file stays bad
                    retry.append(entry)
            else:
                last_error.pop(entry.sop_instance_uid, None)
                if outcome == ALREADY:
                    result.already_present += 1
                else:
                    result.sent += 1
        todo = retry
    return last_error


def _check_present(entries: list[ManifestRow], out_dir: Path, client: OrthancClient,
                   studies: set[str], result: LoadResult) -> None:
    """Look every manifest object up in the PACS; count and explain what is missing."""
    try:
        present = client.sop_instance_uids(studies)
    except OrthancError as exc:  # nothing can be confirmed
        result.missing = result.total
        result.errors.append(
            LoadError(out_dir / MANIFEST_NAME, "", f"could not check the PACS afterwards: {exc}")
        )
        return
    reported = {e.sop_instance_uid for e in result.errors}
    for entry in entries:
        if entry.sop_instance_uid not in present:
            result.missing += 1
            if entry.sop_instance_uid not in reported:
                result.errors.append(LoadError(entry.file(out_dir), entry.sop_instance_uid,
                                               "sent, but not found in the PACS afterwards"))
