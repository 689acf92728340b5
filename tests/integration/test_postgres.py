"""server.pacs.postgres: a real private PostgreSQL (Debian's binaries), never as root.

As root (this suite's usual case) it runs as Debian's ``orthanc`` account, in a folder that
account can reach; the tests are the same either way. Skipped when PostgreSQL's server is
not installed. Two Orthanc nodes on it: test_pacs_cluster.py.
"""

from __future__ import annotations

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
from pacs_tools import free_port, pacs_folder

from server.errors import ServerError
from server.pacs import postgres, processes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
ACCOUNT = processes.service_account("orthanc")


def pg_folder() -> Path:
    """A folder for a server, inside a data folder of the PACS's account (as serve makes)."""
    data = pacs_folder("pg")
    processes.make_private(data, ACCOUNT)
    return data / "postgresql"


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
    folder = pg_folder()
    started, process = postgres.start(folder, free_port(), account=ACCOUNT)
    yield started
    process.stop()


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


def test_runs_as_the_service_account_never_root(server: postgres.PostgresServer) -> None:
    assert os.stat(f"/proc/{server.pid}").st_uid == ACCOUNT.uid != 0
    assert server.folder.stat().st_uid == ACCOUNT.uid


def test_a_second_start_on_a_running_folder_is_refused(server: postgres.PostgresServer) -> None:
    with pytest.raises(ServerError, match=f"already runs on {server.folder}"):
        postgres.start(server.folder, free_port(), account=ACCOUNT)


def test_port_in_use_is_refused(bins: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} is already in use"):
            postgres.start(pg_folder(), port, account=ACCOUNT)


def test_dies_with_its_starter_and_restarts_with_its_data(bins: Path) -> None:
    """The server is a part of the PACS: when the process that started it dies, it stops
    too (no orphan); started again, it has its data; after a crash (SIGKILL), it recovers."""
    folder = pg_folder()
    port = free_port()
    script = ("import sys, time; from pathlib import Path; from server.pacs import postgres, "
              "processes; server, _ = postgres.start(Path(sys.argv[1]), int(sys.argv[2]), "
              "account=processes.service_account('orthanc')); print(server.pid, flush=True); "
              "time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", script, str(folder), str(port)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    pid = int(child.stdout.readline())
    try:
        assert postgres.running(folder) == pid
        first = postgres.PostgresServer(folder, pid, port, postgres.credentials(folder))
        created = psql(bins, first, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")
        assert created.returncode == 0, created.stderr
        child.kill()  # the starter dies: the server follows (SIGTERM from the kernel)
        child.wait()
        deadline = time.monotonic() + 30
        while postgres.running(folder) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert postgres.running(folder) is None
        second, process = postgres.start(folder, free_port(), account=ACCOUNT)
        assert second.credentials == first.credentials and second.pid != pid
        assert psql(bins, second, "SELECT v FROM kept").stdout.strip() == "x"
        os.kill(second.pid, signal.SIGKILL)  # a crash: postmaster.pid stays behind
        process.popen.wait()
        process.kill_leftovers()
        third, process = postgres.start(folder, free_port(), account=ACCOUNT)  # recovery
        assert psql(bins, third, "SELECT v FROM kept").stdout.strip() == "x"
        process.stop(sig=signal.SIGINT)
        assert postgres.running(folder) is None and not postgres.stop(folder)
        kept = postgres.Layout.of(folder).credentials
        kept.rename(folder.parent / "moved.json")
        with pytest.raises(ServerError, match="credentials.json is missing"):
            postgres.start(folder, free_port(), account=ACCOUNT)  # never a new password
    finally:
        if child.poll() is None:
            child.kill()
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
