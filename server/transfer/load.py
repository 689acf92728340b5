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

A cluster (:mod:`server.cluster`: several Orthanc nodes on one index and one storage) is
loaded through all its nodes at once: the workers go to the nodes in turn, and a node that
stops answering (connection refused, reset or closed, and its ``GET /system`` unanswered
too) gets no further work: what it was sending goes at once to the next node. That is
safe because re-sending is idempotent here (``OverwriteInstances`` false: Orthanc answers
``AlreadyStored``, C-STORE succeeds without a second copy), so an object that may have
reached the node before it died is sent again without harm. Steps 2, 3 and 6 ask the first
node that answers.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import pydicom
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from converter.manifest import MANIFEST_NAME, ManifestRow, read_manifest
from converter.records import ProgressCallback

from server.client import Connection, HeldInstance, OrthancClient, OrthancError, SystemInfo
from server.errors import ServerError
from server.transfer.integrity import compare_copy, digest_file, manifest_mismatch
from server.pacs.settings import DICOMWEB_ROOT, LOADER_AET_PREFIX

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
# Seconds a node has to answer ``GET /system`` after a send to it got no answer at all.
PROBE_TIMEOUT = 10.0
# Seconds between two looks at the PACS's health (``watch``) during a load.
WATCH_INTERVAL = 1.0

T = TypeVar("T")


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


class NodeUnreachable(ServerError):
    """No answer at all from a node (connection refused, reset or closed, association
    aborted): it may be down, which :meth:`_Nodes.lost` finds out."""


class LoadStopped(ServerError):
    """The load stopped sending: the PACS cannot take more (its index is down, its
    supervisor gone): not retried."""


class StorageFailure(LoadStopped):
    """The PACS could not write an object to its storage (a full disk, a storage it may not
    write): every further object would fail the same way, so the load stops at once."""


# What Orthanc answers when it cannot write its storage: HTTP 500 "Cannot write to file"
# (ErrorCode_CannotWriteFile, a full disk among other causes), "The storage area is full"
# (ErrorCode_FullStorage); STOW-RS and C-STORE say "out of resources" (0xA7xx).
_STORAGE_TEXTS = ("Cannot write to file", "The storage area is full", "No space left")


def _storage_failure(text: str, where: str) -> StorageFailure | None:
    """A :class:`StorageFailure` when ``text`` (an answer of ``where``) says so."""
    if not any(marker in text for marker in _STORAGE_TEXTS):
        return None
    return StorageFailure(f"{where} cannot write to its storage: is its disk full? (Orthanc "
                          f"answered: {text.strip()[:200]})")


