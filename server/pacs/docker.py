"""Run the PACS with docker compose: ``orthancteam/orthanc`` nodes, PostgreSQL, the front.

The compose file is ``docker/docker-compose.yml`` in the repository: the Orthanc nodes of
:data:`ORTHANC_NODES` share one PostgreSQL index and one storage folder and run the front's
code in process (Orthanc's Python plugin, :mod:`server.front.plugin`); nginx
(:mod:`server.front.nginx`, the same front door as the native PACS) serves DICOMweb and the
viewer to every account on ``settings.web_port`` and the admin's REST API on
``settings.http_port`` (loopback only); each node has its own DICOM port,
``settings.dicom_port`` and the next ones (:func:`dicom_ports`).

:func:`prepare` turns a data folder into a compose project (mode 700)::

    DATA/docker-compose.yml          copy of docker/docker-compose.yml
    DATA/.env                        ports, bind addresses, folders
    DATA/secrets/orthanc.secret.json Orthanc configuration of every node (same policy as
                                     native: the accounts, the Python plugin, PostgreSQL
                                     settings for several writers)
    DATA/secrets/postgres_password   database password (generated once, then kept)
    DATA/front/nginx.conf            the front door; front/plugin/ the in-Orthanc code;
    DATA/front/app-config.js         OHIF's configuration; front/rotate-audit.sh the audit
                                     log's rotation
    DATA/storage/, DATA/postgres/    bind-mounted data (mode 700); DATA/logs/ the audit log

DICOM is published on ``settings.listen`` (127.0.0.1 unless ``serve --listen``). Behind
docker's port publishing, a connection from this machine reaches Orthanc from the bridge's
gateway, not from 127.0.0.1, so Orthanc's host check cannot tell local callers apart: on
loopback the port itself is the barrier (host check off); with ``--listen`` the host check
is on. No AE title may store, but the random one a C-STORE load registers for its run.

Files the containers read are mode 644 inside the 700 folder: compose (outside swarm) mounts
them with the host's modes, and the images read them as their own users.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from converter.fileio import PRIVATE_FILE, atomic_write, private_dir

from server.errors import ServerError, SettingsError
from server.front import files as front_files
from server.front import nginx, viewer
from server.pacs import accounts as account_store
from server.pacs.layout import DataLayout
from server.pacs.settings import (
    KEEP_ALIVE_TIMEOUT,
    LOOPBACK,
    ServerSettings,
    check_port,
    is_loopback,
    orthanc_config,
)

ORTHANC_IMAGE = "orthancteam/orthanc:25.2.0"
ORTHANC_IMAGE_VERSION = "1.12.6"  # the Orthanc inside ORTHANC_IMAGE (PostgreSQL plugin 7.2)
POSTGRES_IMAGE = "postgres:16.6"
NGINX_IMAGE = "nginx:1.30.4-alpine"  # the stable branch; the upstream "resolve" needs >= 1.27.3
# The compose file's Orthanc services, in the order of their DICOM ports (dicom_ports).
ORTHANC_NODES = ("orthanc-1", "orthanc-2")
# docker/docker-compose.yml of the repository, shipped inside the package (a symbolic link
# in the source tree, a copy in a wheel), so that an installed package finds it too.
COMPOSE_TEMPLATE = Path(str(resources.files("server.pacs") / "resources" / "docker-compose.yml"))
CONTAINER_HTTP_PORT = 8042  # fixed inside the containers; the compose file maps them
CONTAINER_WEB_PORT = 8050
CONTAINER_DICOM_PORT = 4242
CONTAINER_PLUGIN = Path("/vindr/front/plugin")  # where the nodes see DATA/front/plugin
CONTAINER_LOGS = Path("/var/log/vindr")  # where the front sees DATA/logs
HEALTH_LISTEN = "127.0.0.1:8081"
# Connections each node opens to PostgreSQL, all at start (the plugin's default is 50: two
# nodes would take all of PostgreSQL's 100). A transaction holds one only while it runs.
INDEX_CONNECTIONS_PER_NODE = 25
INSTALL_HINT = "install Docker Engine with the compose plugin (docker compose version must work)"


@dataclass(frozen=True)
class DockerProject:
    """A prepared compose project folder."""

    root: Path

    @property
    def compose_file(self) -> Path:
        """The project's copy of the compose file."""
        return self.root / "docker-compose.yml"

    @property
    def env_file(self) -> Path:
        """Variables the compose file reads."""
        return self.root / ".env"

    @property
    def orthanc_secret(self) -> Path:
        """Orthanc's configuration, mounted as a secret."""
        return self.root / "secrets" / "orthanc.secret.json"

    @property
    def postgres_secret(self) -> Path:
        """The database password, mounted as a secret."""
        return self.root / "secrets" / "postgres_password"

    @property
    def nginx_config(self) -> Path:
        """The front door's configuration."""
        return self.root / "front" / "nginx.conf"

    @property
    def rotate_script(self) -> Path:
        """The front container's command: nginx, and the audit log's rotation."""
        return self.root / "front" / "rotate-audit.sh"

    def command(self, *args: str) -> list[str]:
        """``docker compose`` on this project with ``args``."""
        return [
            "docker",
            "compose",
            "--project-directory",
            str(self.root),
            "-f",
            str(self.compose_file),
            *args,
        ]


