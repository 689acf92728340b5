"""The native PACS as a whole: its parts, started in order, watched, restarted, stopped.

One supervisor per data folder runs (as its children, :mod:`server.pacs.processes`):

1. with ``index="postgresql"``, a private PostgreSQL server (:mod:`server.pacs.postgres`);
2. ``nodes`` Orthanc nodes (:mod:`server.pacs.orthanc`), node ``i`` on ``http_port + i``
   and ``dicom_port + i``, all on one storage folder and index, each with the front's code
   in process (:mod:`server.front.plugin`);
3. the front door, nginx (:mod:`server.front.nginx`), on ``web_port``.

It then watches them. A part that dies is noticed within a fraction of a second, said in
``DATA/logs/supervisor.log`` and the status file (``DATA/run/status.json``, which ``load``,
``verify`` and ``vindr-convert status`` read), and started again; when the index dies, the
nodes are restarted after it (their database connections died with it). A part that dies
:data:`GIVE_UP_AFTER` times within :data:`GIVE_UP_WINDOW` seconds is not restarted again:
the supervisor stops everything and exits with an error, so the PACS is never silently
half-running. It also rotates the front's audit log (:data:`AUDIT_ROTATE_BYTES`,
:data:`AUDIT_KEEP` files) and, on SIGHUP (``vindr-convert users``), restarts the nodes one by
one with the accounts changed. On SIGTERM or SIGINT it stops the front, the nodes and the
index, in that order, and exits. If the supervisor itself dies, even by SIGKILL, every part
receives SIGTERM (no part runs unsupervised), and the next ``serve`` clears what it left.

``serve`` runs a supervisor in the foreground (:func:`run`), or as a detached process
(``python -m server.pacs.supervisor DATA``, :func:`server.pacs.engine.serve`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from converter.fileio import PRIVATE_FILE, atomic_write

from server.errors import ServerError
from server.front import files as front_files
from server.front import viewer
from server.pacs import accounts as account_store
from server.pacs import orthanc, postgres, processes
from server.pacs import runtime as runtimes
from server.pacs.layout import DataLayout
from server.pacs.settings import ServerSettings, settings_from_json

# Connections each node keeps to PostgreSQL (the server admits 100, server.pacs.postgres).
INDEX_CONNECTIONS_PER_NODE = 8
WATCH_INTERVAL = 0.2
GIVE_UP_AFTER = 5
GIVE_UP_WINDOW = 60.0
AUDIT_ROTATE_BYTES = 64 << 20
AUDIT_KEEP = 10
NGINX = Path("/usr/sbin/nginx")
NGINX_HINT = "apt-get install -y --no-install-recommends nginx"
STOP_TIMEOUT = 15.0
UP, STARTING, RESTARTING, FAILED, STOPPED = "up", "starting", "restarting", "failed", "stopped"
INDEX, FRONT = "index (PostgreSQL)", "front door (nginx)"


def node_name(node: int) -> str:
    """How a node is named in messages and in the status file."""
    return f"Orthanc node {node + 1}"


@dataclass
class PartStatus:
    """One part of the PACS, as the status file records it."""

    name: str
    state: str = STARTING
    pid: int | None = None
    started: str | None = None  # the process's start time (/proc), to tell a reused pid
    restarts: int = 0
    since: str = ""
    last_exit: str = ""


@dataclass
class Status:
    """The whole PACS, as the status file records it."""

    supervisor: int
    state: str = STARTING
    message: str = ""
    parts: list[PartStatus] = field(default_factory=list)
    front_url: str = ""
    node_urls: list[str] = field(default_factory=list)
    version: str = ""
    runtime_note: str = ""
    reloads: int = 0  # changes of accounts applied

    def part(self, name: str) -> PartStatus:
        """The part called ``name`` (added when new)."""
        for part in self.parts:
            if part.name == name:
                return part
        part = PartStatus(name)
        self.parts.append(part)
        return part


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Supervisor:
    """Runs the parts of one native PACS (see the module's description).

    Parameters
    ----------
    settings
        The PACS's settings.
    runtime
        The Orthanc build (default: the one ``settings.orthanc`` selects).
    say
        Called with each line the supervisor logs (the foreground ``serve`` prints them).
    """

    def __init__(self, settings: ServerSettings, runtime: runtimes.Runtime | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.layout = DataLayout.of(settings.data_dir)
        self.account = processes.service_account("orthanc")
        self.runtime = runtime or runtimes.select(settings.orthanc)
        self.say = say
        self.status = Status(os.getpid(), front_url=settings.web_url,
                             node_urls=list(settings.node_urls), version=self.runtime.version,
                             runtime_note=self.runtime.note)
        self.index: postgres.PostgresServer | None = None
        self.procs: dict[str, processes.Process] = {}
        self.deaths: dict[str, list[float]] = {}
        self.front_key = front_files.new_front_key()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._last_rotate_check = 0.0

    # -- logging and status --

    def log(self, line: str) -> None:
        """One line to the supervisor's log (and to ``say``)."""
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        try:
            fd = os.open(self.layout.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         PRIVATE_FILE)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {line}\n")
        except OSError:
            pass
        if self.say is not None:
            self.say(line)

    def save(self) -> None:
        """Write the status file (mode 600)."""
        data = asdict(self.status)
        atomic_write(self.layout.status, json.dumps(data, indent=2) + "\n", mode=PRIVATE_FILE,
                     fsync=False)

    def _set(self, name: str, state: str, process: processes.Process | None = None,
             last_exit: str | None = None) -> None:
        part = self.status.part(name)
        part.state, part.since = state, _now()
        if process is not None:
            part.pid, part.started = process.pid, processes.start_time(process.pid)
        if last_exit is not None:
            part.last_exit = last_exit
        self.save()

    # -- starting --

    def start(self) -> None:
        """Start every part, in order; each waits until ready.

        Raises
        ------
        ServerError
            When a part cannot start (what was started is stopped again), or a PACS already
            runs on this data folder.
        """
        root = self.layout.root
        self.layout.run.mkdir(parents=True, exist_ok=True, mode=0o700)
        other = processes.recorded(self.layout.supervisor_pid)
        if other is not None and other != os.getpid():
            raise ServerError(f"a PACS already runs on {root} (supervisor pid {other}): "
                              "`vindr-convert stop` it first")
        processes.check_reachable(root, self.account)
        processes.make_private(root, self.account)
        for folder in (self.layout.run, self.layout.logs, self.layout.front):
            processes.make_private(folder, self.account)
        self.clear_leftovers()
        processes.record(self.layout.supervisor_pid, os.getpid())
        self.save()
        self.log(f"starting the PACS on {root} ({self.runtime.origin}, Orthanc "
                 f"{self.runtime.version}, {self.settings.index} index, "
                 f"{self.settings.nodes} node(s), run as {self.account.name})")
        try:
            self._prepare_front()
            if self.settings.index == "postgresql":
                self._start_index()
            for node in range(self.settings.nodes):
                self._start_node(node)
            self._start_front()
        except BaseException:
            self.stop_parts()
            raise
        self.status.state = UP
        self.save()
        self.log(f"PACS up: front door {self.settings.web_url}, "
                 f"nodes {', '.join(self.settings.node_urls)}")

    def clear_leftovers(self) -> None:
        """Stop what a supervisor killed earlier left behind on this data folder."""
        try:
            old = json.loads(self.layout.status.read_text())
        except (OSError, ValueError):
            old = {}
        for part in old.get("parts", []):
            pid, started = part.get("pid"), part.get("started")
            if not (pid and started):
                continue
            if processes.start_time(int(pid)) == started:
                self.log(f"stopping the {part.get('name')} (pid {pid}) a previous supervisor "
                         "left running")
                processes.stop_pid(int(pid), 10.0)
            if processes.kill_session(int(pid), str(started)):
                self.log(f"killed what the {part.get('name')} (pid {pid}) left running")
        if self.layout.postgres.is_dir():
            postgres.stop(self.layout.postgres)
        self.layout.front_pid.unlink(missing_ok=True)
        removed = remove_empty_files(self.layout.storage)
        if removed:
            self.log(f"removed {removed} empty file(s) from {self.layout.storage}: stores that "
                     "failed (a full disk) left them; no DICOM file is empty")

    def _prepare_front(self) -> None:
        others = account_store.read_accounts(self.layout.root)
        creds = self.settings.credentials
        hosts = front_files.served_hosts(self.settings.hostnames, self.settings.remote_access)
        front_files.write_plugin(self.layout.plugin, admin=creds.username,
                                 roles={a.name: a.role for a in others.values()},
                                 hosts=hosts, front_key=self.front_key)
        address = "0.0.0.0" if self.settings.remote_access else "127.0.0.1"
        config = front_files.native_front(
            self.layout, listen=[f"{address}:{self.settings.web_port}"], hosts=hosts,
            nodes=[f"127.0.0.1:{self.settings.node_ports(i)[0]}"
                   for i in range(self.settings.nodes)],
            front_key=self.front_key)
        front_files.write_front_config(self.layout, config)
        viewer.write_app_config(self.layout.root)
        ohif = viewer.default_ohif_dir()
        if not self.layout.viewer.is_symlink() and viewer.ohif_installed(ohif):
            viewer.enable(self.layout.root, ohif)
        for path in (self.layout.front, self.layout.plugin, self.layout.front_tmp):
            processes.give(path, self.account, tree=True)
        self._accounts = {a.name: a.password for a in others.values()}

    def _start_index(self) -> None:
        self._set(INDEX, STARTING)
        port = self.index.port if self.index is not None else processes.free_port()
        self.index, process = postgres.start(self.layout.postgres, port, account=self.account)
        self.procs[INDEX] = process
        self._set(INDEX, UP, process)

    def _index_section(self) -> dict[str, Any] | None:
        if self.index is None:
            return None
        return postgres.orthanc_section(self.index, INDEX_CONNECTIONS_PER_NODE)

    def _start_node(self, node: int) -> None:
        name = node_name(node)
        self._set(name, STARTING)
        settings = self.settings.node(node)
        plugin = front_files.PluginPaths(self.layout.plugin)
        orthanc.write_config(settings, self.runtime, plugin, self.account, node,
                             self._index_section(), self._accounts)
        process = orthanc.start(settings, self.runtime, self.account, node)
        self.procs[name] = process
        self._set(name, UP, process)

    def _start_front(self) -> None:
        self._set(FRONT, STARTING)
        binary = NGINX if NGINX.exists() else None
        if binary is None:
            raise ServerError(f"nginx is missing ({NGINX}): {NGINX_HINT}")
        if processes.port_in_use(self.settings.web_port):
            raise ServerError(f"front door port {self.settings.web_port} is already in use: "
                              "choose another one (--web-port)")
        process = processes.start(
            [str(binary), "-p", str(self.layout.front), "-c", str(self.layout.front_config),
             "-e", str(self.layout.front_error_log)],
            name=FRONT, log=self.layout.logs / "front-console.log", account=self.account,
            cwd=self.layout.front)
        processes.wait_until(lambda: processes.accepts("127.0.0.1", self.settings.web_port),
                             process, 15.0)
        self.procs[FRONT] = process
        self._set(FRONT, UP, process)

    # -- watching --

    def watch(self) -> int:
        """Watch the parts until :meth:`request_stop` (0) or a part that keeps dying (1)."""
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self._reload_accounts()
            for name in list(self.procs):
                process = self.procs.get(name)  # a restart may have replaced it meanwhile
                if process is not None and process.exited() is not None \
                        and not self._stop.is_set():
                    if not self._restart(name, process):
                        return 1
            self._rotate_audit_log()
            self._stop.wait(WATCH_INTERVAL)
        return 0

    def _restart(self, name: str, process: processes.Process) -> bool:
        """Start ``name`` again after it died; False when it keeps dying."""
        how = process.describe_exit()
        process.kill_leftovers()
        now = time.monotonic()
        deaths = [t for t in self.deaths.get(name, []) if now - t < GIVE_UP_WINDOW] + [now]
        self.deaths[name] = deaths
        self.log(f"the {name} (pid {process.pid}) {how}: restarting it")
        self.status.state = RESTARTING
        self.status.message = f"the {name} {how} at {_now()}: restarting it"
        self._set(name, RESTARTING, last_exit=f"{how} at {_now()}")
        if len(deaths) >= GIVE_UP_AFTER:
            self.status.state = FAILED
            self.status.message = (f"the {name} died {len(deaths)} times within "
                                   f"{GIVE_UP_WINDOW:.0f} s: the supervisor gave up and "
                                   f"stopped the PACS (see {self.layout.supervisor_log})")
            self._set(name, FAILED)
            self.log(self.status.message)
            return False
        try:
            self.status.part(name).restarts += 1
            if name == INDEX:
                # the nodes' connections died with it: stop them first (the index's old
                # backends then exit at once), start it, then start them again
                nodes = [node_name(node) for node in range(self.settings.nodes)]
                for node in nodes:
                    self._set(node, RESTARTING, last_exit=f"the {INDEX} {how}")
                with ThreadPoolExecutor(max_workers=len(nodes)) as pool:  # they hang on a
                    list(pool.map(lambda n: self.procs[n].stop(2.0), nodes))  # dead index
                self._start_index()
                for node in range(self.settings.nodes):
                    self._start_node(node)
            elif name == FRONT:
                self._start_front()
            else:
                self._start_node(int(name.rsplit(" ", 1)[1]) - 1)
        except ServerError as exc:
            self.log(f"the {name} did not start again: {exc}")
            self._set(name, RESTARTING, last_exit=str(exc).splitlines()[0])
            return True  # tried again on the next round, until GIVE_UP_AFTER
        self.status.state = UP if all(p.state == UP for p in self.status.parts) else RESTARTING
        self.status.message = f"the {name} {how}; restarted at {_now()}"
        self.save()
        self.log(f"the {name} is up again (pid {self.procs[name].pid})")
        return True

    def _reload_accounts(self) -> None:
        """Restart the nodes one by one with the accounts of ``DATA/accounts.json``."""
        self.log("accounts changed: restarting the nodes one by one")
        others = account_store.read_accounts(self.layout.root)
        creds = self.settings.credentials
        hosts = front_files.served_hosts(self.settings.hostnames, self.settings.remote_access)
        front_files.write_plugin(self.layout.plugin, admin=creds.username,
                                 roles={a.name: a.role for a in others.values()},
                                 hosts=hosts, front_key=self.front_key)
        processes.give(self.layout.plugin, self.account, tree=True)
        self._accounts = {a.name: a.password for a in others.values()}
        for node in range(self.settings.nodes):
            self._set(node_name(node), RESTARTING, last_exit="accounts changed")
            self.procs[node_name(node)].stop(STOP_TIMEOUT)
            self._start_node(node)
        self.status.reloads += 1
        self.save()
        self.log(f"accounts in effect: {len(others)} besides the admin")

    def _rotate_audit_log(self) -> None:
        """Rotate the audit log once it is past :data:`AUDIT_ROTATE_BYTES`."""
        now = time.monotonic()
        if now - self._last_rotate_check < 5.0:
            return
        self._last_rotate_check = now
        log = self.layout.audit_log
        try:
            if log.stat().st_size < AUDIT_ROTATE_BYTES:
                return
        except OSError:
            return
        rotate_files(log, AUDIT_KEEP)
        front = self.procs.get(FRONT)
        if front is not None and front.exited() is None:
            os.kill(front.pid, signal.SIGUSR1)  # nginx reopens its logs
        self.log(f"rotated {log}")

    # -- stopping --

    def request_stop(self) -> None:
        """Make :meth:`watch` return (from a signal handler or another thread)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Restart the nodes with the accounts changed (SIGHUP)."""
        self._reload.set()

    def stop_parts(self) -> None:
        """Stop the front, the nodes (side by side), then the index."""
        front = self.procs.pop(FRONT, None)
        if front is not None:
            front.stop(STOP_TIMEOUT)
            self._set(FRONT, STOPPED)
        nodes = [(name, p) for name, p in self.procs.items() if name.startswith("Orthanc")]
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            list(pool.map(lambda item: item[1].stop(STOP_TIMEOUT), nodes))
        for name, _ in nodes:
            self.procs.pop(name, None)
            self._set(name, STOPPED)
            self.layout.node(int(name.rsplit(" ", 1)[1]) - 1).pid_file.unlink(missing_ok=True)
        index = self.procs.pop(INDEX, None)
        if index is not None:
            index.stop(STOP_TIMEOUT, sig=signal.SIGINT)  # fast shutdown: roll back, checkpoint
            self._set(INDEX, STOPPED)
        if self.status.state != FAILED:
            self.status.state = STOPPED
        self.save()


def remove_empty_files(storage: Path) -> int:
    """Remove the empty files Orthanc leaves in its storage when a write fails (a full
    disk): never a stored object, since no DICOM file is empty. Orthanc's own files (the
    SQLite index and its journal) are not touched. Returns how many were removed."""
    removed = 0
    if not storage.is_dir():
        return 0
    for folder, _dirs, names in os.walk(storage):
        if Path(folder) == storage:
            continue  # the index (index, index-wal...) lives at the top
        for name in names:
            path = Path(folder) / name
            try:
                if path.stat().st_size == 0 and path.is_file():
                    path.unlink()
                    removed += 1
            except OSError:
                pass
    return removed


def rotate_files(path: Path, keep: int) -> None:
    """``path`` -> ``path.1`` -> ... -> ``path.<keep>`` (the oldest dropped)."""
    for k in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{k}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{k + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


def run(settings: ServerSettings, *, runtime: runtimes.Runtime | None = None,
        on_ready: Callable[[Supervisor], None] | None = None,
        say: Callable[[str], None] | None = None) -> int:
    """Start the PACS and supervise it until SIGTERM or SIGINT (0), or until a part keeps
    dying (1); everything is stopped on the way out.

    Raises
    ------
    ServerError
        When the PACS cannot start.
    """
    supervisor = Supervisor(settings, runtime, say)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                        signal.SIGHUP)}
    signal.signal(signal.SIGTERM, lambda *_: supervisor.request_stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.request_stop())
    signal.signal(signal.SIGHUP, lambda *_: supervisor.request_reload())
    processes.become_subreaper()
    try:
        supervisor.start()
        if on_ready is not None:
            on_ready(supervisor)
        return supervisor.watch()
    finally:
        supervisor.stop_parts()
        supervisor.log("PACS stopped")
        if processes.recorded(supervisor.layout.supervisor_pid) == os.getpid():
            supervisor.layout.supervisor_pid.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- from other processes -------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What another process (``load``, ``verify``, ``status``) can tell of a PACS."""

    running: bool
    state: str
    problem: str | None
    parts: tuple[PartStatus, ...] = ()

    def load_problem(self) -> str | None:
        """What keeps a load or a verify from going on: the supervisor gone, the index not
        up, or no node up (one node of several down is not: the others take its work)."""
        if not self.running:
            return self.problem
        for part in self.parts:
            if part.name == INDEX and part.state != UP:
                return f"the {part.name} is {part.state}" + (
                    f" ({part.last_exit})" if part.last_exit else "")
        nodes = [p for p in self.parts if p.name.startswith("Orthanc node")]
        if nodes and all(p.state != UP for p in nodes):
            return "no Orthanc node is up: " + "; ".join(
                f"{p.name} {p.state} ({p.last_exit})" for p in nodes)
        return None


def health(data_dir: Path) -> Health:
    """The PACS of ``data_dir`` as its supervisor last recorded it, checked against the
    processes that really run."""
    layout = DataLayout.of(data_dir)
    pid = processes.recorded(layout.supervisor_pid)
    try:
        data = json.loads(layout.status.read_text())
        parts = tuple(PartStatus(**p) for p in data.get("parts", []))
    except (OSError, ValueError, TypeError):
        data, parts = {}, ()
    if pid is None:
        said = data.get("message") or "not running"
        return Health(False, str(data.get("state", STOPPED)),
                      f"the PACS on {layout.root} is not running (its supervisor is gone: "
                      f"{said})", parts)
    for part in parts:
        if part.state != UP:
            return Health(True, str(data.get("state")), f"the {part.name} is {part.state}"
                          + (f" ({part.last_exit})" if part.last_exit else ""), parts)
        if part.pid and processes.start_time(part.pid) != part.started:
            return Health(True, str(data.get("state")),
                          f"the {part.name} (pid {part.pid}) is gone", parts)
    return Health(True, str(data.get("state", STARTING)),
                  None if data.get("state") == UP else data.get("message") or "starting",
                  parts)


def stop(data_dir: Path, timeout: float = 60.0) -> bool:
    """Stop the PACS of ``data_dir`` (SIGTERM to its supervisor, which stops the parts);
    False when none ran."""
    layout = DataLayout.of(data_dir)
    pid = processes.recorded(layout.supervisor_pid)
    if pid is None:
        return False
    stopped = processes.stop_pid(pid, timeout)
    layout.supervisor_pid.unlink(missing_ok=True)
    return stopped


def reload(data_dir: Path, timeout: float = 120.0) -> bool:
    """Have the supervisor of ``data_dir`` apply changed accounts, and wait until it did;
    False when none runs.

    Raises
    ------
    ServerError
        When it did not within ``timeout`` seconds.
    """
    layout = DataLayout.of(data_dir)
    pid = processes.recorded(layout.supervisor_pid)
    if pid is None:
        return False
    before = _reloads(layout)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while _reloads(layout) <= before:
        if time.monotonic() > deadline or processes.recorded(layout.supervisor_pid) is None:
            raise ServerError(f"the PACS on {layout.root} did not apply the change within "
                              f"{timeout:.0f} s (see {layout.supervisor_log})")
        time.sleep(0.1)
    return True


def _reloads(layout: DataLayout) -> int:
    try:
        return int(json.loads(layout.status.read_text()).get("reloads", 0))
    except (OSError, ValueError):
        return 0


def _main(argv: list[str]) -> int:
    """``python -m server.pacs.supervisor DATA``: run the PACS of ``DATA`` (its settings in
    ``DATA/run/settings.json``, written by ``serve --background``)."""
    layout = DataLayout.of(Path(argv[0]))
    settings = settings_from_json(json.loads(layout.serve_settings.read_text()))
    settings = replace(settings, data_dir=layout.root)
    try:
        return run(settings)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