class _Stop:
    """Set once the load must stop sending, with the reason."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def check(self) -> None:
        """Raise :class:`LoadStopped` once set."""
        if self.event.is_set():
            raise LoadStopped(f"not sent: the load stopped ({self.reason})")


def _watching(watch: Callable[[], str | None] | None, stop: _Stop) -> threading.Event:
    """Call ``watch()`` every :data:`WATCH_INTERVAL` s in a thread until the returned event
    is set; the first problem it names stops the load."""
    done = threading.Event()
    if watch is None:
        return done

    def loop() -> None:
        while not done.wait(WATCH_INTERVAL):
            try:
                problem = watch()
            except Exception:  # a look that fails (a file being rewritten) stops nothing
                problem = None
            if problem:
                stop.set(problem)
                return

    threading.Thread(target=loop, name="vindr-load-watch", daemon=True).start()
    return done


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
    nodes
        The REST URLs the load went through (one, unless the PACS is a cluster).
    stored_by_node
        Objects each node (REST URL) stored, or answered it already held, in this run.
    lost_nodes
        ``URL: why`` of each node found down during the load (it got no further work).
    """

    total: int = 0
    sent: int = 0
    already_present: int = 0
    failed: int = 0
    missing: int = 0
    errors: list[LoadError] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    stored_by_node: dict[str, int] = field(default_factory=dict)
    lost_nodes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every manifest object is confirmed in the PACS."""
        return self.failed == 0 and self.missing == 0 and not self.errors


class Sender(Protocol):
    """Sends one file to one node; returns STORED or ALREADY, raises on failure
    (:class:`NodeUnreachable` when the node gave no answer at all). One per worker thread
    and node."""

    def send(self, entry: ManifestRow, path: Path) -> str: ...

    def close(self) -> None: ...


class RestSender:
    """``POST /instances`` on a keep-alive session of its own."""

    def __init__(self, connection: Connection) -> None:
        self.client = OrthancClient.connect(connection)

    def send(self, entry: ManifestRow, path: Path) -> str:
        data = verified_bytes(entry, path)
        try:
            answer = self.client.store_instance(data)
        except OrthancError as exc:
            if _unanswered(exc):
                raise NodeUnreachable(str(exc)) from exc
            failure = _storage_failure(str(exc), f"the PACS at {self.client.url}")
            if failure is not None:
                raise failure from exc
            raise
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
        except requests.ConnectionError as exc:
            raise NodeUnreachable(f"STOW-RS: {exc}") from exc
        except requests.RequestException as exc:
            raise ServerError(f"STOW-RS: {exc}") from exc

    def send(self, entry: ManifestRow, path: Path) -> str:
        response = self._post(verified_bytes(entry, path))
        if response.status_code not in (200, 202):
            failure = _storage_failure(response.text, f"the PACS at {self.url}")
            if failure is not None:
                raise failure
            raise ServerError(f"STOW-RS answered HTTP {response.status_code}")
        answer = Dataset.from_json(response.json())
        for item in answer.get("FailedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") == entry.sop_instance_uid:
                reason = item.get("FailureReason", "?")
                if isinstance(reason, int) and reason & 0xFF00 == 0xA700:
                    raise StorageFailure(f"the PACS at {self.url} is out of resources "
                                         f"(STOW-RS FailureReason 0x{reason:04X}): is its "
                                         "disk full?")
                raise ServerError(f"STOW-RS refused it (FailureReason {reason})")
        for item in answer.get("ReferencedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") == entry.sop_instance_uid:
                return STORED
        raise ServerError("STOW-RS answer does not list this instance")

    def close(self) -> None:
        self.session.close()


class CStoreSender:
    """C-STORE over one association per worker (re-opened after a failure).

    An association that cannot be opened (other than rejected), is aborted or brings no
    answer raises :class:`NodeUnreachable`.
    """

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
            assoc = self.ae.associate(host, port, ae_title=called)
            if not assoc.is_established:
                if assoc.is_rejected:
                    raise ServerError(f"C-STORE association to {called}@{host}:{port} rejected")
                raise NodeUnreachable(
                    f"C-STORE association to {called}@{host}:{port} failed or aborted"
                )
            self.assoc = assoc
        try:
            status = self.assoc.send_c_store(path)
        except (ValueError, RuntimeError) as exc:
            raise ServerError(f"C-STORE: {exc}") from exc
        code = int(getattr(status, "Status", -1))
        if code >= 0 and code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING):
            return STORED
        self.close()
        if code < 0:
            raise NodeUnreachable("C-STORE: no answer (association aborted?)")
        if code & 0xFF00 == 0xA700:
            host, port, called = self.address
            raise StorageFailure(f"{called}@{host}:{port} is out of resources (C-STORE status "
                                 f"0x{code & 0xFFFF:04X}): is its disk full?")
        raise ServerError(f"C-STORE status 0x{code & 0xFFFF:04X}")

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


def _unanswered(exc: OrthancError) -> bool:
    """True when a REST request got no answer at all (connection refused, reset or closed
    by the peer), as opposed to an HTTP error answer from a live Orthanc."""
    return exc.status is None and isinstance(exc.__cause__, requests.ConnectionError)


def _answers(connection: Connection) -> bool:
    """True when the node at ``connection`` answers ``GET /system`` (any HTTP status), on a
    new connection."""
    with connection.session() as session:
        try:
            session.get(connection.url.rstrip("/") + "/system", timeout=PROBE_TIMEOUT)
        except requests.RequestException:
            return False
    return True


class _Nodes:
    """The nodes of the PACS for one load: their connections, which ones are down, a REST
    client per thread and node, and what each node stored.

    A node is declared down only when a request got no answer at all *and* a new
    ``GET /system`` gets none either (a kept-alive connection closed by a live Orthanc is
    not a dead node); from then on it gets no work in this load, unless every node is down
    (:meth:`revive`).
    """

    def __init__(self, connections: Sequence[Connection]) -> None:
        self.connections = list(connections)
        self.down: set[int] = set()
        self.lost_why: dict[int, str] = {}
        self.stored: Counter[int] = Counter()
        self._systems: dict[int, SystemInfo] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[OrthancClient] = []

    @classmethod
    def of(cls, connection: Connection, more: Sequence[str]) -> _Nodes:
        """``connection`` first, then each URL of ``more`` not seen yet, same credentials."""
        urls: list[str] = []
        for url in (connection.url, *more):
            if url.rstrip("/") not in urls:
                urls.append(url.rstrip("/"))
        return cls([Connection(url, connection.username, connection.password) for url in urls])

    @property
    def urls(self) -> list[str]:
        """Every node's REST URL, in order."""
        return [c.url for c in self.connections]

    def pick(self, home: int) -> int | None:
        """Node ``home`` (modulo their number) if it is up, else the next one up; None when
        every node is down."""
        count = len(self.connections)
        with self._lock:
            for step in range(count):
                node = (home + step) % count
                if node not in self.down:
                    return node
        return None

    def client(self, node: int) -> OrthancClient:
        """This thread's REST client on ``node``."""
        clients: dict[int, OrthancClient] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if node not in clients:
            clients[node] = OrthancClient.connect(self.connections[node])
            with self._lock:
                self._clients.append(clients[node])
        return clients[node]

    def system(self, node: int) -> SystemInfo:
        """``GET /system`` of ``node``, asked once (NodeUnreachable when unanswered)."""
        with self._lock:
            known = self._systems.get(node)
        if known is not None:
            return known
        try:
            system = self.client(node).system()
        except OrthancError as exc:
            if _unanswered(exc):
                raise NodeUnreachable(str(exc)) from exc
            raise
        with self._lock:
            self._systems[node] = system
        return system

    def lost_nodes(self) -> list[str]:
        """``URL: why`` of every node found down so far."""
        with self._lock:
            return [self.lost_why[node] for node in sorted(self.lost_why)]

    def lost(self, node: int, exc: Exception) -> bool:
        """After ``exc`` (no answer from ``node``): True when the node is down (it then gets
        no further work), False when it still answers."""
        with self._lock:
            if node in self.down:
                return True
        if _answers(self.connections[node]):
            return False
        with self._lock:
            self.down.add(node)
            self.lost_why.setdefault(node, f"{self.connections[node].url}: down ({exc})")
        return True

    def revive(self) -> None:
        """When every node is down, give them all another chance (a server restarted
        meanwhile, say); otherwise nothing changes."""
        with self._lock:
            if len(self.down) == len(self.connections):
                self.down.clear()

    def count_stored(self, node: int) -> None:
        """One more object stored (or already held) by ``node``."""
        with self._lock:
            self.stored[node] += 1

    def ask(self, question: Callable[[OrthancClient], T]) -> T:
        """``question`` answered by the first node up, falling back to the next one while
        a node gives no answer at all; the last error when none is left."""
        self.revive()
        while True:
            node = self.pick(0)
            if node is None:  # cannot be: a node is up after revive(), or the last one raised
                raise OrthancError(f"no node of the PACS answers ({', '.join(self.urls)})")
            try:
                return question(self.client(node))
            except OrthancError as exc:
                if not (_unanswered(exc) and self.lost(node, exc)) or self.pick(0) is None:
                    raise

    def close(self) -> None:
        """Close every REST client's connections."""
        for client in self._clients:
            client.session.close()


