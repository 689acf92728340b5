"""server.postgres: a real private PostgreSQL (Debian's binaries), and Orthanc's PostgreSQL
index plugin on it with two Orthanc nodes sharing one database.

As root (this suite's usual case) every PostgreSQL command runs in a user namespace; the
tests are the same either way. Skipped when PostgreSQL's server is not installed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pacs_tools import free_port
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from server.pacs import postgres
from server.errors import ServerError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
ORTHANC = Path("/usr/sbin/Orthanc")
INDEX_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so")


@pytest.fixture(scope="module")
def bins() -> Path:
    try:
        return postgres.bin_dir()
    except ServerError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def server(bins: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[postgres.PostgresServer]:
    """One server for the checks that leave it as it is."""
    folder = tmp_path_factory.mktemp("pg") / "postgresql"
    started = postgres.start(folder, free_port())
    yield started
    postgres.stop(folder)


def psql(bins: Path, server: postgres.PostgresServer, sql: str, **env: str
         ) -> subprocess.CompletedProcess[str]:
    """``psql -h 127.0.0.1`` as the server's role (``env`` overrides PGPASSWORD, PGUSER...)."""
    return subprocess.run(
        [str(bins / "psql"), "--no-psqlrc", "--tuples-only", "--no-align", "-c", sql],
        env={**os.environ, **server.environment(), **env}, capture_output=True, text=True,
        timeout=30, check=False)


def test_tcp_login_with_the_generated_password(bins: Path, server: postgres.PostgresServer
                                               ) -> None:
    answer = psql(bins, server, "SELECT 1, current_user, "
                  "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "1|orthanc|f"  # Orthanc's role owns its database only
    assert server.dsn == f"host=127.0.0.1 port={server.port} dbname=orthanc user=orthanc"
    assert server.credentials == postgres.credentials(server.folder)
    assert len(server.credentials.password) >= 32


def test_wrong_password_and_superuser_refused(bins: Path, server: postgres.PostgresServer
                                              ) -> None:
    wrong = psql(bins, server, "SELECT 1", PGPASSWORD="not-" + server.credentials.password)
    assert wrong.returncode != 0
    assert 'password authentication failed for user "orthanc"' in wrong.stderr
    superuser = psql(bins, server, "SELECT 1", PGUSER="postgres", PGDATABASE="postgres")
    assert superuser.returncode != 0
    assert "no pg_hba.conf entry" in superuser.stderr


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_listens_on_loopback_only(server: postgres.PostgresServer) -> None:
    assert _listeners(server.port) == ["0100007F"]  # 127.0.0.1, no 0.0.0.0 nor IPv6


def test_everything_is_private(server: postgres.PostgresServer) -> None:
    folder = server.folder
    exposed = [f"{oct(p.lstat().st_mode & 0o777)} {p}" for p in [folder, *folder.rglob("*")]
               if p.lstat().st_mode & 0o077]
    assert exposed == []
    assert stat.S_IMODE(postgres.Layout.of(folder).credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {p.name for p in folder.iterdir()} == {"cluster", "socket", "postgresql.log",
                                                  "credentials.json"}
    sockets = [p for p in postgres.Layout.of(folder).socket_dir.iterdir()
               if stat.S_ISSOCK(p.lstat().st_mode)]
    assert [p.name for p in sockets] == [f".s.PGSQL.{server.port}"]


def test_start_again_returns_the_running_server(server: postgres.PostgresServer) -> None:
    again = postgres.start(server.folder, server.port)
    assert (again.pid, again.port, again.credentials) == (server.pid, server.port,
                                                          server.credentials)
    with pytest.raises(ServerError, match=f"already runs on .*port {server.port}"):
        postgres.start(server.folder, free_port())


def test_port_in_use_is_refused(bins: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} is already in use"):
            postgres.start(tmp_path / "postgresql", port)


def test_started_elsewhere_stopped_and_restarted_with_its_data(bins: Path, tmp_path: Path
                                                               ) -> None:
    folder = tmp_path / "postgresql"
    port = free_port()
    script = ("import sys; from pathlib import Path; from server import postgres; "
              f"print(postgres.start(Path({str(folder)!r}), {port}).pid)")
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=True)
    pid = int(child.stdout.strip())
    try:
        assert postgres.running(folder) == pid  # outlived the process that started it
        assert os.getsid(pid) != os.getsid(0)
        first = postgres.start(folder, port)
        created = psql(bins, first, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")
        assert created.returncode == 0, created.stderr
        assert postgres.stop(folder)
        assert postgres.running(folder) is None
        assert _listeners(port) == []
        assert not postgres.stop(folder)
        second = postgres.start(folder, free_port())
        assert second.credentials == first.credentials and second.pid != pid
        assert psql(bins, second, "SELECT v FROM kept").stdout.strip() == "x"
        os.kill(second.pid, signal.SIGKILL)  # a crash: postmaster.pid stays behind
        deadline = time.monotonic() + 10
        while postgres.running(folder) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        third = postgres.start(folder, free_port())  # crash recovery
        assert psql(bins, third, "SELECT v FROM kept").stdout.strip() == "x"
        postgres.stop(folder)
        kept = postgres.Layout.of(folder).credentials
        kept.rename(tmp_path / "moved.json")
        with pytest.raises(ServerError, match="credentials.json is missing"):
            postgres.start(folder, free_port())  # never a new password for an old cluster
    finally:
        postgres.stop(folder)


def test_missing_postgresql_gives_install_hint(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="apt-get install .*postgresql"):
        postgres.bin_dir(tmp_path)
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "17" / "bin").mkdir(parents=True)
    for major in ("15", "17"):
        for tool in ("initdb", "pg_ctl", "postgres", "pg_isready"):
            (tmp_path / major / "bin" / tool).touch()
    assert postgres.bin_dir(tmp_path) == tmp_path / "17" / "bin"


def test_orthanc_section(server: postgres.PostgresServer) -> None:
    section = postgres.orthanc_section(server, 4)
    assert section["EnableIndex"] is True and section["EnableStorage"] is False
    assert section["Lock"] is False
    assert (section["Host"], section["Port"]) == ("127.0.0.1", server.port)
    assert section["Password"] == server.credentials.password
    assert section["IndexConnectionsCount"] == 4
    with pytest.raises(ServerError, match="connections per Orthanc node"):
        postgres.orthanc_section(server, 0)


def _dicom() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "PG-1", "Shared^Index", "OT"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _wait_http(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-2000:]
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"Orthanc did not answer at {url}")


