"""A private PostgreSQL server for Orthanc's PostgreSQL index plugin.

Debian's own server binaries (package ``postgresql``, ``/usr/lib/postgresql/<major>/bin``,
the highest major installed), never the system cluster nor ``/etc/postgresql``. Everything
lives in one folder::

    FOLDER/cluster/          the database cluster; its postgresql.conf and pg_hba.conf are ours
    FOLDER/socket/           its unix socket
    FOLDER/postgresql.log    the server's log
    FOLDER/credentials.json  role, database and password for Orthanc (made once)

Everything in it is private: folders mode 700, files 600. The server listens on 127.0.0.1
only and admits one role, ``orthanc``, to one database, ``orthanc`` (its owner, not a
superuser), with scram-sha-256 over TCP from 127.0.0.1/32 or over the socket. The bootstrap
superuser has no password, so nobody logs in as it: the role and the database are made by
``postgres --single`` right after initdb, before the server ever listens.

PostgreSQL refuses to run as root, and nothing of the PACS does: it runs as the account
of :func:`server.pacs.processes.service_account` (the invoking user, or for root Debian's
``orthanc`` account, which owns the whole data folder), with no user namespace (which
chroots and containers refuse).

:func:`start` starts the server (initdb the first time) as a part of the PACS (the
supervisor's child: ``postgres`` itself, not ``pg_ctl``, so that its death is seen) and
waits until it accepts TCP connections; :func:`stop` stops it from any process;
:func:`orthanc_section` is Orthanc's ``"PostgreSQL"`` configuration section for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.fileio import PRIVATE_FILE, atomic_write

from server.errors import ServerError
from server.pacs import processes
from server.pacs.processes import Account

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "apt-get install -y --no-install-recommends postgresql"
HOST = "127.0.0.1"
USERNAME = "orthanc"
DATABASE = "orthanc"
MAX_CONNECTIONS = 100
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the final NUL
UMASK = 0o077
# Sized for a small machine (2 cores, 24 GiB); durability stays on (fsync, full page writes).
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "max_connections": str(MAX_CONNECTIONS),
    "shared_buffers": "'256MB'",
    "password_encryption": "'scram-sha-256'",
    "unix_socket_permissions": "0700",
    "fsync": "on",
    "full_page_writes": "on",
}
HBA = (
    f"local   {DATABASE}  {USERNAME}                  scram-sha-256\n"
    f"host    {DATABASE}  {USERNAME}  {HOST}/32  scram-sha-256\n"
)


@dataclass(frozen=True)
class Layout:
    """The files of a private PostgreSQL server inside its folder (see above)."""

    root: Path
    cluster: Path
    socket_dir: Path
    log: Path
    credentials: Path
    pid_file: Path  # PostgreSQL's own: pid, data folder, start time, port, ...

    @classmethod
    def of(cls, folder: Path) -> Layout:
        """The layout of ``folder`` (made absolute)."""
        root = Path(folder).expanduser().resolve()
        return cls(root, root / "cluster", root / "socket", root / "postgresql.log",
                   root / "credentials.json", root / "cluster" / "postmaster.pid")


@dataclass(frozen=True)
class Credentials:
    """How Orthanc logs in: a role, its password and its database."""

    username: str
    password: str = field(repr=False)
    database: str


@dataclass(frozen=True)
class PostgresServer:
    """A running server started by :func:`start`."""

    folder: Path
    pid: int
    port: int
    credentials: Credentials
    host: str = HOST

    @property
    def dsn(self) -> str:
        """A libpq connection string, without the password (give it as PGPASSWORD)."""
        creds = self.credentials
        return f"host={self.host} port={self.port} dbname={creds.database} user={creds.username}"

    def environment(self) -> dict[str, str]:
        """libpq's PG* variables (password included) for psql and the like."""
        creds = self.credentials
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": creds.database,
                "PGUSER": creds.username, "PGPASSWORD": creds.password}


def bin_dir(root: Path = PG_ROOT) -> Path:
    """The bin folder of the highest PostgreSQL major installed; ServerError (with an install
    hint) when there is none."""
    tools = ("initdb", "pg_ctl", "postgres", "pg_isready")
    found = [p / "bin" for p in root.glob("*") if p.name.isdigit()
             and all((p / "bin" / tool).exists() for tool in tools)]
    if not found:
        raise ServerError(f"PostgreSQL's server is not installed (no {root}/<major>/bin/"
                          f"postgres): {INSTALL_HINT}")
    return max(found, key=lambda p: int(p.parent.name))


