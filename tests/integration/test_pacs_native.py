"""server.native: a foreground run stops on SIGTERM or Ctrl-C; clear errors when it cannot start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from pacs_tools import Pacs, pacs_settings, running_gateway
from server.pacs import orthanc as native
from server.pacs import runtime
from server.errors import ServerError

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_foreground_serve_stops_cleanly(tmp_path: Path, signum: int) -> None:
    settings = pacs_settings(tmp_path / "data")
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
            credentials=Credentials("tester", "test-password-1"),
            http_port={settings.http_port},
            dicom_port={settings.dicom_port},
            web_port=0,
        )
        ready = lambda info: print("ready", info.pid, flush=True)
        sys.exit(engine.serve(settings, on_ready=ready))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "ready"
        orthanc_pid = int(line[1])
        answer = requests.get(
            settings.url + "/system", auth=("tester", "test-password-1"), timeout=5
        )
        assert answer.status_code == 200
        assert native.running_pid(settings.data_dir) == orthanc_pid
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{orthanc_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{orthanc_pid}").exists()
    assert native.running_pid(settings.data_dir) is None
    assert not native.Layout(settings.data_dir).pid_file.exists()


def test_missing_binary_gives_install_hint(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="apt-get install .*orthanc"):
        runtime.system_runtime(tmp_path / "Orthanc")


def test_missing_root_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="install-orthanc"):
        runtime.root_runtime(tmp_path)


def test_missing_dicomweb_plugin_gives_install_hint(tmp_path: Path) -> None:
    chosen = runtime.select()
    fake = runtime.Runtime(chosen.binary, chosen.version, tmp_path)  # a root without plugins
    with pytest.raises(ServerError, match="libOrthancDicomWeb.so is missing.*orthanc-dicomweb"):
        native.start(pacs_settings(tmp_path), runtime=fake)


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


def test_busy_port_is_refused(pacs: Pacs, tmp_path: Path) -> None:
    busy = replace(pacs_settings(tmp_path), http_port=pacs.settings.http_port)
    with pytest.raises(ServerError, match=f"HTTP port {pacs.settings.http_port} is already in use"):
        native.start(busy)


def test_second_server_on_same_data_dir_is_refused(pacs: Pacs) -> None:
    with pytest.raises(ServerError, match="already runs"):
        native.start(pacs.settings)


def test_config_file_is_private_and_lists_one_plugin(pacs: Pacs) -> None:
    layout = native.Layout(pacs.settings.data_dir)
    assert oct(os.stat(layout.config).st_mode & 0o777) == "0o600"
    config = json.loads(layout.config.read_text())
    assert config["Plugins"] == [str(pacs.server.runtime.plugin_dir / runtime.DICOMWEB_PLUGIN)]
    assert Path(config["TemporaryDirectory"]).is_dir()
    assert config["RemoteAccessAllowed"] is False


def test_orthanc_runs_without_nagle_delay(pacs: Pacs) -> None:
    """DCMTK in Orthanc leaves Nagle on unless TCP_NODELAY is set: every association then
    waited for delayed ACKs (0.11 s a C-ECHO instead of 0.02 s; BENCHMARKS.md)."""
    environment = Path(f"/proc/{pacs.server.pid}/environ").read_bytes().split(b"\0")
    assert b"TCP_NODELAY=1" in environment


def test_the_system_orthanc_still_serves_when_another_is_the_default(
    pacs: Pacs, tmp_path: Path
) -> None:
    """On Debian 12 the default is Debian 13's Orthanc; `--orthanc system` (1.10.1) must still
    load, answer QIDO through the gateway (forwarded: 1.10 does not list its index) and
    say what its index cannot do."""
    from server.front.gateway import GatewaySettings
    from server.transfer.load import load
    from server.pacs.settings import index_notes

    system = runtime.system_runtime()
    if system == pacs.server.runtime:
        pytest.skip(f"the system's Orthanc {system.version} is the default: tested throughout")
    server = native.start(pacs_settings(tmp_path / "orthanc"), runtime=system)
    try:
        with running_gateway(GatewaySettings(None, server.connection,
                                             port=native.free_port())) as gateway:
            assert server.system.version == system.version
            assert load(pacs.out, server.connection).ok
            study = pacs.studies[0]
            found = requests.get(f"{gateway.url}/dicom-web/instances?StudyInstanceUID="
                                 f"{study.study_uid}&ImageLaterality=L&ViewPosition=CC").json()
            assert [i["00080018"]["Value"][0] for i in found] == [study.mg_uids["L", "CC"]]
            if not system.indexes_extra_tags:
                assert gateway.index_tags() is None
                assert any("ExtraMainDicomTags" in note for note in index_notes(system.version))
    finally:
        server.stop()