def test_two_orthanc_nodes_share_the_index(server: postgres.PostgresServer, tmp_path: Path
                                           ) -> None:
    if not (ORTHANC.exists() and INDEX_PLUGIN.exists()):
        pytest.skip("apt-get install -y --no-install-recommends orthanc orthanc-postgresql")
    urls, processes = [], []
    try:
        for node in ("a", "b"):
            http = free_port()
            config = {
                "Name": f"node-{node}", "HttpPort": http, "DicomPort": free_port(),
                "StorageDirectory": str(tmp_path / "storage"),  # shared by both nodes
                "IndexDirectory": str(tmp_path / node), "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False, "Plugins": [str(INDEX_PLUGIN)],
                "PostgreSQL": postgres.orthanc_section(server, 2),
                "SaveJobs": False, "DatabaseServerIdentifier": f"node-{node}",
            }
            path = tmp_path / f"{node}.json"
            path.write_text(json.dumps(config))
            log = tmp_path / f"{node}.log"
            with log.open("wb") as out:
                processes.append(subprocess.Popen([str(ORTHANC), str(path)], stdout=out,
                                                  stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{http}")
            _wait_http(processes[-1], urls[-1] + "/system", log)
        for url in urls:
            system = requests.get(url + "/system", timeout=5).json()
            assert "PostgreSQLIndex" in system["DatabaseBackendPlugin"]
        data = _dicom()
        stored = requests.post(urls[0] + "/instances", data=data, timeout=10)
        assert stored.status_code == 200, stored.text
        instance = stored.json()["ID"]
        assert requests.get(urls[1] + "/instances", timeout=5).json() == [instance]
        assert requests.get(f"{urls[1]}/instances/{instance}/file", timeout=5).content == data
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
