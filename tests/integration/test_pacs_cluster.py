"""The PACS as a cluster (``serve --index postgresql --nodes 2``): a load spread over both
nodes stores everything once, survives losing a node midway, the front searches past a node
that is down, each node answers DICOM and DICOMweb as the SQLite server does, and the
supervisor brings back a node, the front or the index killed during a load.

One cluster for the module, started as `serve --background` starts it: a private
PostgreSQL, two Orthanc nodes on one storage folder (node 2 on the ports + 1) and the front
door. Four plain exams (24 objects) of the session's synthetic release. A test that needs
node 2 to stay down freezes the supervisor (SIGSTOP) while it runs, so that it does not
restart it at once; it is thawed (and node 2 restarted) afterwards. Skipped when
PostgreSQL's server or Orthanc's PostgreSQL plugin is not installed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
import typer
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from typer.testing import CliRunner

from converter.manifest import read_manifest
from pacs_testdata import Output, make_output
from pacs_tools import (
    PYNETDICOM_AET,
    READER,
    SERVER_AET,
    Running,
    c_find_answers,
    free_port,
    pacs_settings,
    start_pacs,
)
from server.client import Connection, OrthancClient, dicomweb_client
from server.errors import ServerError, SettingsError
from server.pacs import processes, runtime, supervisor
from server.pacs.layout import DataLayout
from server.pacs.settings import Modality, ServerSettings
from server.transfer.load import METHODS, LoadResult, RestSender, load
from server.transfer.verify import verify
from server.userconfig import ENV_VAR, UserConfig, save_user_config
from vindr_convert.pacs_commands import register

pytestmark = pytest.mark.integration

OBJECTS = 24  # four plain exams: four MG, one SR, one SEG each
STUDIES, SERIES = 4, 12
REPO = Path(__file__).parents[2]


@dataclass
class Cluster:
    """The started cluster, what it holds and how to reach each node."""

    pacs: Running
    out: Path
    output: Output

    @property
    def settings(self) -> ServerSettings:
        return self.pacs.settings

    @property
    def urls(self) -> tuple[str, ...]:
        return self.settings.node_urls

    def connection(self, node: int) -> Connection:
        return self.pacs.node(node)

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


def _settings() -> ServerSettings:
    modalities = (Modality(PYNETDICOM_AET, "127.0.0.1", free_port()),)
    for _ in range(10):
        try:
            return pacs_settings(None, modalities, index="postgresql", nodes=2)
        except SettingsError:  # ports that happen to clash: draw again
            continue
    raise AssertionError("no ports for two nodes")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = _requirements()
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("cluster-out")
    output = make_output(out, n_studies=4, prefix="two-nodes")  # a release of 44 exams: ~10 s
    started = start_pacs(_settings())
    try:
        yield Cluster(started, out, output)
    finally:
        started.stop()


@pytest.fixture(scope="module")
def first_load(running: Cluster) -> LoadResult:
    """The module's first load, into the empty cluster, through both nodes."""
    return running.load(workers=2)


@pytest.fixture
def loaded(running: Cluster, first_load: LoadResult) -> Cluster:
    """The cluster holding the 24 objects (a re-run sends only what a test removed)."""
    wait_up(running)
    result = running.load(workers=2)
    assert result.ok, result.errors
    return running


