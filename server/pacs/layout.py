"""Every folder and file the PACS uses, in one place.

A data folder (``serve --data DATA``; :func:`default_data_dir` otherwise) holds everything
of one PACS, private to its owner (folders 700, files 600)::

    DATA/orthanc.json            node 1's Orthanc configuration (credentials inside)
    DATA/tmp/  DATA/logs/        node 1's TemporaryDirectory and --logdir (console.log too)
    DATA/orthanc.pid             node 1's pid (the supervisor's child)
    DATA/nodes/N/                the same for node N >= 2 of a cluster
    DATA/storage/                the DICOM files (and the SQLite index), shared by the nodes
    DATA/postgresql/             the private PostgreSQL server of ``--index postgresql``
    DATA/accounts.json           the accounts besides the admin (``vindr-convert users``)
    DATA/front/nginx.conf        the front door's configuration (server.front.nginx)
    DATA/front/plugin/           the code Orthanc runs in process (server.front.plugin),
                                 its settings and the DICOM dictionary it reads
    DATA/front/app-config.js     the OHIF viewer's configuration; DATA/front/ohif its build
    DATA/logs/audit.log          every request through the front: account, method,
                                 resource, status, bytes (rotated: audit.log.1 ...)
    DATA/logs/supervisor.log     what the supervisor started, saw die and restarted
    DATA/run/                    the supervisor's pid, its settings and the parts' status

The per-user credentials file is :func:`server.userconfig.config_path`; the project's own
data (Debian 13's Orthanc root, OHIF's build) lives under :func:`data_home`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Where root's PACS lives: its services run as Debian's own ``orthanc`` and ``postgres``
# accounts (server.pacs.processes), which must be able to reach it, and /root is closed.
SYSTEM_DATA_HOME = Path("/var/lib/vindr-dicom")


def data_home() -> Path:
    """The project's data folder: ``${XDG_DATA_HOME:-~/.local/share}/vindr-dicom``, or
    ``/var/lib/vindr-dicom`` for root (``$XDG_DATA_HOME`` still wins)."""
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "vindr-dicom"
    if os.geteuid() == 0:
        return SYSTEM_DATA_HOME
    return Path.home() / ".local" / "share" / "vindr-dicom"


def default_data_dir() -> Path:
    """The default PACS data folder: ``data_home()/orthanc``."""
    return data_home() / "orthanc"


def default_orthanc_root() -> Path:
    """Where ``install-orthanc`` builds the Debian 13 root: ``data_home()/debian13-root``."""
    return data_home() / "debian13-root"


def default_ohif_dir(version: str) -> Path:
    """Where ``view --install`` unpacks OHIF's build: ``data_home()/ohif/VERSION``."""
    return data_home() / "ohif" / version


@dataclass(frozen=True)
class NodeFiles:
    """The files of Orthanc node ``node`` (from 0) of a data folder."""

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
        """Pid of the running node."""
        return self.home / "orthanc.pid"


@dataclass(frozen=True)
class DataLayout:
    """The folders and files of one data folder (see the module's description)."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> DataLayout:
        """The layout of ``data_dir`` (made absolute)."""
        return cls(Path(data_dir).expanduser().resolve())

    def node(self, node: int) -> NodeFiles:
        """Node ``node``'s files (from 0)."""
        return NodeFiles(self.root, node)

    def nodes(self) -> list[int]:
        """The node numbers (from 0) that have a folder here."""
        extra = sorted(int(p.name) - 1 for p in (self.root / "nodes").glob("*")
                       if p.name.isdigit())
        return [0, *extra]

    @property
    def storage(self) -> Path:
        """The DICOM files (and the SQLite index), shared by every node."""
        return self.root / "storage"

    @property
    def postgres(self) -> Path:
        """The private PostgreSQL server's folder (server.pacs.postgres)."""
        return self.root / "postgresql"

    @property
    def accounts(self) -> Path:
        """The accounts file (server.pacs.accounts)."""
        return self.root / "accounts.json"

    @property
    def logs(self) -> Path:
        """Logs of the PACS as a whole (node 1's are here too)."""
        return self.root / "logs"

    @property
    def audit_log(self) -> Path:
        """The front's audit log: one JSON line per request."""
        return self.logs / "audit.log"

    @property
    def front_error_log(self) -> Path:
        """nginx's own errors."""
        return self.logs / "front-error.log"

    @property
    def supervisor_log(self) -> Path:
        """What the supervisor did."""
        return self.logs / "supervisor.log"

    @property
    def front(self) -> Path:
        """The front door's files."""
        return self.root / "front"

    @property
    def front_config(self) -> Path:
        """nginx's configuration."""
        return self.front / "nginx.conf"

    @property
    def front_pid(self) -> Path:
        """nginx's master pid (nginx writes it)."""
        return self.front / "nginx.pid"

    @property
    def front_tmp(self) -> Path:
        """nginx's temporary files (request bodies on their way to Orthanc)."""
        return self.front / "tmp"

    @property
    def plugin(self) -> Path:
        """The Python code Orthanc runs (a copy of server.front.plugin, its settings)."""
        return self.front / "plugin"

    @property
    def plugin_script(self) -> Path:
        """The script Orthanc's Python plugin starts (``PythonScript``)."""
        return self.plugin / "start.py"

    @property
    def plugin_settings(self) -> Path:
        """What the in-Orthanc code reads at start: accounts' roles, hosts, the front's key."""
        return self.plugin / "settings.json"

    @property
    def dictionary(self) -> Path:
        """The DICOM dictionary the in-Orthanc code reads (written from pydicom's)."""
        return self.plugin / "dictionary.json"

    @property
    def app_config(self) -> Path:
        """OHIF's ``app-config.js``, served by the front."""
        return self.front / "app-config.js"

    @property
    def viewer(self) -> Path:
        """A link to OHIF's build (``vindr-convert view`` makes it); served by the front."""
        return self.front / "ohif"

    @property
    def run(self) -> Path:
        """The supervisor's runtime files."""
        return self.root / "run"

    @property
    def status(self) -> Path:
        """The parts of the PACS and their state, kept by the supervisor."""
        return self.run / "status.json"

    @property
    def supervisor_pid(self) -> Path:
        """The supervisor's pid."""
        return self.run / "supervisor.pid"

    @property
    def serve_settings(self) -> Path:
        """The settings the supervisor runs with (credentials inside)."""
        return self.run / "settings.json"
