"""The native PACS as a whole: its index, its Orthanc node(s) and the gateway in front.

``serve`` runs, in one data folder:

- with ``index="postgresql"``, a private PostgreSQL server (:mod:`server.postgres`) in
  ``DATA/postgresql``, on a free loopback port;
- ``nodes`` Orthanc processes (:mod:`server.native`), node ``i`` on ``http_port + i`` and
  ``dicom_port + i``, all on the same storage folder and index (several writers on one
  PostgreSQL database: Orthanc >= 1.9.2, plugin >= 4.0, ``Lock`` off);
- the gateway (:mod:`server.gateway`) on ``web_port``: DICOMweb with searches answered from
  the index, requests spread over the nodes and past a node that is down.

:func:`start` starts them in that order and stops what it started when one fails;
:func:`stop` stops them all, from any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.pacs import orthanc as native

from server.pacs import postgres
from server.client import Connection
from server.errors import ServerError
from server.front.gateway import GatewaySettings, start_detached, stop_detached
from server.pacs.runtime import Runtime
from server.pacs.settings import ServerSettings

# Connections each node keeps to PostgreSQL (the server admits 100, server.postgres).
INDEX_CONNECTIONS_PER_NODE = 8


def postgres_folder(data_dir: Path) -> Path:
    """Where the PostgreSQL index of a data folder lives."""
    return Path(data_dir) / "postgresql"


def gateway_pid_file(data_dir: Path) -> Path:
    """The pid file of a detached gateway."""
    return Path(data_dir) / "gateway.pid"


@dataclass
class Cluster:
    """A started PACS: the nodes and the PostgreSQL server (or None); the gateway, when
    started, is a detached process with its pid file in the data folder."""

    settings: ServerSettings
    nodes: list[native.NativeServer]
    postgres: postgres.PostgresServer | None = None

    @property
    def first(self) -> native.NativeServer:
        """Node 1: its REST API is the PACS's for ``load`` and ``verify``."""
        return self.nodes[0]

    def stop(self) -> None:
        """Stop the gateway, the nodes, then the index."""
        stop_detached(gateway_pid_file(self.settings.data_dir))
        for node in self.nodes:
            node.stop()
        if self.postgres is not None:
            postgres.stop(postgres_folder(self.settings.data_dir))


def gateway_settings(settings: ServerSettings) -> GatewaySettings:
    """The gateway in front of every node of ``settings``."""
    creds = settings.credentials
    urls = settings.node_urls
    return GatewaySettings(None, Connection(urls[0], creds.username, creds.password),
                           port=settings.web_port, more_upstreams=urls[1:])


def start(settings: ServerSettings, runtime: Runtime | None = None,
          gateway: bool = True) -> Cluster:
    """Start the index (PostgreSQL), the nodes and (``gateway`` and ``web_port``) a
    detached gateway; each waits until ready.

    Raises
    ------
    ServerError
        When a part cannot start; what was started is stopped again.
    """
    for node in range(settings.nodes):
        pid = native.running_pid(settings.data_dir, node)
        if pid is not None:
            raise ServerError(f"an Orthanc already runs on {settings.data_dir} (node "
                              f"{node + 1}, pid {pid}): stop it first")
    cluster = Cluster(settings, [])
    try:
        index = None
        if settings.index == "postgresql":
            folder = postgres_folder(settings.data_dir)
            native.make_private(settings.data_dir)
            if folder.is_dir():
                postgres.stop(folder)  # a server left by a killed `serve`: start afresh
            cluster.postgres = postgres.start(folder, native.free_port())
            index = postgres.orthanc_section(cluster.postgres, INDEX_CONNECTIONS_PER_NODE)
        for node in range(settings.nodes):
            cluster.nodes.append(native.start(settings.node(node), runtime=runtime, node=node,
                                              index=index))
            runtime = cluster.nodes[0].runtime  # every node runs the same build
        if gateway and settings.web_port:
            layout = native.Layout(settings.data_dir)
            start_detached(gateway_settings(settings), gateway_pid_file(settings.data_dir),
                           layout.logs / "gateway.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def stop(data_dir: Path) -> bool:
    """Stop everything ``serve`` started on ``data_dir``; False when nothing ran."""
    data_dir = Path(data_dir).expanduser().resolve()
    gateway = stop_detached(gateway_pid_file(data_dir))
    nodes = native.stop(data_dir)
    index = postgres.stop(postgres_folder(data_dir)) if postgres_folder(data_dir).is_dir() \
        else False
    return gateway or nodes or index
