"""The native PACS: a foreground serve stops on SIGTERM or Ctrl-C; clear errors when it
cannot start; what each node runs with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from pacs_tools import ADMIN, READER, Pacs, pacs_settings, running_pacs
from server.errors import ServerError
from server.front.files import PluginPaths
from server.pacs import engine, orthanc, processes, runtime, supervisor
from server.pacs.layout import DataLayout

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_foreground_serve_stops_everything_cleanly(signum: int) -> None:
    settings = pacs_settings()
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from server.pacs import engine
        from server.pacs.settings import Credentials, ServerSettings
        from server.userconfig import ensure_credentials
        ensure_credentials()
        settings = ServerSettings(
            data_dir=Path({str(settings.data_dir)!r}),
            credentials=Credentials({ADMIN.username!r}, {ADMIN.password!r}),
            http_port={settings.http_port},
            dicom_port={settings.dicom_port},
            web_port={settings.web_port},
        )
        ready = lambda info: print("ready", info.pid, flush=True)
        sys.exit(engine.serve(settings, on_ready=ready))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "ready"
        health = supervisor.health(settings.data_dir)
        assert health.running and health.problem is None
        pids = [part.pid for part in health.parts]
        assert len(pids) == 2  # node 1 and the front
        answer = requests.get(settings.url + "/system", auth=(ADMIN.username, ADMIN.password),
                              timeout=5)
        assert answer.status_code == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for pid in pids:
        assert not processes.alive(pid)
    assert not supervisor.health(settings.data_dir).running
    assert not DataLayout.of(settings.data_dir).node(0).pid_file.exists()


def test_missing_binary_gives_install_hint(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="apt-get install .*orthanc"):
        runtime.system_runtime(tmp_path / "Orthanc")


def test_missing_root_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="install-orthanc"):
        runtime.root_runtime(tmp_path)


def test_missing_plugins_give_install_hints(tmp_path: Path) -> None:
    chosen = runtime.select()
    fake = runtime.Runtime(chosen.binary, chosen.version, tmp_path)  # a root without plugins
    with pytest.raises(ServerError, match="libOrthancDicomWeb.so is missing.*orthanc-dicomweb"):
        orthanc.plugins_of(fake, postgresql=False)
    (tmp_path / runtime.PLUGIN_SUBDIR).mkdir(parents=True)
    (tmp_path / runtime.PLUGIN_SUBDIR / runtime.DICOMWEB_PLUGIN).touch()
    with pytest.raises(ServerError, match="libOrthancPython.so is missing.*orthanc-python"):
        orthanc.plugins_of(fake, postgresql=False)


def test_default_runtime_indexes_the_archive_tags_when_it_can() -> None:
    """auto picks an Orthanc >= 1.11 whenever one is there (Debian 13's system one, or the
    Debian 13 root on Debian 12), and says so when it falls back to an older one."""
    chosen = runtime.select("auto")
    system = runtime.system_runtime()
    if system.indexes_extra_tags:
        assert chosen == system
    elif chosen.root is not None:
        assert chosen.indexes_extra_tags and "--orthanc system" in chosen.note
    else:
        assert "install-orthanc" in chosen.note


def test_busy_port_is_refused(pacs: Pacs) -> None:
    settings = pacs_settings(http_port=pacs.settings.http_port)
    with pytest.raises(ServerError, match=f"HTTP port {pacs.settings.http_port} of node 1 is "
                                          "already in use"):
        engine.start_background(settings)
    assert not supervisor.health(settings.data_dir).running


def test_second_pacs_on_same_data_dir_is_refused(pacs: Pacs) -> None:
    with pytest.raises(ServerError, match="already runs"):
        engine.start_background(pacs.running.settings)


def test_node_config_is_private_and_lists_its_plugins(pacs: Pacs) -> None:
    layout = DataLayout.of(pacs.settings.data_dir)
    assert oct(os.stat(layout.node(0).config).st_mode & 0o777) == "0o600"
    config = json.loads(layout.node(0).config.read_text())
    plugins = [Path(p).name for p in config["Plugins"]]
    assert plugins[:2] == [runtime.DICOMWEB_PLUGIN, runtime.PYTHON_PLUGIN]
    assert config["PythonScript"] == str(PluginPaths(layout.plugin).script)
    assert Path(config["TemporaryDirectory"]).is_dir()
    assert config["RemoteAccessAllowed"] is False
    assert set(config["RegisteredUsers"]) == {ADMIN.username, READER.name, "writer"}


def test_orthanc_runs_without_nagle_delay_and_never_as_root(pacs: Pacs) -> None:
    """DCMTK in Orthanc leaves Nagle on unless TCP_NODELAY is set: every association then
    waited for delayed ACKs (0.11 s a C-ECHO instead of 0.02 s; BENCHMARKS.md)."""
    pid = pacs.running.part_pid("Orthanc node 1")
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"TCP_NODELAY=1" in environment
    for part in supervisor.health(pacs.settings.data_dir).parts:
        assert os.stat(f"/proc/{part.pid}").st_uid != 0, part.name


def test_the_system_orthanc_still_serves_when_another_is_the_default(pacs: Pacs) -> None:
    """On Debian 12 the default is Debian 13's Orthanc; `--orthanc system` (1.10.1) must still
    load, answer QIDO through the front (the plugin's, in process: 1.10 does not list its
    index) and say what its index cannot do."""
    from server.pacs.settings import index_notes
    from server.transfer.load import load

    system = runtime.system_runtime()
    if system.version == pacs.system.version:
        pytest.skip(f"the system's Orthanc {system.version} is the default: tested throughout")
    with running_pacs(pacs_settings(orthanc="system")) as running:
        assert orthanc.system(running.settings.node(0)).version == system.version
        assert load(pacs.out, running.admin).ok
        study = pacs.studies[0]
        front = running.front()
        found = requests.get(
            f"{front.url}/dicom-web/instances?StudyInstanceUID={study.study_uid}"
            "&ImageLaterality=L&ViewPosition=CC", auth=(front.username, front.password),
            timeout=30).json()
        assert [i["00080018"]["Value"][0] for i in found] == [study.mg_uids["L", "CC"]]
        if not system.indexes_extra_tags:
            assert any("ExtraMainDicomTags" in note for note in index_notes(system.version))


def test_serve_after_a_killed_supervisor_starts_cleanly() -> None:
    """The supervisor SIGKILLed: every part stops by itself (SIGTERM from the kernel), and
    the next serve on the same folder and ports starts at once."""
    settings = pacs_settings()
    with running_pacs(settings) as running:
        parts = [p.pid for p in supervisor.health(settings.data_dir).parts]
        leader = processes.recorded(DataLayout.of(settings.data_dir).supervisor_pid)
        os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while any(processes.alive(pid) for pid in parts) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(processes.alive(pid) for pid in parts)
        assert "not running" in (supervisor.health(settings.data_dir).problem or "")
        started = time.monotonic()
        with running_pacs(settings, with_accounts=False) as again:
            assert time.monotonic() - started < 30
            assert orthanc.system(again.settings.node(0)).version