def credentials(folder: Path) -> Credentials:
    """The folder's credentials, generated (and kept, mode 600) the first time."""
    layout = Layout.of(folder)
    try:
        return Credentials(**json.loads(layout.credentials.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError) as exc:
        raise ServerError(f"cannot read {layout.credentials}: {exc}") from exc
    processes.make_private(layout.root)
    creds = Credentials(USERNAME, secrets.token_urlsafe(32), DATABASE)
    text = json.dumps({"username": creds.username, "password": creds.password,
                       "database": creds.database}, indent=2)
    atomic_write(layout.credentials, text, mode=PRIVATE_FILE)
    return creds


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5803 format), so the
    password itself never reaches the server."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    salt64, stored64, server64 = (base64.b64encode(raw).decode() for raw in (salt, stored, server))
    return f"SCRAM-SHA-256${iterations}:{salt64}${stored64}:{server64}"


def _run(args: list[str], what: str, account: Account, stdin: str | None = None,
         timeout: float = 120) -> None:
    """Run a PostgreSQL command as ``account``; ServerError when it fails."""
    switch = {} if account.is_current else {"user": account.uid, "group": account.gid,
                                             "extra_groups": []}
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True,
                              timeout=timeout, umask=UMASK, cwd="/", check=False, **switch)
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{what} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise ServerError(f"{what} failed (exit code {done.returncode}):\n" + "\n".join(out))


def _initdb(layout: Layout, bins: Path, creds: Credentials, account: Account) -> None:
    """Make the cluster with Orthanc's role and database, under a temporary name first so a
    failed attempt never leaves a half-made cluster behind."""
    staging = layout.root / "cluster.new"
    shutil.rmtree(staging, ignore_errors=True)
    _run([str(bins / "initdb"), f"--pgdata={staging}", "--username=postgres",
          "--auth=reject", "--encoding=UTF8", "--locale=C"], "initdb", account)
    sql = (f"CREATE ROLE {creds.username} LOGIN PASSWORD "
           f"'{scram_verifier(creds.password)}';\n"
           f"CREATE DATABASE {creds.database} OWNER {creds.username};\n")
    _run([str(bins / "postgres"), "--single", "-c", "exit_on_error=on", "-D", str(staging),
          "postgres"], "creating Orthanc's role and database", account, stdin=sql)
    staging.rename(layout.cluster)


def _write_config(layout: Layout, port: int, account: Account) -> None:
    quoted = str(layout.socket_dir).replace("'", "''")
    settings = {**SETTINGS, "port": str(port), "unix_socket_directories": f"'{quoted}'"}
    conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
    for name, text in (("postgresql.conf", "# written by server.pacs.postgres\n" + conf),
                       ("pg_hba.conf", HBA)):
        atomic_write(layout.cluster / name, text, mode=PRIVATE_FILE)
        processes.give(layout.cluster / name, account)


def _pid_file_line(layout: Layout, index: int) -> str:
    try:
        return layout.pid_file.read_text().splitlines()[index].strip()
    except (OSError, IndexError):
        return ""