def wait_up(running: Cluster, timeout: float = 90) -> supervisor.Health:
    """The cluster's health once every part is up again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = supervisor.health(running.settings.data_dir)
        if health.problem is None:
            return health
        time.sleep(0.1)
    raise AssertionError(f"not up again: {supervisor.health(running.settings.data_dir)}")


def _counts(connection: Connection) -> tuple[int, int, int]:
    """(studies, series, instances) as this node lists them."""
    client = OrthancClient.connect(connection, timeout=30)
    return tuple(  # type: ignore[return-value]
        len(client.session.get(f"{client.url}/{level}", timeout=30).json())
        for level in ("studies", "series", "instances"))


def _empty(running: Cluster) -> None:
    """Delete every patient (through node 1)."""
    client = OrthancClient.connect(running.connection(0), timeout=60)
    for patient in client.session.get(client.url + "/patients", timeout=30).json():
        client.session.delete(f"{client.url}/patients/{patient}", timeout=60).raise_for_status()
    assert _counts(running.connection(0)) == (0, 0, 0)


def _supervisor_pid(running: Cluster) -> int:
    pid = processes.recorded(DataLayout.of(running.settings.data_dir).supervisor_pid)
    assert pid is not None
    return pid


def _kill_node_2(running: Cluster) -> int:
    pid = running.pacs.part_pid("Orthanc node 2")
    os.kill(pid, signal.SIGKILL)
    while processes.alive(pid):
        time.sleep(0.01)
    return pid


@pytest.fixture
def node_2_down(loaded: Cluster) -> Iterator[Cluster]:
    """Node 2 killed for the test, the supervisor frozen meanwhile; both back afterwards."""
    leader = _supervisor_pid(loaded)
    os.kill(leader, signal.SIGSTOP)
    try:
        _kill_node_2(loaded)
        yield loaded
    finally:
        os.kill(leader, signal.SIGCONT)
        wait_up(loaded)


def _front_json(running: Cluster, target: str) -> list[dict]:
    answer = requests.get(f"{running.settings.web_url}{target}", timeout=60,
                          auth=(READER.name, READER.password),
                          headers={"Accept": "application/dicom+json"})
    assert answer.status_code == 200, (target, answer.text[:200])
    return answer.json() if answer.content.strip() else []


def _left_cc(running: Cluster) -> set[str]:
    return {s.mg_uids[("L", "CC")] for s in running.output.studies}


# --- load ---------------------------------------------------------------------------------


def test_load_spread_over_both_nodes_stores_everything_once(
    running: Cluster, first_load: LoadResult
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
def test_stow_and_cstore_spread_too(loaded: Cluster, method: str) -> None:
    _empty(loaded)
    result = loaded.load(method=method, workers=2)
    assert result.ok, result.errors
    assert result.sent == OBJECTS and set(result.stored_by_node) == set(loaded.urls)
    assert _counts(loaded.connection(1)) == (STUDIES, SERIES, OBJECTS)


def test_load_survives_losing_node_2_midway(
    loaded: Cluster, monkeypatch: pytest.MonkeyPatch
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
    health = wait_up(loaded)  # the supervisor started node 2 again
    assert next(p for p in health.parts if p.name == "Orthanc node 2").restarts >= 1
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


def test_load_asks_past_a_node_that_is_down(node_2_down: Cluster) -> None:
    """Node 2 given first: what the PACS holds is asked of node 1."""
    running = node_2_down
    result = load(running.out, running.connection(1), nodes=[running.urls[0]])
    assert result.ok, result.errors
    assert (result.already_present, result.sent) == (OBJECTS, 0)
    assert [line.split(": ")[0] for line in result.lost_nodes] == [running.urls[1]]


def test_cli_loads_through_every_recorded_node(
    loaded: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    # both nodes listed, every object stored once through them (how many each took depends
    # on which worker is quicker: test_load_spread_over_both_nodes_stores_everything_once
    # checks the spreading itself)
    assert (used[1], used[3]) == loaded.urls and int(used[2]) + int(used[4]) == OBJECTS
    assert f"{OBJECTS} objects: {OBJECTS} sent, 0 already present" in answer.output
    # an explicit --url is that node only
    answer = CliRunner().invoke(app, ["load", str(loaded.out), "--url", loaded.urls[1]])
    assert answer.exit_code == 0, answer.output
    assert "loading through" not in answer.output and "nodes used" not in answer.output
    assert f"{OBJECTS} objects: 0 sent, {OBJECTS} already present" in answer.output


# --- the front and the nodes, as the SQLite server ------------------------------------------


def test_front_searches_past_node_2_down(node_2_down: Cluster) -> None:
    study = node_2_down.output.studies[0]
    audit = DataLayout.of(node_2_down.settings.data_dir).audit_log
    before = len(audit.read_text().splitlines())
    for _ in range(4):  # least_conn takes the nodes in turn: node 2's turn comes
        found = _front_json(node_2_down, "/dicom-web/instances?ImageLaterality=L&ViewPosition=CC")
        assert {item["00080018"]["Value"][0] for item in found} == _left_cc(node_2_down)
        studies = _front_json(node_2_down, f"/dicom-web/studies?PatientID={study.patient_id}")
        assert [item["0020000D"]["Value"][0] for item in studies] == [study.study_uid]
    time.sleep(0.5)
    node_1 = f"127.0.0.1:{node_2_down.settings.http_port}"
    lines = [json.loads(line) for line in audit.read_text().splitlines()[before:]]
    assert lines and all(line["node"].endswith(node_1) for line in lines)  # answered by node 1


def test_qido_laterality_and_view_through_the_front(loaded: Cluster) -> None:
    found = _front_json(loaded, "/dicom-web/instances?ImageLaterality=L&ViewPosition=CC")
    assert {item["00080018"]["Value"][0] for item in found} == _left_cc(loaded)
    for item in found:
        assert item["00200062"]["Value"] == ["L"] and item["00185101"]["Value"] == ["CC"]


def test_c_find_study_by_patient_id_on_node_2(loaded: Cluster) -> None:
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
def test_wado_retrieve_through_node_2(loaded: Cluster, kind: str) -> None:
    study = loaded.output.studies[2]
    entry = next(e for e in read_manifest(loaded.out)
                 if e.study_uid == study.study_uid and e.kind == kind)
    web = dicomweb_client(loaded.connection(1))
    got = web.retrieve_instance(entry.study_uid, entry.series_uid, entry.sop_instance_uid)
    original = pydicom.dcmread(entry.file(loaded.out))
    assert got == original
    assert got.PixelData == original.PixelData


# --- a part killed during a load: noticed, restarted, and the re-run completes -------------

SLOW_LOAD = """
import runpy, sys, time
from server.transfer.load import RestSender
send = RestSender.send
def slow_send(self, entry, path):
    time.sleep(0.2)
    return send(self, entry, path)
