"""Run the PACS with docker compose: ``orthancteam/orthanc`` nodes, PostgreSQL, nginx.

The compose file is ``docker/docker-compose.yml`` in the repository: the Orthanc nodes of
:data:`ORTHANC_NODES` share one PostgreSQL index and one storage folder, and nginx
(``docker/nginx.conf``) balances HTTP over them on ``settings.http_port``; each node has its
own DICOM port, ``settings.dicom_port`` and the next ones (:func:`dicom_ports`).

:func:`prepare` turns a data folder into a compose project (mode 700)::

    DATA/docker-compose.yml          copy of docker/docker-compose.yml
    DATA/nginx.conf                  copy of docker/nginx.conf (the load balancer)
    DATA/.env                        ports, HTTP and DICOM bind addresses, storage folders
    DATA/secrets/orthanc.secret.json Orthanc configuration of every node (same policy as
                                     native, plus the PostgreSQL settings for several writers)
    DATA/secrets/postgres_password   database password (generated once, then kept)
    DATA/storage/, DATA/postgres/    bind-mounted data (mode 700)

DICOM is published on ``settings.listen`` (127.0.0.1 unless ``serve --listen``). Behind
docker's port publishing, a connection from this machine reaches Orthanc from the bridge's
gateway, not from 127.0.0.1, so Orthanc's host check cannot tell local callers apart: on
loopback the port itself is the barrier (host check off, the loader AE title registered);
with ``--listen`` the host check is on and no store-enabled AE title is registered.

Secret files are mode 644 inside the 700 folder: compose (outside swarm) mounts them with
the host's modes and the postgres image reads its password as its own user.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from converter.fileio import PRIVATE_FILE, atomic_write, private_dir

from server.errors import ServerError, SettingsError
from server.pacs.settings import LOOPBACK, ServerSettings, check_port, is_loopback, orthanc_config

ORTHANC_IMAGE = "orthancteam/orthanc:25.2.0"
ORTHANC_IMAGE_VERSION = "1.12.6"  # the Orthanc inside ORTHANC_IMAGE (PostgreSQL plugin 7.2)
POSTGRES_IMAGE = "postgres:16.6"
NGINX_IMAGE = "nginx:1.30.4-alpine"  # the stable branch; the upstream "resolve" needs >= 1.27.3
# The compose file's Orthanc services, in the order of their DICOM ports (dicom_ports).
ORTHANC_NODES = ("orthanc-1", "orthanc-2")
# docker/docker-compose.yml and docker/nginx.conf of the repository, shipped inside the
# package (symbolic links in the source tree, copies in a wheel), so that an installed
# package finds them too.
COMPOSE_TEMPLATE = Path(str(resources.files("server.pacs") / "resources" / "docker-compose.yml"))
NGINX_TEMPLATE = Path(str(resources.files("server.pacs") / "resources" / "nginx.conf"))
CONTAINER_HTTP_PORT = 8042  # fixed inside the containers; the compose file maps them
CONTAINER_DICOM_PORT = 4242
# Connections each node opens to PostgreSQL, all at start (the plugin's default is 50: two
# nodes would take all of PostgreSQL's 100). A transaction holds one only while it runs.
INDEX_CONNECTIONS_PER_NODE = 25
# Orthanc closes an idle HTTP keep-alive connection after this many seconds (its default is
# 1): nginx.conf's upstream keepalive_timeout (1 s) must stay below it.
KEEP_ALIVE_TIMEOUT = 2
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
        """The project's copy of the load balancer's configuration."""
        return self.root / "nginx.conf"

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


def docker_config(settings: ServerSettings, postgres_password: str) -> dict[str, Any]:
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
    if not local_only:  # callers keep their address: check it; no loader AE title at all
        settings = replace(settings, loader_aet="")
    config = orthanc_config(settings, ORTHANC_IMAGE_VERSION)
    config["DicomCheckModalityHost"] = not local_only
    config.update(
        {
            "HttpPort": CONTAINER_HTTP_PORT,
            "DicomPort": CONTAINER_DICOM_PORT,
            "RemoteAccessAllowed": True,
            "StorageDirectory": "/var/lib/orthanc/db",
            "KeepAliveTimeout": KEEP_ALIVE_TIMEOUT,
            "CheckRevisions": False,
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
    return (
        f"VINDR_HTTP_BIND={'0.0.0.0' if settings.remote_access else '127.0.0.1'}\n"
        f"VINDR_HTTP_PORT={settings.http_port}\n"
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


def prepare(settings: ServerSettings, template: Path = COMPOSE_TEMPLATE,
            nginx_template: Path = NGINX_TEMPLATE) -> DockerProject:
    """Write the compose project for ``settings`` into ``settings.data_dir``.

    The database password is generated on first use and kept afterwards (the database
    volume remembers it).

    Raises
    ------
    ServerError
        When the compose template or the nginx configuration is missing (an installed
        package without the repo).
    SettingsError
        When a node's DICOM port is out of range or on the HTTP port (:func:`check_ports`).
    """
    for needed in (template, nginx_template):
        if not needed.is_file():
            raise ServerError(f"{needed} missing: the vindr-dicom installation is incomplete")
    check_ports(settings)
    project = DockerProject(settings.data_dir)
    private_dir(project.root)
    for folder in ("storage", "postgres"):
        private_dir(project.root / folder)
    shutil.copyfile(template, project.compose_file)
    shutil.copyfile(nginx_template, project.nginx_config)
    if project.postgres_secret.is_file():
        password = project.postgres_secret.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        atomic_write(project.postgres_secret, password + "\n", mode=0o644)
    atomic_write(project.orthanc_secret, json.dumps(docker_config(settings, password), indent=2),
                 mode=0o644)
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
        return [(f"DICOM ports {ports} are published on {LOOPBACK} only; "
                 f"{settings.loader_aet or 'no'} store-enabled AE title")]
    return [(f"DICOM ports {ports} are published on {settings.listen}; each "
             "modality is accepted from its own address only, and no store-enabled AE title "
             "is registered (load over REST)")]
