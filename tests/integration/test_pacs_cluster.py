"""The PACS as a cluster (``serve --index postgresql --nodes 2``, :mod:`server.cluster`):
a load spread over both nodes stores everything once, survives losing a node midway, the
gateway searches past a node that is down, and each node answers DICOM and DICOMweb as the
SQLite server does.

One cluster for the module: a private PostgreSQL, two Orthanc nodes on one storage folder
(node 2 on the ports + 1) and the gateway. Four plain exams (24 objects) of the session's
synthetic release. Tests that kill node 2 start it again before they end. Skipped when
PostgreSQL's server or Orthanc's PostgreSQL plugin is not installed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
import typer
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from typer.testing import CliRunner

from converter.manifest import read_manifest
from pacs_testdata import Output, make_output
from pacs_tools import (
    PYNETDICOM_AET,
    SERVER_AET,
    c_find_answers,
    free_port,
    free_ports,
    pacs_settings,
)
from server.pacs import supervisor as cluster
from server.pacs import orthanc as native
from server.pacs import postgres
from server.pacs import runtime
from server.client import Connection, OrthancClient, dicomweb_client
from server.errors import ServerError, SettingsError
from server.transfer.load import METHODS, LoadResult, RestSender, load
from server.pacs.settings import Modality, ServerSettings
from server.userconfig import ENV_VAR, UserConfig, save_user_config
from server.transfer.verify import verify
from vindr_convert.pacs_commands import register

pytestmark = pytest.mark.integration

OBJECTS = 24  # four plain exams: four MG, one SR, one SEG each
STUDIES, SERIES = 4, 12


@dataclass
class Running:
    """The started cluster, what it holds and how to reach each node."""

    cluster: cluster.Cluster
    out: Path
    output: Output

    @property
    def settings(self) -> ServerSettings:
        return self.cluster.settings

    @property
    def urls(self) -> tuple[str, ...]:
        return self.settings.node_urls

    def connection(self, node: int) -> Connection:
        creds = self.settings.credentials
        return Connection(self.urls[node], creds.username, creds.password)

    def load(self, **options: object) -> LoadResult:
        """The converted folder through both nodes (node 1's connection, node 2 as more)."""
        return load(self.out, self.connection(0), nodes=self.urls, **options)  # type: ignore[arg-type]


def _requirements() -> str | None:
    """Why the cluster cannot run here (None when it can)."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        return "PostgreSQL's server is not installed (/usr/lib/postgresql/*/bin/postgres)"
    try:
        plugin = runtime.select().plugin_dir / "libOrthancPostgreSQLIndex.so"
    except ServerError as exc:
        return f"no Orthanc to run: {exc}"
    if not plugin.exists():
        return f"Orthanc's PostgreSQL index plugin is missing ({plugin})"
    return None


def _settings(data_dir: Path) -> ServerSettings:
    modalities = (Modality(PYNETDICOM_AET, "127.0.0.1", free_port()),)
    base = pacs_settings(data_dir, modalities)
    for _ in range(10):
        try:
            return replace(base, http_port=free_ports(2), dicom_port=free_ports(2),
                           index="postgresql", nodes=2, web_port=free_port())
        except SettingsError:  # ports that happen to clash: draw again
            continue
    raise AssertionError("no ports for two nodes")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    missing = _requirements()
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("cluster-out")
    output = make_output(out, n_studies=4, prefix="two-nodes")  # a release of 44 exams: ~10 s
    started = cluster.start(_settings(tmp_path_factory.mktemp("cluster") / "orthanc"))
    try:
        yield Running(started, out, output)
    finally:
        started.stop()


@pytest.fixture(scope="module")
def first_load(running: Running) -> LoadResult:
    """The module's first load, into the empty cluster, through both nodes."""
    return running.load(workers=2)


@pytest.fixture
def loaded(running: Running, first_load: LoadResult) -> Running:
    """The cluster holding the 24 objects (a re-run sends only what a test removed)."""
    result = running.load(workers=2)
    assert result.ok, result.errors
    return running


def _counts(connection: Connection) -> tuple[int, int, int]:
    """(studies, series, instances) as this node lists them."""
    client = OrthancClient.connect(connection, timeout=30)
    return tuple(  # type: ignore[return-value]
        len(client.session.get(f"{client.url}/{level}", timeout=30).json())
        for level in ("studies", "series", "instances"))


def _empty(running: Running) -> None:
    """Delete every patient (through node 1)."""
    client = OrthancClient.connect(running.connection(0), timeout=60)
    for patient in client.session.get(client.url + "/patients", timeout=30).json():
        client.session.delete(f"{client.url}/patients/{patient}", timeout=60).raise_for_status()
    assert _counts(running.connection(0)) == (0, 0, 0)


def _kill_node_2(running: Running) -> None:
    node = running.cluster.nodes[1]
    assert native.running_pid(running.settings.data_dir, 1) == node.pid
    os.kill(node.pid, signal.SIGKILL)
    node.process.wait()


def _restart_node_2(running: Running) -> None:
    started = running.cluster
    if started.nodes[1].running():
        return
    index = postgres.orthanc_section(started.postgres, cluster.INDEX_CONNECTIONS_PER_NODE)
    started.nodes[1] = native.start(started.settings.node(1), runtime=started.first.runtime,
                                    node=1, index=index)


@pytest.fixture
def node_2_down(loaded: Running) -> Iterator[Running]:
    """Node 2 killed for the test, started again afterwards."""
    _kill_node_2(loaded)
    try:
        yield loaded
    finally:
        _restart_node_2(loaded)


def _gateway_json(running: Running, target: str) -> list[dict]:
    request = urllib.request.Request(f"{running.settings.web_url}{target}",
                                     headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200, target
        return json.loads(answer.read() or b"[]")


def _left_cc(running: Running) -> set[str]:
    return {s.mg_uids[("L", "CC")] for s in running.output.studies}


# --- load ---------------------------------------------------------------------------------


def test_load_spread_over_both_nodes_stores_everything_once(
    running: Running, first_load: LoadResult
) -> None:
    result = first_load
    assert result.ok, result.errors
    assert (result.total, result.sent, result.already_present) == (OBJECTS, OBJECTS, 0)
    assert result.nodes == list(running.urls) and result.lost_nodes == []
    assert set(result.stored_by_node) == set(running.urls)  # both nodes stored some
    assert sum(result.stored_by_node.values()) == OBJECTS
    # the same index behind both nodes: every object once, no study or series twice
    assert _counts(running.connection(0)) == _counts(running.connection(1)) \
        == (STUDIES, SERIES, OBJECTS)
    checked = verify(running.output.release, running.out, running.connection(1))
    assert checked.ok, checked.problems
    assert checked.instances == OBJECTS


@pytest.mark.parametrize("method", [m for m in METHODS if m != "rest"])
def test_stow_and_cstore_spread_too(loaded: Running, method: str) -> None:
    _empty(loaded)
    result = loaded.load(method=method, workers=2)
    assert result.ok, result.errors
    assert result.sent == OBJECTS and set(result.stored_by_node) == set(loaded.urls)
    assert _counts(loaded.connection(1)) == (STUDIES, SERIES, OBJECTS)


def test_load_survives_losing_node_2_midway(
    loaded: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 2 is killed once a third of the objects are stored; no send completes in
    between (the later sends wait for the kill), so the kill happens mid-load for sure.
    ``retries=0``: the object node 2 was about to take must go to node 1 in the same round.
    """
    _empty(loaded)
    node_2 = loaded.urls[1]
    third = OBJECTS // 3
    lock, killed = threading.Lock(), threading.Event()
    started = [0]
    calls: list[tuple[str, bool]] = []  # (node, after the kill) of every send that went out
    killed_at: list[int] = []
    waited_in_vain: list[str] = []
    send = RestSender.send

    def send_after_the_kill(self: RestSender, entry, path):  # type: ignore[no-untyped-def]
        with lock:
            number, started[0] = started[0], started[0] + 1
        if number >= third and not killed.wait(30):
            waited_in_vain.append(entry.sop_instance_uid)
        with lock:
            calls.append((self.client.url, killed.is_set()))
        return send(self, entry, path)

    def progress(done: int, total: int) -> None:
        if done >= third and not killed.is_set():
            _kill_node_2(loaded)
            killed_at.append(done)
            killed.set()

    try:
        monkeypatch.setattr(RestSender, "send", send_after_the_kill)
        result = loaded.load(workers=2, retries=0, progress=progress)
    finally:
        monkeypatch.undo()
        _restart_node_2(loaded)
    assert killed_at == [third] and third < result.total, "node 2 not killed mid-load"
    assert not waited_in_vain
    assert result.ok, result.errors
    assert (result.sent, result.failed, result.missing) == (OBJECTS, 0, 0)
    assert [line.split(": ")[0] for line in result.lost_nodes] == [node_2]
    assert result.stored_by_node.get(node_2, 0) >= 1  # it worked until killed
    assert sum(result.stored_by_node.values()) == OBJECTS
    # after the kill node 2 got the one send that found it dead, and nothing more
    assert sum(1 for url, after in calls if url == node_2 and after) == 1
    checked = verify(loaded.output.release, loaded.out, loaded.connection(0))
    assert checked.ok, checked.problems
    assert _counts(loaded.connection(0)) == _counts(loaded.connection(1)) \
        == (STUDIES, SERIES, OBJECTS)


def test_load_asks_past_a_node_that_is_down(node_2_down: Running) -> None:
    """Node 2 given first: what the PACS holds is asked of node 1."""
    running = node_2_down
    result = load(running.out, running.connection(1), nodes=[running.urls[0]])
    assert result.ok, result.errors
    assert (result.already_present, result.sent) == (OBJECTS, 0)
    assert [line.split(": ")[0] for line in result.lost_nodes] == [running.urls[1]]


def test_cli_loads_through_every_recorded_node(
    loaded: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = loaded.settings.credentials
    path = tmp_path / "server.json"
    save_user_config(UserConfig(creds.username, creds.password, url=loaded.urls[0],
                                nodes=list(loaded.urls)), path)
    monkeypatch.setenv(ENV_VAR, str(path))
    app = typer.Typer()
    register(app)
    _empty(loaded)
    answer = CliRunner().invoke(app, ["load", str(loaded.out)])
    assert answer.exit_code == 0, answer.output
    assert "loading through 2 nodes, 2 workers" in answer.output
    used = re.search(r"2 nodes used, objects stored through each: (\S+) (\d+), (\S+) (\d+)",
                     answer.output)
    assert used, answer.output
    assert (used[1], used[3]) == loaded.urls and int(used[2]) > 0 and int(used[4]) > 0
    assert f"{OBJECTS} objects: {OBJECTS} sent, 0 already present" in answer.output
    # an explicit --url is that node only
    answer = CliRunner().invoke(app, ["load", str(loaded.out), "--url", loaded.urls[1]])
    assert answer.exit_code == 0, answer.output
    assert "loading through" not in answer.output and "nodes used" not in answer.output
    assert f"{OBJECTS} objects: 0 sent, {OBJECTS} already present" in answer.output


# --- the gateway and the nodes, as the SQLite server ----------------------------------------


def _skipped_node_2(running: Running) -> int:
    """How many times the gateway's log says it went past node 2."""
    log = native.Layout(running.settings.data_dir).logs / "gateway.log"
    port = running.settings.http_port + 1
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count(f"PACS node 127.0.0.1:{port} unreachable")


def test_gateway_searches_past_node_2_down(node_2_down: Running) -> None:
    study = node_2_down.output.studies[0]
    skipped = _skipped_node_2(node_2_down)
    for _ in range(3):  # the gateway takes the nodes in turn: node 2's turn comes
        found = _gateway_json(node_2_down, "/dicom-web/instances?ImageLaterality=L&ViewPosition=CC")
        assert {item["00080018"]["Value"][0] for item in found} == _left_cc(node_2_down)
        studies = _gateway_json(node_2_down, f"/dicom-web/studies?PatientID={study.patient_id}")
        assert [item["0020000D"]["Value"][0] for item in studies] == [study.study_uid]
    assert _skipped_node_2(node_2_down) > skipped  # node 2's turns went to node 1


def test_qido_laterality_and_view_through_the_gateway(loaded: Running) -> None:
    found = _gateway_json(loaded, "/dicom-web/instances?ImageLaterality=L&ViewPosition=CC")
    assert {item["00080018"]["Value"][0] for item in found} == _left_cc(loaded)
    for item in found:
        assert item["00200062"]["Value"] == ["L"] and item["00185101"]["Value"] == ["CC"]


def test_c_find_study_by_patient_id_on_node_2(loaded: Running) -> None:
    study = loaded.output.studies[1]
    ae = AE(ae_title=PYNETDICOM_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", loaded.settings.dicom_port + 1, ae_title=SERVER_AET)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = study.patient_id
    query.StudyInstanceUID = ""
    query.StudyDescription = ""
    answers = c_find_answers(assoc, query, StudyRootQueryRetrieveInformationModelFind)
    assert [ds.StudyInstanceUID for ds in answers] == [study.study_uid]
    assert answers[0].StudyDescription == f"VinDr-Mammo-{study.split}"


@pytest.mark.parametrize("kind", ["MG", "SEG"])
def test_wado_retrieve_through_node_2(loaded: Running, kind: str) -> None:
    study = loaded.output.studies[2]
    entry = next(e for e in read_manifest(loaded.out)
                 if e.study_uid == study.study_uid and e.kind == kind)
    web = dicomweb_client(loaded.connection(1))
    got = web.retrieve_instance(entry.study_uid, entry.series_uid, entry.sop_instance_uid)
    original = pydicom.dcmread(entry.file(loaded.out))
    assert got == original
    assert got.PixelData == original.PixelData