RestSender.send = slow_send
sys.argv = ["vindr-convert", *sys.argv[1:]]
runpy.run_module("vindr_convert", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("part", ["front door (nginx)", "Orthanc node 2", "index (PostgreSQL)"])
def test_a_part_killed_during_a_load_is_noticed_and_restarted(
        loaded: Cluster, part: str, tmp_path: Path) -> None:
    """The part SIGKILLed once 6 objects are stored, during a `vindr-convert load` through
    both nodes: the supervisor notices within seconds and starts it again; the load either
    completes through what is left (the front is not on its way; node 1 takes node 2's work)
    or stops at once naming the dead part (the index); its re-run completes and verify is
    clean."""
    _empty(loaded)
    creds = loaded.settings.credentials
    config = tmp_path / "server.json"
    save_user_config(UserConfig(creds.username, creds.password, url=loaded.urls[0],
                                nodes=list(loaded.urls), engine="native",
                                data_dir=str(loaded.settings.data_dir),
                                web_url=loaded.settings.web_url), config)
    env = dict(os.environ, **{ENV_VAR: str(config)})
    loading = subprocess.Popen([sys.executable, "-c", SLOW_LOAD, "load", str(loaded.out)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    node_1 = OrthancClient.connect(loaded.connection(0))
    deadline = time.monotonic() + 120
    while int(node_1.session.get(node_1.url + "/statistics", timeout=10).json()
              ["CountInstances"]) < 6:
        assert loading.poll() is None and time.monotonic() < deadline, "the load ended early"
        time.sleep(0.02)
    killed = loaded.pacs.part_pid(part)
    os.kill(killed, signal.SIGKILL)
    at = time.monotonic()
    while True:  # the supervisor notices and restarts it
        record = next(p for p in supervisor.health(loaded.settings.data_dir).parts
                      if p.name == part)
        if record.restarts >= 1 or record.state != supervisor.UP:
            break
        assert time.monotonic() - at < 5, f"the {part}'s death went unnoticed"
        time.sleep(0.05)
    text, _ = loading.communicate(timeout=300)
    if part == "index (PostgreSQL)":
        assert loading.returncode == 1, text
        assert "the load stopped: the index (PostgreSQL) is" in text, text
        assert time.monotonic() - at < 30  # it did not hang
    else:
        assert loading.returncode in (0, 1), text
    health = wait_up(loaded)
    record = next(p for p in health.parts if p.name == part)
    assert record.pid != killed and "SIGKILL" in record.last_exit
    again = subprocess.run([sys.executable, "-m", "vindr_convert", "load", str(loaded.out)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    checked = verify(loaded.output.release, loaded.out, loaded.connection(1))
    assert checked.ok, checked.problems
    assert _counts(loaded.connection(0)) == (STUDIES, SERIES, OBJECTS)