def dicom_ports(settings: ServerSettings) -> dict[str, int]:
    """Each Orthanc node's published DICOM port: ``settings.dicom_port``, then the next ones."""
    return {node: settings.dicom_port + i for i, node in enumerate(ORTHANC_NODES)}


def dicom_port_variable(node: str) -> str:
    """The ``.env`` variable holding ``node``'s DICOM port (``VINDR_DICOM_PORT``, ``_2``...)."""
    index = ORTHANC_NODES.index(node)
    return "VINDR_DICOM_PORT" + (f"_{index + 1}" if index else "")


def docker_config(settings: ServerSettings, postgres_password: str,
                  accounts: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`orthanc_config` for every node: fixed inner ports, a shared PostgreSQL index.

    Remote access is on inside the containers (requests arrive from docker's network); the
    compose file publishes the load balancer's HTTP port on loopback only unless
    ``settings.remote_access``, and each node's DICOM port on ``settings.listen``.

    Several Orthanc servers writing to one database (Orthanc >= 1.9.2 with PostgreSQL plugin
    >= 4.0; the Orthanc book, "Scalability", "Concurrent accesses to the DB"): the plugin must
    not lock the database (``Lock``), and the ``ReadCommitted`` transaction mode (the default
    since plugin 7.0) lets the nodes write at the same time rather than replaying colliding
    serializable transactions. The DICOM files stay on the filesystem (``EnableStorage``
    false), in the folder every node mounts. All nodes read this same configuration, as the
    book requires of nodes sharing a database; the compose file gives each one its own
    ``DatabaseServerIdentifier`` (its row for server-level properties), which the book says
    must be set by hand under docker. Revisions (``CheckRevisions``) protect metadata and
    attachments modified through the REST API by concurrent clients: nothing here modifies
    them, so they stay off as in Orthanc's default. Storage limits and recycling stay off
    (:func:`orthanc_config`): several nodes recycling one archive would race.
    """
    local_only = is_loopback(settings.listen)
    config = orthanc_config(settings, ORTHANC_IMAGE_VERSION, accounts)
    config["DicomCheckModalityHost"] = not local_only
    config.update(
        {
            "HttpPort": CONTAINER_HTTP_PORT,
            "DicomPort": CONTAINER_DICOM_PORT,
            "RemoteAccessAllowed": True,
            "StorageDirectory": "/var/lib/orthanc/db",
            "KeepAliveTimeout": KEEP_ALIVE_TIMEOUT,
            "CheckRevisions": False,
            "PythonScript": str(front_files.PluginPaths(CONTAINER_PLUGIN).script),
            "PythonVerbose": False,
            "PostgreSQL": {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": "postgres",
                "Port": 5432,
                "Database": "orthanc",
                "Username": "orthanc",
                "Password": postgres_password,
                "Lock": False,
                "TransactionMode": "ReadCommitted",
                "IndexConnectionsCount": INDEX_CONNECTIONS_PER_NODE,
            },
        }
    )
    return config


def env_file_text(settings: ServerSettings) -> str:
    """The ``.env`` for ``settings``."""
    ports = "".join(f"{dicom_port_variable(node)}={port}\n"
                    for node, port in dicom_ports(settings).items())
    ohif = viewer.default_ohif_dir()
    viewer_dir = str(ohif) if viewer.ohif_installed(ohif) else "./front/no-viewer"
    return (
        f"VINDR_WEB_BIND={'0.0.0.0' if settings.remote_access else '127.0.0.1'}\n"
        f"VINDR_WEB_PORT={settings.web_port}\n"
        f"VINDR_HTTP_PORT={settings.http_port}\n"
        f"VINDR_VIEWER_DIR={viewer_dir}\n"
        f"VINDR_DICOM_BIND={settings.listen}\n"
        f"{ports}"
        "VINDR_STORAGE_DIR=./storage\n"
        "VINDR_POSTGRES_DIR=./postgres\n"
    )


def check_ports(settings: ServerSettings) -> None:
    """Refuse DICOM ports past 65535 or on the HTTP port (the nodes take consecutive ones).

    Raises
    ------
    SettingsError
        Naming the node and the port.
    """
    for node, port in dicom_ports(settings).items():
        check_port(port, f"DICOM port of {node}")
        if port == settings.http_port:
            raise SettingsError(
                f"DICOM port of {node} ({port}) is the HTTP port: the docker engine gives its "
                f"{len(ORTHANC_NODES)} Orthanc nodes DICOM ports {settings.dicom_port} and up; "
                "choose ports apart")


def front_config(settings: ServerSettings, front_key: str) -> nginx.FrontConfig:
    """The front door inside its container (paths as the container sees them)."""
    hosts = front_files.served_hosts(settings.hostnames, settings.remote_access)
    return nginx.FrontConfig(
        listen=(str(CONTAINER_WEB_PORT),), hosts=hosts,
        nodes=tuple(f"{node}:{CONTAINER_HTTP_PORT}" for node in ORTHANC_NODES),
        front_key=front_key, pid=Path("/tmp/nginx.pid"),
        error_log=CONTAINER_LOGS / "front-error.log", audit_log=CONTAINER_LOGS / "audit.log",
        temp=Path("/var/cache/nginx"), viewer=Path("/vindr/viewer"),
        app_config=Path("/vindr/front/app-config.js"),
        admin_listen=(str(CONTAINER_HTTP_PORT),), resolver="127.0.0.11",
        health_listen=HEALTH_LISTEN)


def rotate_script(keep: int = 10, limit: int = 64 << 20) -> str:
    """The front container's command: the audit log rotated beside nginx."""
    log = CONTAINER_LOGS / "audit.log"
    return f"""#!/bin/sh
# Written by `vindr-convert serve --engine docker`: nginx in the foreground, and the audit
# log rotated beside it once past {limit} bytes ({keep} old files kept).
log={log}
(while sleep 60; do
  size=$(stat -c %s "$log" 2>/dev/null || echo 0)
  if [ "$size" -gt {limit} ]; then
    k={keep - 1}
    while [ "$k" -ge 1 ]; do
      [ -f "$log.$k" ] && mv "$log.$k" "$log.$((k + 1))"
      k=$((k - 1))
    done
    mv "$log" "$log.1" && kill -USR1 "$(cat /tmp/nginx.pid)"
  fi
done) &
exec nginx -c /etc/nginx/nginx.conf
"""


def prepare(settings: ServerSettings, template: Path = COMPOSE_TEMPLATE) -> DockerProject:
    """Write the compose project for ``settings`` into ``settings.data_dir``.

    The database password is generated on first use and kept afterwards (the database
    volume remembers it); the front's key is new each time.

    Raises
    ------
    ServerError
        When the compose template is missing (an installed package without the repo).
    SettingsError
        When a node's DICOM port is out of range or on the HTTP port (:func:`check_ports`).
    """
    if not template.is_file():
        raise ServerError(f"{template} missing: the vindr-dicom installation is incomplete")
    check_ports(settings)
    project = DockerProject(settings.data_dir)
    layout = DataLayout.of(settings.data_dir)
    private_dir(project.root)
    for folder in ("storage", "postgres", "logs", "front"):
        private_dir(project.root / folder)
    shutil.copyfile(template, project.compose_file)
    if project.postgres_secret.is_file():
        password = project.postgres_secret.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        atomic_write(project.postgres_secret, password + "\n", mode=0o644)
    others = account_store.read_accounts(settings.data_dir)
    key = front_files.new_front_key()
    front_files.write_plugin(
        layout.plugin, admin=settings.credentials.username,
        roles={a.name: a.role for a in others.values()},
        hosts=front_files.served_hosts(settings.hostnames, settings.remote_access),
        front_key=key, seen_as=CONTAINER_PLUGIN)
    for path in layout.plugin.rglob("*"):  # the nodes read them as their own user
        path.chmod(0o755 if path.is_dir() else 0o644)
    layout.plugin.chmod(0o755)
    atomic_write(project.nginx_config, nginx.render(front_config(settings, key)), mode=0o644)
    atomic_write(layout.app_config, viewer.app_config(), mode=0o644)
    atomic_write(project.rotate_script, rotate_script(), mode=0o644)
    (project.root / "front" / "no-viewer").mkdir(exist_ok=True)
    config = docker_config(settings, password, {a.name: a.password for a in others.values()})
    atomic_write(project.orthanc_secret, json.dumps(config, indent=2), mode=0o644)
    atomic_write(project.env_file, env_file_text(settings), mode=PRIVATE_FILE)
    return project


def compose_available() -> bool:
    """True when ``docker compose`` (the CLI plugin) runs here; says nothing of the engine."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


def engine_available() -> bool:
    """True when a docker engine answers (``docker info``)."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def _run(project: DockerProject, *args: str) -> int:
    if not (compose_available() and engine_available()):
        raise ServerError(f"docker compose cannot run here: {INSTALL_HINT}")
    return subprocess.run(project.command(*args), check=False).returncode


def up(project: DockerProject, *, background: bool = True) -> int:
    """``docker compose up`` (``-d --wait`` in the background: returns once healthy).

    ``--remove-orphans``: a project prepared before the cluster had one ``orthanc`` service
    publishing the HTTP port; left running, it would keep the load balancer off that port.
    """
    return _run(
        project, "up", "--remove-orphans",
        *(("-d", "--wait") if background else ("--abort-on-container-exit",)),
    )


def stop(data_dir: Path) -> bool:
    """``docker compose stop`` the project in ``data_dir``; False when there is none."""
    project = DockerProject(Path(data_dir).expanduser().resolve())
    if not project.compose_file.is_file():
        return False
    if _run(project, "stop") != 0:
        raise ServerError(f"docker compose stop failed in {project.root}")
    return True


def exposure_notes(settings: ServerSettings) -> list[str]:
    """What the network can reach of the compose project, for users."""
    ports = ", ".join(f"{port} ({node})" for node, port in dicom_ports(settings).items())
    if is_loopback(settings.listen):
        return [(f"DICOM ports {ports} are published on {LOOPBACK} only; no AE title may "
                 "store but the random one a C-STORE load registers for its run")]
    return [(f"DICOM ports {ports} are published on {settings.listen}; each "
             "modality is accepted from its own address only; no AE title may store but the "
             "random one a C-STORE load registers for its run")]