def _sender_factory(
    method: str,
    nodes: _Nodes,
    entries: Sequence[ManifestRow],
    calling_aet: str,
) -> Callable[[int], Sender]:
    """A function making a sender to node ``i``."""
    if method == "rest":
        return lambda node: RestSender(nodes.connections[node])
    if method == "stow":
        if not nodes.ask(lambda client: client.system()).has_dicomweb:
            raise ServerError("STOW-RS needs Orthanc's DICOMweb plugin, which this server lacks")
        return lambda node: StowSender(nodes.connections[node])
    if method == "cstore":
        nodes.ask(lambda client: client.system())  # fail early (credentials...)
        classes = [e.sop_class_uid for e in entries]

        def cstore_sender(node: int) -> Sender:
            system = nodes.system(node)  # each node's own DICOM port
            host = urlsplit(nodes.connections[node].url).hostname or "127.0.0.1"
            return CStoreSender(host, system.dicom_port, system.dicom_aet, calling_aet, classes)

        return cstore_sender
    raise ServerError(f"method {method!r}: choose one of {', '.join(METHODS)}")


class _Spread:
    """The senders of one round: worker threads on the nodes in turn, one sender per
    thread and node; an object whose node is found down goes at once to the next node."""

    def __init__(self, nodes: _Nodes, make_sender: Callable[[int], Sender],
                 stop: _Stop) -> None:
        self.nodes = nodes
        self.make_sender = make_sender
        self.stop = stop
        self.senders: list[Sender] = []
        self._turn = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def _sender(self, node: int) -> Sender:
        senders: dict[int, Sender] = self._local.senders
        if node not in senders:
            senders[node] = self.make_sender(node)
            with self._lock:
                self.senders.append(senders[node])
        return senders[node]

    def send(self, entry: ManifestRow, path: Path) -> str:
        """Send one object through this thread's node (the next one up when it is down)."""
        if not hasattr(self._local, "home"):
            with self._lock:
                self._local.home, self._turn = self._turn, self._turn + 1
            self._local.senders = {}
        last: Exception | None = None
        while True:
            self.stop.check()
            node = self.nodes.pick(self._local.home)
            if node is None:
                raise last or NodeUnreachable(
                    f"every node of the PACS is down: {'; '.join(self.nodes.lost_nodes())}")
            try:
                outcome = self._sender(node).send(entry, path)
            except NodeUnreachable as exc:
                if not self.nodes.lost(node, exc):
                    raise  # the node answers: an ordinary failure, retried next round
                last = exc  # the node is down: the same object to the next node, now
                continue
            self.nodes.count_stored(node)
            return outcome

    def close(self) -> None:
        for sender in self.senders:
            try:
                sender.close()
            except Exception:  # closing a dead connection must not hide the results
                pass


