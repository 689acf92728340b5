"""Run Orthanc natively (see :mod:`server.runtime` for which build) with our own configuration.

Never the system service nor ``/etc/orthanc``: each data folder gets its own
``orthanc.json``, storage, temporary folder, logs and pid file::

    DATA/orthanc.json   configuration (mode 600: it holds the credentials)
    DATA/storage/       DICOM files and the SQLite index
    DATA/tmp/           Orthanc's TemporaryDirectory
    DATA/logs/          Orthanc's --logdir, plus console.log (stdout/stderr)
    DATA/orthanc.pid    pid of the running server
    DATA/nodes/N/       the same (config, tmp, logs, pid) for node N >= 2 of a cluster, whose
                        nodes share DATA/storage and the PostgreSQL index in DATA/postgresql

Everything in it is private: folders mode 700, files 600. Orthanc runs with umask 077, so
the DICOM files and the SQLite index it writes are 600 in 700 folders too.

:func:`start` starts a server and waits until ``GET /system`` answers; :func:`stop` stops
the nodes running on a data folder, from any process (``serve`` in the foreground is
:func:`server.engine.serve`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.fileio import PRIVATE_DIR, PRIVATE_FILE, atomic_write, private_dir

from server.pacs import runtime as runtimes
from server.client import Connection, OrthancClient, OrthancError, SystemInfo
from server.errors import ServerError
from server.pacs.runtime import DICOMWEB_PLUGIN, POSTGRESQL_PLUGIN, Runtime
from server.pacs.settings import ServerSettings, orthanc_config

POSTGRESQL_HINT = "apt-get install -y --no-install-recommends orthanc-postgresql"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
ORTHANC_UMASK = 0o077  # what Orthanc creates (DICOM files, index, logs) is its user's only


@dataclass(frozen=True)
class Layout:
    """The files of a native server (node ``node``, from 0) inside its data folder."""

    root: Path
    node: int = 0

    @property
    def home(self) -> Path:
        """The node's own folder: the data folder for node 0, ``nodes/N`` for the others."""
        return self.root if self.node == 0 else self.root / "nodes" / str(self.node + 1)

    @property
    def config(self) -> Path:
        """Orthanc's configuration file."""
        return self.home / "orthanc.json"

    @property
    def storage(self) -> Path:
        """Storage area and SQLite index."""
        return self.root / "storage"

    @property
    def tmp(self) -> Path:
        """Orthanc's TemporaryDirectory."""
        return self.home / "tmp"

    @property
    def logs(self) -> Path:
        """Orthanc's --logdir."""
        return self.home / "logs"

    @property
    def console(self) -> Path:
        """Orthanc's stdout and stderr."""
        return self.logs / "console.log"

    @property
    def pid_file(self) -> Path:
        """Pid of the running server."""
        return self.home / "orthanc.pid"


