"""``load``: every method stores everything once; re-runs add nothing; an interrupted load
finishes on a re-run; failures name their file."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from converter.manifest import ManifestRow, read_manifest
from pacs_testdata import make_output
from pacs_tools import Pacs, pacs_settings, running_pacs
from server.client import Connection
from server.pacs import supervisor
from server.transfer.load import ALREADY, METHODS, RestSender, load

pytestmark = pytest.mark.integration


def instance_count(connection: Connection) -> int:
    return int(
        connection.session()
        .get(connection.url + "/statistics", timeout=10)
        .json()["CountInstances"]
    )


@pytest.mark.parametrize("method", METHODS)
def test_load_twice_adds_nothing(pacs: Pacs, tmp_path: Path, method: str) -> None:
    make_output(tmp_path, n_studies=1, prefix=f"twice-{method}")
    before = instance_count(pacs.connection)
    first = load(tmp_path, pacs.connection, method=method, workers=2)
    assert first.ok, first.errors
    assert (first.total, first.sent, first.already_present) == (6, 6, 0)
    assert instance_count(pacs.connection) == before + 6
    second = load(tmp_path, pacs.connection, method=method, workers=2)
    assert second.ok, second.errors
    assert (second.sent, second.already_present, second.failed, second.missing) == (0, 6, 0, 0)
    assert instance_count(pacs.connection) == before + 6


def test_reloading_the_session_output_sends_nothing(pacs: Pacs) -> None:
    result = load(pacs.out, pacs.connection)
    assert result.ok
    assert (result.total, result.sent, result.already_present) == (24, 0, 24)


def test_rest_resend_answers_already_stored(pacs: Pacs) -> None:
    entry = read_manifest(pacs.out)[0]
    sender = RestSender(pacs.connection)
    assert sender.send(entry, entry.file(pacs.out)) == ALREADY
    sender.close()


def test_progress_reaches_total(pacs: Pacs, tmp_path: Path) -> None:
    make_output(tmp_path, n_studies=1, prefix="progress")
    seen: list[tuple[int, int]] = []
    result = load(
        tmp_path, pacs.connection, progress=lambda done, total: seen.append((done, total))
    )
    assert result.ok
    assert [done for done, _ in seen] == list(range(1, 7))
    assert {total for _, total in seen} == {6}


def test_missing_file_is_reported_by_name(pacs: Pacs, tmp_path: Path) -> None:
    make_output(tmp_path, n_studies=1, prefix="missing-file")
    gone = read_manifest(tmp_path)[2]
    gone.file(tmp_path).unlink()
    result = load(tmp_path, pacs.connection, retries=0)
    assert not result.ok
    assert (result.sent, result.failed, result.missing) == (5, 1, 1)
    assert [e.path for e in result.errors] == [gone.file(tmp_path)]
    assert "file not found" in str(result.errors[0])


def test_interrupted_load_completes_on_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc dies as the 7th of 24 objects goes out; after a restart the same load finishes.

    Killed rather than stopped, and from inside the sender so the moment is exact: a
    graceful stop takes seconds, during which Orthanc keeps serving the open keep-alive
    connection and these tiny objects would all get through.
    """
    out = tmp_path / "out"
    # the session output's exams (already converted, so free), into a PACS of their own
    make_output(out, n_studies=4, prefix="pacs-test")
    with running_pacs(pacs_settings()) as running:
        connection = running.admin
        calls = 0
        send = RestSender.send

        def send_then_die(self: RestSender, entry: ManifestRow, path: Path) -> str:
            nonlocal calls
            calls += 1
            if calls == 7:
                os.kill(running.part_pid("Orthanc node 1"), signal.SIGKILL)
                time.sleep(0.2)
            return send(self, entry, path)

        with monkeypatch.context() as patch:
            patch.setattr(RestSender, "send", send_then_die)
            first = load(out, connection, workers=1, retries=0)
        # the supervisor restarts the node within about a second: the sends after the kill
        # fail until then (retries=0), or all get through once it is back
        assert first.sent >= 6
        assert first.ok or sum("not stored" in e.message
                               for e in first.errors) == 24 - first.sent

        deadline = time.monotonic() + 60  # the supervisor starts the node again
        while supervisor.health(running.settings.data_dir).problem and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        second = load(out, connection, workers=2)
        assert second.ok, second.errors
        assert (second.sent, second.already_present) == (24 - first.sent, first.sent)
        assert instance_count(connection) == 24