def _send_round(
    todo: Sequence[ManifestRow],
    out_dir: Path,
    nodes: _Nodes,
    make_sender: Callable[[int], Sender],
    workers: int,
    on_done: Callable[[], None],
    stop: _Stop,
) -> dict[str, str | Exception]:
    """Send ``todo`` from ``workers`` threads over the nodes up; SOP Instance UID ->
    STORED/ALREADY or the error. Once ``stop`` is set, nothing more is sent."""
    spread = _Spread(nodes, make_sender, stop)
    outcomes: dict[str, str | Exception] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(spread.send, e, e.file(out_dir)): e for e in todo}
        for future in as_completed(futures):
            entry = futures[future]
            try:
                outcomes[entry.sop_instance_uid] = future.result()
            except StorageFailure as exc:  # every other object would fail so: stop
                outcomes[entry.sop_instance_uid] = exc
                stop.set(str(exc))
            except Exception as exc:  # every failure is reported per file, then retried
                outcomes[entry.sop_instance_uid] = exc
            on_done()
            if stop.event.is_set():
                for other in futures:
                    other.cancel()
        for future, entry in futures.items():
            if future.cancelled():
                outcomes[entry.sop_instance_uid] = LoadStopped(
                    f"not sent: the load stopped ({stop.reason})")
    spread.close()
    return outcomes