def native_config(
    settings: ServerSettings,
    version: str,
    plugins: Sequence[Path],
    node: int = 0,
    index: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`orthanc_config` plus this engine's layout and plugins (listed one by one);
    with ``index`` (the PostgreSQL plugin's section), a node of a cluster."""
    layout = Layout(settings.data_dir, node)
    config = orthanc_config(settings, version)
    config.update(
        {
            "StorageDirectory": str(layout.storage),
            "IndexDirectory": str(layout.storage),
            "TemporaryDirectory": str(layout.tmp),
            "Plugins": [str(p) for p in plugins],
        }
    )
    if index is not None:
        config["PostgreSQL"] = index
        # Each node of a shared index needs its own identity (Orthanc's jobs, changes).
        config["DatabaseServerIdentifier"] = f"{settings.name}-node-{node + 1}"
    return config


def write_config(settings: ServerSettings, version: str, plugins: Sequence[Path],
                 node: int = 0, index: dict[str, Any] | None = None) -> Path:
    """Create the node's layout (private) and write its ``orthanc.json`` (mode 600)."""
    layout = Layout(settings.data_dir, node)
    for folder in (layout.root, layout.home, layout.storage, layout.tmp, layout.logs):
        make_private(folder)
    text = json.dumps(native_config(settings, version, plugins, node, index), indent=2)
    return atomic_write(layout.config, text, mode=PRIVATE_FILE)


def make_private(folder: Path) -> None:
    """Create ``folder`` mode 700; if it was not, make what it holds 700 (folders) and 600
    (files) too: a data folder made by an earlier version becomes private."""
    was_private = folder.is_dir() and (folder.stat().st_mode & 0o777) == PRIVATE_DIR
    private_dir(folder)
    if was_private:
        return
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), PRIVATE_DIR)
        for name in files:
            os.chmod(os.path.join(root, name), PRIVATE_FILE)


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback TCP ports nobody listens on now (the
    nodes of a cluster take consecutive ports)."""
    while True:
        first = free_port()
        if first + count < 65535 and not any(port_in_use(first + i) for i in range(1, count)):
            return first


def port_in_use(port: int) -> bool:
    """True when something already listens on ``port`` (any interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return True
    return False


def _is_orthanc(pid: int, config: Path) -> bool:
    """True when ``pid`` is a live Orthanc process started with ``config``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and str(config).encode() in cmdline


def running_pid(data_dir: Path, node: int = 0) -> int | None:
    """Pid of the Orthanc (node ``node``) running on ``data_dir``; None when none (stale pid
    files ignored)."""
    layout = Layout(Path(data_dir).expanduser().resolve(), node)
    try:
        pid = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_orthanc(pid, layout.config) else None


def _log_tail(layout: Layout, lines: int = 15) -> str:
    logs = sorted(layout.logs.glob("*"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    text = logs[-1].read_text(errors="replace").splitlines()[-lines:]
    return f"\nlast lines of {logs[-1]}:\n" + "\n".join(text)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return True
        time.sleep(0.05)
    return False


def zombie(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (exited, not yet reaped)."""
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class NativeServer:
    """A running Orthanc started by :func:`start`.

    Attributes
    ----------
    settings
        What it was started with.
    process
        The Orthanc process.
    system
        ``GET /system`` and ``/plugins`` as answered once ready.
    runtime
        The Orthanc build running.
    """

    def __init__(
        self,
        settings: ServerSettings,
        process: subprocess.Popen[bytes],
        system: SystemInfo,
        runtime: Runtime,
        node: int = 0,
    ):
        self.settings = settings
        self.process = process
        self.system = system
        self.runtime = runtime
        self.node = node

    @property
    def pid(self) -> int:
        """Pid of the Orthanc process."""
        return self.process.pid

    @property
    def connection(self) -> Connection:
        """How to reach it over HTTP from this machine."""
        creds = self.settings.credentials
        return Connection(self.settings.url, creds.username, creds.password)

    def running(self) -> bool:
        """True while the process lives."""
        return self.process.poll() is None

    def wait(self) -> int:
        """Wait until Orthanc exits by itself; its exit code."""
        code = self.process.wait()
        Layout(self.settings.data_dir, self.node).pid_file.unlink(missing_ok=True)
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` s (then SIGKILL); Orthanc's exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        Layout(self.settings.data_dir, self.node).pid_file.unlink(missing_ok=True)
        return int(self.process.returncode)


def start(
    settings: ServerSettings,
    *,
    runtime: Runtime | None = None,
    timeout: float = READY_TIMEOUT,
    node: int = 0,
    index: dict[str, Any] | None = None,
) -> NativeServer:
    """Start Orthanc on ``settings`` and wait until it answers ``GET /system``.

    ``runtime`` is the Orthanc build to run; by default the one ``settings.orthanc`` selects
    (:func:`server.runtime.select`). ``settings`` are those of the node (its ports,
    :meth:`ServerSettings.node`); ``node`` is its number and ``index`` the PostgreSQL
    plugin's section (:func:`server.postgres.orthanc_section`), for a node of a cluster.

    The process runs in its own session (Ctrl-C in the terminal does not reach it; stop it
    with :meth:`NativeServer.stop` or :func:`stop`) and outlives the caller unless stopped.

    Raises
    ------
    ServerError
        Missing binary or plugin (with an install hint), a port already in use, a server
        already running on this data folder, or Orthanc exiting or not answering in time
        (with the end of its log).
    """
    if runtime is None:
        runtime = runtimes.select(settings.orthanc)
    version = runtime.version
    plugins = [runtime.plugin(DICOMWEB_PLUGIN)]
    if index is not None:
        plugins.append(runtime.plugin(POSTGRESQL_PLUGIN, POSTGRESQL_HINT))
    layout = Layout(settings.data_dir, node)
    pid = running_pid(settings.data_dir, node)
    if pid is not None:
        raise ServerError(
            f"an Orthanc already runs on {settings.data_dir} (pid {pid}): stop it first"
        )
    for port, what in ((settings.http_port, "HTTP"), (settings.dicom_port, "DICOM")):
        if port_in_use(port):
            raise ServerError(f"{what} port {port} is already in use: choose another one")
    config = write_config(settings, version, plugins, node, index)
    console = os.open(layout.console, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    try:
        process = subprocess.Popen(
            runtime.command(f"--logdir={layout.logs}", str(config)),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=ORTHANC_UMASK,
            env=orthanc_environment(runtime),
        )
    finally:
        os.close(console)
    atomic_write(layout.pid_file, f"{process.pid}\n", mode=PRIVATE_FILE, fsync=False)
    try:
        system = _wait_ready(settings, process, timeout, layout)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        layout.pid_file.unlink(missing_ok=True)
        raise
    return NativeServer(settings, process, system, runtime, node)


def orthanc_environment(runtime: Runtime | None = None) -> dict[str, str]:
    """Orthanc's environment: ours, with DCMTK's ``TCP_NODELAY=1`` (and what ``runtime``
    needs).

    Debian's DCMTK leaves Nagle's algorithm on unless ``TCP_NODELAY`` is set, so each DIMSE
    exchange waited for a delayed ACK: a C-ECHO or C-FIND association took 0.11 s; with it,
    0.01-0.02 s (measured with pynetdicom, BENCHMARKS.md).
    """
    extra = runtime.environment() if runtime is not None else {}
    return {**os.environ, **extra, "TCP_NODELAY": "1"}


def _wait_ready(
    settings: ServerSettings, process: subprocess.Popen[bytes], timeout: float,
    layout: Layout,
) -> SystemInfo:
    creds = settings.credentials
    client = OrthancClient.connect(Connection(settings.url, creds.username, creds.password), 2.0)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerError(
                f"Orthanc exited with code {process.returncode} at start{_log_tail(layout)}"
            )
        try:
            system = client.system()
            break
        except OrthancError as exc:
            if exc.status is not None:
                raise ServerError(f"Orthanc answered {exc} at start{_log_tail(layout)}") from exc
            if time.monotonic() > deadline:
                raise ServerError(
                    f"Orthanc did not answer within {timeout:.0f} s{_log_tail(layout)}"
                ) from exc
            time.sleep(0.05)
    if not system.has_dicomweb:
        raise ServerError(
            f"Orthanc {system.version} started without its DICOMweb plugin{_log_tail(layout)}"
        )
    return system


def nodes_of(data_dir: Path) -> list[int]:
    """The node numbers (from 0) that have a folder in ``data_dir``."""
    root = Path(data_dir).expanduser().resolve()
    extra = sorted(int(p.name) - 1 for p in (root / "nodes").glob("*") if p.name.isdigit())
    return [0, *extra]


def stop(data_dir: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop every Orthanc node running on ``data_dir`` (SIGTERM, then SIGKILL after
    ``timeout``).

    Returns
    -------
    bool
        False when none was running.
    """
    stopped = [_stop_node(data_dir, node, timeout) for node in nodes_of(data_dir)]
    return any(stopped)


def _stop_node(data_dir: Path, node: int, timeout: float) -> bool:
    layout = Layout(Path(data_dir).expanduser().resolve(), node)
    pid = running_pid(layout.root, node)
    if pid is None:
        layout.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    layout.pid_file.unlink(missing_ok=True)
    return True
