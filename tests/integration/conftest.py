"""A real PACS for the session: the default Orthanc build (server.pacs.runtime), its front door
and supervisor, started as `serve --background` starts them, on free ports.

It knows two AE titles besides its own: ``PYNETDICOM`` (a pynetdicom storage SCP started
here, the C-MOVE destination; the pynetdicom SCU calls with the same title) and ``DCMTK``
(dcmtk's tools), both at 127.0.0.1, and ``ELSEWHERE`` at 127.0.0.2 (for the host check). Four plain exams of a converted synthetic release (picked by pacs_testdata)
are loaded once over REST.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import pacs_testdata
from pacs_testdata import Output, make_output
from pacs_tools import (
    TOPOLOGY,
    DCMTK_AET,
    ELSEWHERE_AET,
    ELSEWHERE_HOST,
    PYNETDICOM_AET,
    Pacs,
    StorageSCP,
    free_port,
    pacs_settings,
    start_pacs,
)
from server.client import OrthancClient
from server.pacs import runtime
from server.pacs.settings import Modality
from server.transfer.load import load


@pytest.fixture(scope="session", autouse=True)
def _private_user_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the tests away from the real ~/.config/vindr-dicom/server.json."""
    path = tmp_path_factory.mktemp("userconfig") / "server.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VINDR_DICOM_CONFIG", str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def _testdata_scratch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Synthetic releases and their full conversions (pacs_testdata) go to pytest's tmp dirs."""
    pacs_testdata.set_scratch(tmp_path_factory.mktemp("releases"))


@pytest.fixture(scope="session")
def pacs_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Output]:
    """Four plain exams (both splits) of a converted synthetic release, and that release.

    Real converter output, fully known (laterality/view of each UID...), so the DIMSE and
    DICOMweb tests can assert exact answers; test_pacs_converter.py loads a whole release.
    """
    out = tmp_path_factory.mktemp("converted")
    return out, make_output(out, n_studies=4)


@pytest.fixture(scope="session")
def pacs(
    tmp_path_factory: pytest.TempPathFactory, pacs_output: tuple[Path, Output]
) -> Iterator[Pacs]:
    """The running Orthanc with the converted folder loaded."""
    scp = StorageSCP(PYNETDICOM_AET, free_port()).start()
    modalities = (
        Modality(PYNETDICOM_AET, "127.0.0.1", scp.port),
        Modality(DCMTK_AET, "127.0.0.1", free_port()),
        Modality(ELSEWHERE_AET, ELSEWHERE_HOST, free_port()),
    )
    if TOPOLOGY == "cluster":
        # PostgreSQL index, two nodes: loaded through node 1, every test talks to node 2.
        settings = pacs_settings(None, modalities, index="postgresql", nodes=2)
    else:
        settings = pacs_settings(None, modalities)
    running = start_pacs(settings)
    try:
        out, output = pacs_output
        under_test = settings.node(settings.nodes - 1)
        result = load(out, running.admin, nodes=settings.node_urls)  # spread over the nodes
        assert result.ok, result.errors
        connection = running.node(settings.nodes - 1)
        client = OrthancClient.connect(connection)
        yield Pacs(
            running,
            under_test,
            connection,
            client,
            client.system(),
            scp,
            out,
            output.studies,
            output.release,
        )
    finally:
        running.stop()
        scp.stop()


@pytest.fixture(scope="session")
def orthanc_version(pacs: Pacs) -> tuple[int, ...]:
    """Version of the Orthanc under test."""
    return pacs.system.version_tuple


def pytest_report_header(config: pytest.Config) -> str:
    """Say which Orthanc the suite runs against."""
    try:
        chosen = runtime.select()
        shape = ("PostgreSQL index, 2 nodes (tests talk to node 2)" if TOPOLOGY == "cluster"
                 else "SQLite index, 1 node")
        return f"orthanc: {chosen.version} ({chosen.origin}); {shape}"
    except Exception as exc:  # the header must never break collection
        return f"orthanc: not available ({exc})"