def load(
    out_dir: Path,
    connection: Connection,
    *,
    nodes: Sequence[str] = (),
    method: Method = "rest",
    workers: int = 2,
    retries: int = 2,
    retry_delay: float = 2.0,
    calling_aet: str | None = None,
    progress: ProgressCallback | None = None,
    watch: Callable[[], str | None] | None = None,
) -> LoadResult:
    """Load the converted folder ``out_dir`` into the PACS at ``connection``.

    Parameters
    ----------
    out_dir
        Converted output folder (with ``manifest.csv``).
    connection
        The PACS (its REST URL and credentials); for a cluster, its first node.
    nodes
        The REST URLs of the other nodes of a cluster (:mod:`server.cluster`), reached with
        ``connection``'s credentials (its own URL may be among them). Worker ``k`` sends
        through node ``k`` modulo their number (give at least as many workers as nodes);
        a node found down gets no further work, and what it was sending goes at once to
        the next node. The first node that answers says what the PACS holds, before and
        after.
    method
        ``rest`` (``POST /instances``), ``stow`` (STOW-RS) or ``cstore`` (C-STORE to the
        DICOM port and AE title each node's ``GET /system`` reports).
    workers
        Parallel connections.
    retries
        Extra rounds for the objects that failed.
    retry_delay
        Seconds between rounds.
    calling_aet
        Our AE title for C-STORE. By default a random one (:func:`loader_aet`), registered
        on every node (store only, from 127.0.0.1) for this load only and removed after it:
        no AE title can store into the PACS otherwise, so no other user of this machine can.
    progress
        Called with ``(done, total)`` as objects are handled.
    watch
        Called every second during the load; a text it returns (the PACS's index is down,
        its supervisor is gone: :meth:`server.pacs.supervisor.Health.load_problem`) stops
        the load at once, every object not yet sent reported with that reason.

    Returns
    -------
    LoadResult
        Counts and per-file errors; ``result.ok`` tells whether all is in the PACS.

    Raises
    ------
    ServerError
        When the manifest is unreadable or no node of the PACS can be asked what it holds.
    """
    out_dir = Path(out_dir)
    entries = read_manifest(out_dir)
    pacs = _Nodes.of(connection, nodes)
    result = LoadResult(total=len(entries), nodes=pacs.urls)
    tick = _Ticker(result.total, progress)
    stop = _Stop()
    watching = _watching(watch, stop)
    registered = ""
    try:
        studies = {e.study_uid for e in entries}
        held = pacs.ask(lambda client: client.instance_index(studies))
        todo = _to_send(entries, out_dir, held, result, tick)
        todo += _check_held([e for e in entries if e.sop_instance_uid in held], out_dir, held,
                            pacs, workers, result, tick)
        if todo:
            if method == "cstore" and calling_aet is None:
                calling_aet = registered = loader_aet()
                _register_loader(pacs, registered)
            make_sender = _sender_factory(method, pacs, todo, calling_aet or "")
            failures = _send_with_retries(todo, out_dir, pacs, make_sender, workers, retries,
                                          retry_delay, result, tick, stop)
            by_uid = {e.sop_instance_uid: e for e in entries}
            for uid, exc in failures.items():
                result.failed += 1
                if stop.event.is_set() and not isinstance(exc, LocalFileError):
                    continue  # not sent, or in flight, when the load stopped: said once
                message = (f"{exc}: not sent" if isinstance(exc, LocalFileError)
                           else f"not stored: {exc}")
                result.errors.append(LoadError(by_uid[uid].file(out_dir), uid, message))
        if stop.event.is_set():  # the PACS cannot take more now: say why, once
            unsent = result.total - result.sent - result.already_present
            result.errors.insert(0, LoadError(
                out_dir / MANIFEST_NAME, "",
                f"the load stopped: {stop.reason}; {unsent} object(s) not stored "
                "(re-run load once the PACS can take them: it sends only what is missing)"))
            result.missing = result.total - result.sent - result.already_present
        else:
            _check_present(entries, out_dir, pacs, studies, result)
    finally:
        watching.set()
        if registered:
            _unregister_loader(pacs, registered)
        result.stored_by_node = {pacs.urls[node]: n for node, n in sorted(pacs.stored.items())}
        result.lost_nodes = pacs.lost_nodes()
        pacs.close()
    return result


