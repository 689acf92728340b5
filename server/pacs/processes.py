"""Start, watch and stop the PACS's processes: the one place that does it.

Every part of the PACS (PostgreSQL, the Orthanc nodes, nginx) is started by
:func:`start` as a child of the supervisor (:mod:`server.pacs.supervisor`), which can
therefore see it die (:meth:`Process.exited`). Each child

- runs in its own session (Ctrl-C in a terminal reaches the supervisor only, which stops
  the parts in order);
- receives SIGTERM when the supervisor dies, even by SIGKILL (``PR_SET_PDEATHSIG``), so no
  part runs unsupervised;
- writes what it prints to its own log file, and creates files with umask 077;
- never runs as root: as root, it runs as a service account (Debian's ``orthanc`` or
  ``postgres``, :func:`service_account`), else as the invoking user.

:func:`wait_until` waits for a part to be ready, failing with the end of its log when it
exits first; :meth:`Process.stop` sends SIGTERM, then SIGKILL after a timeout;
:func:`stop_pid` does the same for a pid recorded by another process.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from converter.fileio import PRIVATE_DIR, PRIVATE_FILE

from server.errors import ServerError

UMASK = 0o077
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# --- ports --------------------------------------------------------------------------------


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports nobody listens on now (the nodes of a
    cluster take consecutive ports), chosen at random outside the ephemeral range: a port
    the kernel may hand to an outgoing connection (every request nginx sends to a node is
    one) could be taken by the time the part binds it."""
    low, high = _ephemeral_ports()
    start, stop = (10000, low) if low - 10000 > 1000 + count else (high + 1, 65536)
    chooser = random.SystemRandom()
    for _ in range(1000):
        first = chooser.randrange(start, stop - count)
        if not any(port_in_use(first + i) for i in range(count)):
            return first
    raise ServerError(f"no {count} free consecutive TCP ports between {start} and {stop}")


def free_port() -> int:
    """A TCP port nobody listens on now (see :func:`free_ports`)."""
    return free_ports(1)


def port_in_use(port: int) -> bool:
    """True when something already listens on ``port`` (any interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return True
    return False


def accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- accounts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """The Unix account a part runs as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def current(cls) -> Account:
        """The invoking user."""
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, os.getegid())

    @property
    def is_current(self) -> bool:
        """True when this is the invoking user (no switch needed)."""
        return self.uid == os.geteuid()


def service_account(kind: str) -> Account:
    """Who runs a part of ``kind`` (``orthanc``: Orthanc and nginx; ``postgres``):
    the invoking user, or, for root, Debian's account of that name (made by the
    ``orthanc`` and ``postgresql`` packages).

    Raises
    ------
    ServerError
        As root, when that account does not exist.
    """
    if os.geteuid() != 0:
        return Account.current()
    try:
        entry = pwd.getpwnam(kind)
    except KeyError:
        package = "postgresql" if kind == "postgres" else "orthanc"
        raise ServerError(f"as root, the PACS runs as the system account {kind!r}, which is "
                          f"missing: apt-get install {package}") from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def give(path: Path, account: Account, *, tree: bool = False) -> None:
    """Make ``path`` (and, with ``tree``, everything below it) ``account``'s; nothing to do
    when that is the invoking user."""
    if account.is_current:
        return
    os.chown(path, account.uid, account.gid, follow_symlinks=False)
    if tree and Path(path).is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), account.uid, account.gid,
                         follow_symlinks=False)


def check_reachable(folder: Path, account: Account) -> None:
    """Raise ServerError when ``account`` cannot reach ``folder`` (a parent folder closed to
    others, such as /root, or a folder under pytest's private tmp)."""
    if account.is_current:
        return
    for parent in Path(folder).resolve().parents:
        try:
            info = parent.stat()
        except OSError:
            continue
        traversable = (info.st_mode & 0o001) or (info.st_uid == account.uid
                                                  and info.st_mode & 0o100) \
            or (info.st_gid == account.gid and info.st_mode & 0o010)
        if not traversable:
            raise ServerError(
                f"{folder} cannot be reached by the account {account.name!r} the PACS runs as "
                f"(root never runs it): {parent} is closed to others (mode "
                f"{info.st_mode & 0o777:o}); choose a data folder under /var/lib or /srv "
                "(the default for root is /var/lib/vindr-dicom/orthanc)")


