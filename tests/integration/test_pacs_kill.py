"""Nothing lost: a ``load`` process killed midway, or Orthanc killed midway through a load
(the supervisor restarts it), and the same load re-run: every manifest object is in the
PACS exactly once, as the manifest's bytes (verify's content check), and nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from converter.manifest import read_manifest
from pacs_testdata import Output, make_output
from pacs_tools import pacs_settings, running_pacs
from server.client import Connection, OrthancClient
from server.pacs import supervisor
from server.transfer.verify import verify

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).parents[2]
# `python -m vindr_convert load ...`, with each REST send slowed down (these test objects are
# tiny: unslowed, the whole load takes less time than it takes to notice it has started).
SLOW_LOAD = """
import runpy, sys, time
from server.transfer.load import RestSender
send = RestSender.send
def slow_send(self, entry, path):
    time.sleep(0.15)
    return send(self, entry, path)
RestSender.send = slow_send
sys.argv = ["vindr-convert", *sys.argv[1:]]
runpy.run_module("vindr_convert", run_name="__main__")
"""


def load_command(out: Path, connection: Connection, slow: bool) -> list[str]:
    start = [sys.executable, "-c", SLOW_LOAD] if slow else [sys.executable, "-m", "vindr_convert"]
    return [*start, "load", str(out), "--url", connection.url, "--user",
            str(connection.username), "--password", str(connection.password), "--workers", "1"]


def count(client: OrthancClient) -> int:
    return int(client.session.get(client.url + "/statistics", timeout=10).json()["CountInstances"])


def wait_for_count(client: OrthancClient, at_least: int, process: subprocess.Popen) -> int:
    """Poll until Orthanc holds ``at_least`` instances (the load still running)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        held = count(client)
        if held >= at_least:
            return held
        assert process.poll() is None, "the load ended before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("the load did not progress")


def assert_complete(out: Path, output: Output, connection: Connection) -> None:
    """Every manifest object once, nothing else, and each the manifest's bytes."""
    client = OrthancClient.connect(connection)
    entries = read_manifest(out)
    assert count(client) == len(entries)
    held = client.instance_index({e.study_uid for e in entries})
    assert set(held) == {e.sop_instance_uid for e in entries}
    checked = verify(output.release, out, connection)
    assert checked.ok, checked.problems


def rerun(out: Path, connection: Connection) -> subprocess.CompletedProcess[str]:
    return subprocess.run(load_command(out, connection, slow=False), cwd=REPO, text=True,
                          capture_output=True, timeout=300, check=False)


def test_killed_load_completes_on_rerun(tmp_path: Path) -> None:
    out = tmp_path / "out"
    output = make_output(out, n_studies=4, prefix="pacs-test")
    with running_pacs(pacs_settings()) as running:
        connection = running.admin
        client = OrthancClient.connect(connection)
        loading = subprocess.Popen(load_command(out, connection, slow=True), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        held = wait_for_count(client, 6, loading)
        loading.send_signal(signal.SIGKILL)
        assert loading.wait(30) == -signal.SIGKILL
        assert held < 24
        again = rerun(out, connection)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 failed, 0 missing" in again.stdout
        assert_complete(out, output, connection)


def wait_up(data_dir: Path, timeout: float = 60) -> supervisor.Health:
    """The PACS's health once every part is up again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = supervisor.health(data_dir)
        if health.problem is None:
            return health
        time.sleep(0.1)
    raise AssertionError(f"not up again: {supervisor.health(data_dir).problem}")


def test_orthanc_killed_during_a_load_is_restarted_and_the_rerun_completes(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    output = make_output(out, n_studies=4, prefix="pacs-test")
    with running_pacs(pacs_settings()) as running:
        connection = running.admin
        client = OrthancClient.connect(connection)
        loading = subprocess.Popen(load_command(out, connection, slow=True), cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_count(client, 6, loading)
        killed = running.part_pid("Orthanc node 1")
        os.kill(killed, signal.SIGKILL)
        output_text, _ = loading.communicate(timeout=300)
        # it completes through its retries once the node is back, or says what is missing
        assert loading.returncode in (0, 1), output_text
        health = wait_up(running.settings.data_dir)
        node = next(p for p in health.parts if p.name == "Orthanc node 1")
        assert node.restarts == 1 and node.pid != killed and "SIGKILL" in node.last_exit
        again = rerun(out, connection)
        assert again.returncode == 0, again.stdout + again.stderr
        assert_complete(out, output, connection)
