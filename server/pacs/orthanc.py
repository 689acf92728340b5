"""One Orthanc node of the native PACS (see :mod:`server.pacs.runtime` for which build).

Never the system service nor ``/etc/orthanc``: each node of a data folder has its own
configuration, temporary folder, logs (:class:`server.pacs.layout.NodeFiles`), all on the
data folder's one storage. Every node loads three plugins, listed one by one: DICOMweb,
Python (the front's request filter and index-backed QIDO-RS, :mod:`server.front.plugin`)
and, on a PostgreSQL index, the PostgreSQL index plugin.

:func:`write_config` writes a node's configuration; :func:`start` starts it as a part of the
PACS (:mod:`server.pacs.processes`: the supervisor's child, never root) and waits until
``GET /system`` answers with the admin's credentials.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from converter.fileio import PRIVATE_FILE, atomic_write

from server.client import Connection, OrthancClient, OrthancError, SystemInfo
from server.errors import ServerError
from server.front.files import PluginPaths
from server.pacs import processes
from server.pacs.layout import DataLayout
from server.pacs.runtime import DICOMWEB_PLUGIN, POSTGRESQL_PLUGIN, PYTHON_PLUGIN, Runtime
from server.pacs.settings import ServerSettings, orthanc_config

POSTGRESQL_HINT = "apt-get install -y --no-install-recommends orthanc-postgresql"
PYTHON_HINT = "apt-get install -y --no-install-recommends orthanc-python"
READY_TIMEOUT = 60.0


def node_config(settings: ServerSettings, version: str, plugins: Sequence[Path],
                plugin: PluginPaths, node: int = 0, index: dict[str, Any] | None = None,
                accounts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """:func:`orthanc_config` plus this engine's layout, plugins (listed one by one) and the
    front's script; with ``index`` (the PostgreSQL plugin's section), a node of a cluster.

    ``settings`` are the node's (:meth:`ServerSettings.node`); ``accounts`` the other
    accounts' passwords by name.
    """
    layout = DataLayout.of(settings.data_dir)
    files = layout.node(node)
    config = orthanc_config(settings, version, accounts)
    config.update({
        "StorageDirectory": str(layout.storage),
        "IndexDirectory": str(layout.storage),
        "TemporaryDirectory": str(files.tmp),
        "Plugins": [str(p) for p in plugins],
        "PythonScript": str(plugin.script),
        "PythonVerbose": False,
    })
    if index is not None:
        config["PostgreSQL"] = index
        # Each node of a shared index needs its own identity (Orthanc's jobs, changes).
        config["DatabaseServerIdentifier"] = f"{settings.name}-node-{node + 1}"
    return config


def plugins_of(runtime: Runtime, postgresql: bool) -> list[Path]:
    """The plugin libraries a node loads (ServerError with an install hint when one is
    missing)."""
    plugins = [runtime.plugin(DICOMWEB_PLUGIN), runtime.plugin(PYTHON_PLUGIN, PYTHON_HINT)]
    if postgresql:
        plugins.append(runtime.plugin(POSTGRESQL_PLUGIN, POSTGRESQL_HINT))
    return plugins


def write_config(settings: ServerSettings, runtime: Runtime, plugin: PluginPaths,
                 account: processes.Account, node: int = 0,
                 index: dict[str, Any] | None = None,
                 accounts: Mapping[str, str] | None = None) -> Path:
    """Create node ``node``'s folders (private, ``account``'s) and write its configuration
    (mode 600)."""
    layout = DataLayout.of(settings.data_dir)
    files = layout.node(node)
    for folder in (files.home, layout.storage, files.tmp, files.logs):
        processes.make_private(folder, account)
    plugins = plugins_of(runtime, index is not None)
    config = node_config(settings, runtime.version, plugins, plugin, node, index, accounts)
    atomic_write(files.config, json.dumps(config, indent=2), mode=PRIVATE_FILE)
    processes.give(files.config, account)
    return files.config


def environment(runtime: Runtime) -> dict[str, str]:
    """Orthanc's environment: ours, with DCMTK's ``TCP_NODELAY=1`` and what ``runtime``
    needs (a Debian 13 root's DCMTK dictionary and Python).

    Debian's DCMTK leaves Nagle's algorithm on unless ``TCP_NODELAY`` is set, so each DIMSE
    exchange waited for a delayed ACK: a C-ECHO or C-FIND association took 0.11 s; with it,
    0.01-0.02 s (measured with pynetdicom, BENCHMARKS.md).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(runtime.environment())
    env["TCP_NODELAY"] = "1"
    return env


def start(settings: ServerSettings, runtime: Runtime, account: processes.Account,
          node: int = 0, timeout: float = READY_TIMEOUT) -> processes.Process:
    """Start node ``node`` (its configuration written beforehand) and wait until it
    answers ``GET /system``.

    Raises
    ------
    ServerError
        A port already in use, or Orthanc exiting or not answering in time (with the end
        of its log).
    """
    files = DataLayout.of(settings.data_dir).node(node)
    for port, what in ((settings.http_port, "HTTP"), (settings.dicom_port, "DICOM")):
        if processes.port_in_use(port):
            raise ServerError(f"{what} port {port} of node {node + 1} is already in use: "
                              "choose another one")
    process = processes.start(
        runtime.command(f"--logdir={files.logs}", str(files.config)),
        name=f"Orthanc node {node + 1}", log=files.console, env=environment(runtime),
        account=account, cwd=files.home)
    atomic_write(files.pid_file, f"{process.pid}\n", mode=PRIVATE_FILE, fsync=False)
    client = OrthancClient.connect(admin_connection(settings), 2.0)

    def ready() -> bool:
        try:
            client.system()
        except OrthancError as exc:
            if exc.status is not None:
                raise ServerError(f"Orthanc node {node + 1} answered {exc} at start"
                                  f"{processes.log_tail(files.console)}") from exc
            return False
        return True

    try:
        processes.wait_until(ready, process, timeout)
    except BaseException:
        process.stop(5.0)
        raise
    return process


def admin_connection(settings: ServerSettings) -> Connection:
    """The admin's connection to the node of ``settings``."""
    creds = settings.credentials
    return Connection(settings.url, creds.username, creds.password)


def system(settings: ServerSettings, timeout: float = 10.0) -> SystemInfo:
    """``GET /system`` and ``/plugins`` of the node of ``settings``, as the admin."""
    return OrthancClient.connect(admin_connection(settings), timeout).system()


def wait_answering(settings: ServerSettings, timeout: float) -> bool:
    """True once the node of ``settings`` answers ``GET /system`` within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            system(settings, 2.0)
            return True
        except OrthancError:
            time.sleep(0.1)
    return False