# --- processes ----------------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    """Adopt the orphans of our descendants (so that no part escapes the supervisor)."""
    try:
        _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Process:
    """A part of the PACS started by :func:`start`."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """Its pid."""
        return self.popen.pid

    def exited(self) -> int | None:
        """Its exit status once it exited (negative: the signal that killed it), else None."""
        return self.popen.poll()

    def describe_exit(self) -> str:
        """How it ended, in words."""
        code = self.popen.returncode
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` (SIGTERM), then SIGKILL after ``timeout`` seconds; waits until it is gone,
        then kills what it left of its own (:meth:`kill_leftovers`)."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            except ProcessLookupError:
                pass
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of its session (it leads one: nginx's workers, PostgreSQL's
        backends), once it is gone itself: a master killed by SIGKILL leaves them holding
        its port and files."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start(args: Sequence[str], *, name: str, log: Path, env: Mapping[str, str] | None = None,
          account: Account | None = None, cwd: Path | str = "/") -> Process:
    """Start ``args`` as a part of the PACS (see the module's description).

    ``log`` receives its output (created mode 600, appended to); ``account`` is who it runs
    as (default: the invoking user; root never runs a part: pass a service account).

    Raises
    ------
    ServerError
        When the program cannot be started.
    """
    account = account or Account.current()
    if account.uid == 0:
        raise ServerError(f"the {name} would run as root: give it a service account")
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    if not account.is_current:
        os.fchown(sink, account.uid, account.gid)
    switch = {} if account.is_current else {"user": account.uid, "group": account.gid,
                                             "extra_groups": []}
    try:
        popen = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=str(cwd), umask=UMASK,
            start_new_session=True, preexec_fn=_die_with_parent, **switch)
    except OSError as exc:
        raise ServerError(f"cannot start the {name} ({args[0]}): {exc}") from exc
    finally:
        os.close(sink)
    return Process(name, popen, log)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` of ``path``, introduced by its name ('' when it cannot be read)."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nlast lines of {path}:\n" + "\n".join(text) if text else ""


def wait_until(ready: Callable[[], bool], process: Process, timeout: float) -> None:
    """Wait until ``ready()`` is true.

    Raises
    ------
    ServerError
        When the process exits first, or after ``timeout`` seconds (it is then stopped),
        with the end of its log.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.exited() is not None:
            raise ServerError(f"the {process.name} {process.describe_exit()} at start"
                              f"{log_tail(process.log)}")
        if time.monotonic() > deadline:
            process.stop(5.0)
            raise ServerError(f"the {process.name} was not ready within {timeout:.0f} s"
                              f"{log_tail(process.log)}")
        time.sleep(0.05)


def zombie(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (exited, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def alive(pid: int, marker: bytes | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, with ``marker``, has it in its command line
    (a recorded pid can outlive its process and be reused by another program)."""
    if pid <= 0 or zombie(pid):
        return False
    if marker is None:
        return True
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` (None when absent or unreadable)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record(path: Path, pid: int) -> None:
    """Write ``pid`` and its start time to ``path`` (mode 600)."""
    from converter.fileio import atomic_write

    atomic_write(path, f"{pid} {start_time(pid) or 0}\n", mode=PRIVATE_FILE, fsync=False)


def recorded(path: Path) -> int | None:
    """The pid :func:`record` wrote to ``path`` if that very process still runs (not a
    later one that got the same pid), else None."""
    try:
        pid_text, started = Path(path).read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if not zombie(pid) and start_time(pid) == started else None


def kill_session(leader: int, started: str) -> int:
    """SIGKILL every process of the session ``leader`` started (a part that died and left
    workers behind, under an earlier supervisor); how many there were. Only processes
    started since the leader are taken: a pid reused later leads another session."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        session, begun = int(fields[3]), fields[19]
        if session == leader and int(begun) >= int(started):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def stop_pid(pid: int, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Stop a process that is not our child: ``sig``, then SIGKILL after ``timeout``; True
    once it is gone, False when it was not running."""
    if zombie(pid):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    if not _wait_gone(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        _wait_gone(pid, 5.0)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        except ChildProcessError:
            pass
        if zombie(pid):
            return True
        time.sleep(0.05)
    return False


def make_private(folder: Path, account: Account | None = None) -> None:
    """Create ``folder`` mode 700 (owned by ``account`` when given); if it was not private,
    make what it holds 700 (folders) and 600 (files) too: a folder made by an earlier
    version becomes private."""
    folder = Path(folder)
    was_private = folder.is_dir() and (folder.stat().st_mode & 0o777) == PRIVATE_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(folder, PRIVATE_DIR)
    if account is not None:
        give(folder, account)
    if was_private:
        return
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), PRIVATE_DIR)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, PRIVATE_FILE)
