"""Helpers for the PACS tests: free ports, data folders the PACS's account can reach, a
running PACS (the whole of it, as `serve --background` starts it), dcmtk tools, a pynetdicom
storage SCP, C-FIND cases."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt

from pacs_testdata import LoadedStudy
from server.client import Connection, OrthancClient, SystemInfo
from server.pacs import accounts, engine, orthanc, processes, supervisor
from server.pacs.settings import Credentials, Modality, ServerSettings

SERVER_AET = "VINDR-TEST"
DCMTK_AET = "DCMTK"
PYNETDICOM_AET = "PYNETDICOM"
ELSEWHERE_AET = "ELSEWHERE"  # registered at another loopback address than the tests use
ELSEWHERE_HOST = "127.0.0.2"


free_port = processes.free_port
free_ports = processes.free_ports
ADMIN = Credentials("tester", "test-password-1")
READER = accounts.Account("reader", "reader-password-1", accounts.READ)
WRITER = accounts.Account("writer", "writer-password-1", accounts.WRITE)
_BASE: list[Path] = []


def pacs_folder(name: str) -> Path:
    """A new folder for a PACS's data that the account the PACS runs as can reach (root's
    tests: pytest's own tmp folders are closed to others, mode 700)."""
    if not _BASE:
        base = Path(tempfile.mkdtemp(prefix="vindr-pacs-tests-", dir="/var/tmp"))
        base.chmod(0o711)
        _BASE.append(base)
        atexit.register(shutil.rmtree, base, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_BASE[0]))


def dcmtk(tool: str) -> str:
    """Path of dcmtk's ``tool``, never pynetdicom's same-named script in the Python bin dir."""
    for folder in ("/usr/bin", "/bin", "/usr/local/bin"):
        path = Path(folder) / tool
        if path.is_file() and Path(sys.executable).parent != path.parent:
            return str(path)
    raise FileNotFoundError(f"dcmtk's {tool} not found: apt-get install dcmtk")


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class StorageSCP:
    """A pynetdicom storage SCP collecting what it receives (C-MOVE destination)."""

    aet: str
    port: int
    received: list[Dataset] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> StorageSCP:
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = AllStoragePresentationContexts

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            with self.lock:
                self.received.append(ds)
            return 0x0000

        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        return self

    def take(self) -> list[Dataset]:
        """What arrived since the last call."""
        with self.lock:
            got, self.received = self.received, []
        return got

    def stop(self) -> None:
        self._server.shutdown()


# The PACS the session's tests run against: ``sqlite`` (one node) or ``cluster`` (a
# PostgreSQL index and two nodes; `make test` runs the DIMSE/DICOMweb tests against both).
TOPOLOGY = os.environ.get("VINDR_TEST_PACS", "sqlite")


@dataclass
class Running:
    """A PACS started by :func:`running_pacs`."""

    settings: ServerSettings

    @property
    def admin(self) -> Connection:
        """The admin's connection to node 1 (Orthanc's own port)."""
        return orthanc.admin_connection(self.settings.node(0))

    def node(self, node: int) -> Connection:
        """The admin's connection to node ``node`` (from 0)."""
        return orthanc.admin_connection(self.settings.node(node))

    def front(self, account: accounts.Account | None = READER) -> Connection:
        """The front door as ``account`` (the reader by default; None: no credentials)."""
        if account is None:
            return Connection(self.settings.web_url)
        return Connection(self.settings.web_url, account.name, account.password)

    def part_pid(self, name: str) -> int:
        """The pid of a part (``"Orthanc node 1"``, ``"index (PostgreSQL)"``...)."""
        for part in supervisor.health(self.settings.data_dir).parts:
            if part.name == name and part.pid:
                return part.pid
        raise LookupError(name)

    def stop(self) -> None:
        engine.stop(self.settings.data_dir)


def start_pacs(settings: ServerSettings, with_accounts: bool = True) -> Running:
    """The whole PACS on ``settings`` in the background (as `serve --background`), with the
    test accounts (:data:`READER`, :data:`WRITER`)."""
    if with_accounts:
        for account in (READER, WRITER):
            accounts.add(settings.data_dir, account, admin=settings.credentials.username)
    engine.start_background(settings)
    return Running(settings)


@contextmanager
def running_pacs(settings: ServerSettings, with_accounts: bool = True) -> Iterator[Running]:
    """:func:`start_pacs` for the ``with`` block, then stopped."""
    running = start_pacs(settings, with_accounts)
    try:
        yield running
    finally:
        running.stop()


def files_read(pacs: Pacs) -> int:
    """W001 warnings ("Accessing DICOM tags from storage": Orthanc read a DICOM file to
    answer a query) in every node's Orthanc log."""
    logs = Path(pacs.settings.data_dir).rglob("logs/*.log*")
    return sum(p.read_text(errors="replace").count("W001") for p in logs if not p.is_symlink())


def c_find_answers(assoc, query: Dataset, model: object) -> list[Dataset]:
    """The identifiers a C-FIND on ``assoc`` answers (every status checked), then the
    association is released."""
    answers = []
    for status, identifier in assoc.send_c_find(query, model):
        assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01), status
        if status.Status in (0xFF00, 0xFF01):
            answers.append(identifier)
    assoc.release()
    return answers


def pacs_settings(data_dir: Path | None = None, modalities: tuple[Modality, ...] = (),
                  **kwargs: object) -> ServerSettings:
    """Settings on free ports with fixed test credentials, in a folder the PACS's account
    can reach (a new one when ``data_dir`` is None)."""
    nodes = int(kwargs.get("nodes", 1))  # type: ignore[arg-type]
    fields = dict(
        data_dir=data_dir or pacs_folder("orthanc"),
        credentials=ADMIN,
        http_port=free_ports(nodes),
        dicom_port=free_ports(nodes),
        web_port=free_port(),
        aet=SERVER_AET,
        modalities=modalities,
    )
    fields.update(kwargs)
    return ServerSettings(**fields)  # type: ignore[arg-type]


@dataclass
class Pacs:
    """The session's running PACS and what was loaded into it."""

    running: Running
    settings: ServerSettings  # the node under test's (node 2 of a cluster)
    connection: Connection  # the admin's, to the node under test
    client: OrthancClient
    system: SystemInfo
    scp: StorageSCP
    out: Path  # the converted folder loaded (manifest.csv, images/, sr/, seg/)
    studies: list[LoadedStudy]
    release: Path  # the synthetic release it was converted from (verify's src)

    @property
    def dicom_port(self) -> int:
        """Orthanc's DICOM port."""
        return self.settings.dicom_port

    def front(self, account: accounts.Account | None = READER) -> Connection:
        """The front door as ``account`` (the reader by default)."""
        return self.running.front(account)