def _works_in(pid: int | str, cluster: Path) -> bool:
    """True when ``pid`` is a live process working in ``cluster``: the postmaster and its
    children chdir there; a zombie has no cwd any more."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == cluster
    except OSError:
        return False


def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def running(folder: Path) -> int | None:
    """Pid of the postmaster running on ``folder``; None when none (a stale postmaster.pid,
    a zombie or a pid reused by another process is ignored)."""
    layout = Layout.of(folder)
    pid = _pid_file_line(layout, 0)
    return int(pid) if pid.isdigit() and _works_in(pid, layout.cluster) else None


def _clear_stale_pid_file(layout: Layout, timeout: float = 10.0) -> None:
    """Remove the postmaster.pid of a postmaster killed (SIGKILL, crash) and left unreaped: a
    zombie still answers kill(pid, 0), so PostgreSQL would think it alive and refuse to
    start. Only once its children are gone too (they exit when they see it dead)."""
    if not layout.pid_file.exists():
        return

    def alone() -> bool:
        return not any(_works_in(p, layout.cluster) for p in os.listdir("/proc") if p.isdigit())

    if _wait_until(alone, timeout):
        layout.pid_file.unlink(missing_ok=True)  # else PostgreSQL says what holds it


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def start(folder: Path, port: int, *, account: Account | None = None,
          timeout: float = READY_TIMEOUT,
          bins: Path | None = None) -> tuple[PostgresServer, processes.Process]:
    """Start the server of ``folder`` on 127.0.0.1:``port`` (initdb the first time) as
    ``account`` (default: the invoking user), and wait until it accepts TCP connections.

    The server is a child of the caller (:func:`server.pacs.processes.start`): it gets
    SIGTERM when the caller dies, and the caller sees it exit.

    Raises
    ------
    ServerError
        PostgreSQL missing (with an install hint), already running on ``folder``, the port
        taken, a socket path too long, or the server failing to start (with its log's end).
    """
    bins = bin_dir() if bins is None else bins
    account = account or Account.current()
    layout = Layout.of(folder)
    pid = running(layout.root)
    if pid is not None:
        raise ServerError(f"PostgreSQL already runs on {layout.root} (pid {pid}): stop it "
                          "first")
    sock = layout.socket_dir / f".s.PGSQL.{port}"
    if len(str(sock).encode()) > SOCKET_PATH_MAX:
        raise ServerError(f"the socket path {sock} is longer than {SOCKET_PATH_MAX} bytes: "
                          "use a shorter folder")
    if _port_in_use(port):
        raise ServerError(f"port {port} is already in use on {HOST}: choose another one")
    if (layout.cluster / "PG_VERSION").exists() and not layout.credentials.exists():
        raise ServerError(f"{layout.credentials} is missing: the cluster's password is lost")
    processes.check_reachable(layout.root, account)
    processes.make_private(layout.root, account)
    processes.make_private(layout.socket_dir, account)
    creds = credentials(layout.root)
    if not (layout.cluster / "PG_VERSION").exists():
        _initdb(layout, bins, creds, account)
    processes.give(layout.root, account, tree=True)
    _clear_stale_pid_file(layout)
    _write_config(layout, port, account)
    process = processes.start([str(bins / "postgres"), "-D", str(layout.cluster)],
                              name="index (PostgreSQL)", log=layout.log, account=account,
                              cwd=layout.cluster)

    def ready() -> bool:
        return _port_in_use(port) and subprocess.run(
            [str(bins / "pg_isready"), f"--host={HOST}", f"--port={port}", "--quiet",
             f"--dbname={creds.database}", f"--username={creds.username}", "--timeout=2"],
            capture_output=True, check=False).returncode == 0

    processes.wait_until(ready, process, timeout)
    return PostgresServer(layout.root, process.pid, port, creds), process


def stop(folder: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server of ``folder``: SIGINT (what ``pg_ctl stop -m fast`` sends: running
    transactions roll back, a checkpoint is written), SIGKILL after ``timeout``.

    Returns
    -------
    bool
        False when none was running.
    """
    cluster = Layout.of(folder).cluster
    pid = running(folder)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    if not _wait_until(lambda: not _works_in(pid, cluster), timeout):
        os.kill(pid, signal.SIGKILL)  # its backends exit when they see the postmaster gone
        _wait_until(lambda: not _works_in(pid, cluster), 5.0)
    return True


def orthanc_section(server: PostgresServer, connections: int) -> dict[str, Any]:
    """Orthanc's ``"PostgreSQL"`` configuration section for ``server`` (index only).

    Valid for the index plugin 4.0 (Debian 12) and 5.0 (Debian 13). ``Lock`` false: by
    default the plugin takes an advisory lock so no second Orthanc (and no second
    connection) can use the database; several nodes share it here. ``IndexConnectionsCount``
    is the size of each node's connection pool (all opened at start; default 1).
    ``MaximumConnectionRetries`` bounds both the attempts to connect at start and the replays
    of a transaction that collided with another writer (serializable transactions; after
    that, HTTP 503); ``ConnectionRetryInterval`` is the seconds between connection attempts.

    Parameters
    ----------
    server
        From :func:`start`.
    connections
        Connections per Orthanc node; all nodes together must stay under the server's
        ``max_connections`` (100, 3 reserved for superusers).
    """
    if not 1 <= connections <= MAX_CONNECTIONS - 3:
        raise ServerError(f"{connections} connections per Orthanc node: between 1 and "
                          f"{MAX_CONNECTIONS - 3}")
    creds = server.credentials
    return {
        "EnableIndex": True,
        "EnableStorage": False,
        "Host": server.host,
        "Port": server.port,
        "Database": creds.database,
        "Username": creds.username,
        "Password": creds.password,
        "EnableSsl": False,
        "Lock": False,
        "IndexConnectionsCount": connections,
        "MaximumConnectionRetries": 10,
        "ConnectionRetryInterval": 5,
    }
