"""Helpers for the PACS tests: free ports, dcmtk tools, a pynetdicom storage SCP, C-FIND cases."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt

from pacs_testdata import LoadedStudy
from server.pacs import orthanc as native
from server.front.gateway import Gateway, GatewaySettings, start_gateway
from server.client import Connection, OrthancClient
from server.pacs.settings import Credentials, Modality, ServerSettings

SERVER_AET = "VINDR-TEST"
DCMTK_AET = "DCMTK"
PYNETDICOM_AET = "PYNETDICOM"
ELSEWHERE_AET = "ELSEWHERE"  # registered at another loopback address than the tests use
ELSEWHERE_HOST = "127.0.0.2"


free_port = native.free_port
free_ports = native.free_ports


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


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[Gateway]:
    """A gateway serving in a thread for the ``with`` block, then shut down."""
    gateway, thread = start_gateway(settings)
    try:
        yield gateway
    finally:
        gateway.shutdown()
        gateway.server_close()
        thread.join(timeout=5)


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


def pacs_settings(data_dir: Path, modalities: tuple[Modality, ...] = ()) -> ServerSettings:
    """Settings on free ports with fixed test credentials."""
    return ServerSettings(
        data_dir=data_dir,
        credentials=Credentials("tester", "test-password-1"),
        http_port=free_port(),
        dicom_port=free_port(),
        aet=SERVER_AET,
        modalities=modalities,
    )


@dataclass
class Pacs:
    """The session's running PACS and what was loaded into it."""

    server: native.NativeServer
    settings: ServerSettings
    connection: Connection
    client: OrthancClient
    scp: StorageSCP
    out: Path  # the converted folder loaded (manifest.csv, images/, sr/, seg/)
    studies: list[LoadedStudy]
    release: Path  # the synthetic release it was converted from (verify's src)

    @property
    def dicom_port(self) -> int:
        """Orthanc's DICOM port."""
        return self.settings.dicom_port