def loader_aet() -> str:
    """A fresh AE title for one C-STORE load: ``VL-`` and 13 random letters and digits."""
    alphabet = string.ascii_uppercase + string.digits
    return LOADER_AET_PREFIX + "".join(secrets.choice(alphabet) for _ in range(13))


def _register_loader(nodes: _Nodes, aet: str) -> None:
    """Let ``aet`` store, from 127.0.0.1 only, on every node (until it is removed)."""
    entry = {"AET": aet, "Host": "127.0.0.1", "Port": 104, "AllowEcho": True,
             "AllowFind": False, "AllowGet": False, "AllowMove": False, "AllowStore": True,
             "AllowStorageCommitment": False}
    for node in range(len(nodes.connections)):
        nodes.client(node).put_modality(aet, entry)


def _unregister_loader(nodes: _Nodes, aet: str) -> None:
    """Remove ``aet`` from every node that still answers."""
    for node in range(len(nodes.connections)):
        try:
            nodes.client(node).delete_modality(aet)
        except OrthancError:
            pass  # a node that is down forgets it when it restarts (it is not saved)


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
                nodes: _Nodes, workers: int, result: LoadResult,
                tick: Callable[[], None]) -> list[ManifestRow]:
    """Compare each PACS copy in ``entries`` with its manifest file, from ``workers`` threads.

    Equal copies count as already present; differing ones are deleted from the PACS and
    returned, to be sent again; a local file that is missing or not the manifest's is an
    error (and its PACS copy is left alone: there is nothing trustworthy to compare with).
    Each check goes to the first node up.
    """

    def check(entry: ManifestRow) -> str:
        return nodes.ask(lambda client: _check_one(client, entry, entry.file(out_dir),
                                                   held[entry.sop_instance_uid], result))

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
    todo: list[ManifestRow], out_dir: Path, nodes: _Nodes, make_sender: Callable[[int], Sender],
    workers: int, retries: int, retry_delay: float, result: LoadResult,
    tick: Callable[[], None], stop: _Stop,
) -> dict[str, Exception]:
    """Send ``todo``, then re-send the failures ``retries`` times (none once ``stop`` is
    set); the last error of each object still not stored."""
    last_error: dict[str, Exception] = {}
    for attempt in range(1 + max(0, retries)):
        if not todo or (attempt and stop.event.is_set()):
            break
        if attempt:
            time.sleep(retry_delay)
            nodes.revive()
        outcomes = _send_round(todo, out_dir, nodes, make_sender, workers,
                               tick if attempt == 0 else lambda: None, stop)
        retry: list[ManifestRow] = []
        for entry in todo:
            outcome = outcomes[entry.sop_instance_uid]
            if isinstance(outcome, Exception):
                last_error[entry.sop_instance_uid] = outcome
                if not isinstance(outcome, (LocalFileError, LoadStopped)):  # stays so
                    retry.append(entry)
            else:
                last_error.pop(entry.sop_instance_uid, None)
                if outcome == ALREADY:
                    result.already_present += 1
                else:
                    result.sent += 1
        todo = retry
    return last_error


def _check_present(entries: list[ManifestRow], out_dir: Path, nodes: _Nodes,
                   studies: set[str], result: LoadResult) -> None:
    """Look every manifest object up in the PACS (its first node up); count and explain
    what is missing."""
    try:
        present = nodes.ask(lambda client: client.sop_instance_uids(studies))
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
