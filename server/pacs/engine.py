"""Start and stop the PACS on the chosen engine, and remember where it runs.

The CLI's ``serve``, ``stop`` and ``status`` are thin wrappers around :func:`make_settings`,
:func:`serve`, :func:`stop` and :func:`status`; the admin's credentials and the PACS's
whereabouts go to the per-user file (:mod:`server.userconfig`) so that ``load``, ``verify``
and the other commands find them.

Natively, ``serve`` runs a supervisor (:mod:`server.pacs.supervisor`): in the foreground in
this process, or with ``background`` as a detached process that outlives the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from converter.fileio import PRIVATE_FILE, atomic_write

from server.errors import ServerError
from server.pacs import docker, processes, supervisor
from server.pacs.layout import DataLayout, default_data_dir
from server.pacs.settings import (
    DEFAULT_AET,
    DEFAULT_DICOM_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_WEB_PORT,
    LOOPBACK,
    Modality,
    ServerSettings,
    exposure_notes,
    index_notes,
    settings_to_json,
)
from server.userconfig import (
    config_path,
    ensure_credentials,
    load_user_config,
    remember_server,
)

READY_TIMEOUT = 180.0  # initdb, the nodes and the front, on a slow machine


@dataclass(frozen=True)
class ServerInfo:
    """What a user needs to reach a started PACS (printed by ``serve``)."""

    engine: str
    url: str
    dicomweb_url: str
    aet: str
    dicom_port: int
    username: str
    credentials_file: Path
    data_dir: Path
    version: str
    pid: int | None = None
    notes: tuple[str, ...] = ()
    web_url: str | None = None
    node_urls: tuple[str, ...] = ()
    index: str = "sqlite"
    remote: bool = False
    audit_log: Path | None = None


def make_settings(
    data_dir: Path | None = None,
    *,
    http_port: int = DEFAULT_HTTP_PORT,
    dicom_port: int = DEFAULT_DICOM_PORT,
    aet: str = DEFAULT_AET,
    modalities: Sequence[str] = (),
    remote_access: bool = False,
    engine: str = "native",
    listen: str = LOOPBACK,
    orthanc: str = "auto",
    index: str = "sqlite",
    nodes: int = 1,
    web_port: int = DEFAULT_WEB_PORT,
    hostnames: Sequence[str] = (),
    notes: list[str] | None = None,
) -> ServerSettings:
    """Settings from command-line values, with the per-user credentials (made on first use).

    Modality host names are resolved to their IP address (Orthanc checks the caller's IP);
    a line per resolved name is appended to ``notes`` when given.

    Raises
    ------
    SettingsError
        On a bad port, AE title, modality (``AET@HOST:PORT``), unresolvable host, listen
        address or engine, or a modality beyond loopback without ``listen``.
    """
    resolved = [Modality.parse(m).resolved() for m in modalities]
    if notes is not None:
        notes.extend(note for _, note in resolved if note)
    return ServerSettings(
        data_dir=Path(data_dir) if data_dir else default_data_dir(),
        credentials=ensure_credentials(),
        http_port=http_port,
        dicom_port=dicom_port,
        aet=aet,
        modalities=tuple(modality for modality, _ in resolved),
        remote_access=remote_access,
        engine=engine,  # type: ignore[arg-type]
        listen=listen,
        orthanc=orthanc,
        index=index,
        nodes=nodes,
        web_port=web_port,
        hostnames=tuple(hostnames),
    )


def _info(settings: ServerSettings, version: str, pid: int | None,
          runtime_note: str = "") -> ServerInfo:
    notes = (docker.exposure_notes(settings) if settings.engine == "docker"
             else exposure_notes(settings, version) + index_notes(version))
    if runtime_note:
        notes = [runtime_note, *notes]
    native = settings.engine == "native"
    return ServerInfo(
        engine=settings.engine,
        url=settings.url,
        dicomweb_url=settings.dicomweb_url,
        aet=settings.aet,
        dicom_port=settings.dicom_port,
        username=settings.credentials.username,
        credentials_file=config_path(),
        data_dir=settings.data_dir,
        version=version,
        pid=pid,
        notes=tuple(notes),
        web_url=settings.web_url,
        node_urls=settings.node_urls if native else (settings.url,),
        index=settings.index if native else "postgresql",
        remote=settings.remote_access,
        audit_log=DataLayout.of(settings.data_dir).audit_log,
    )


def remember(settings: ServerSettings) -> None:
    """Record in the per-user file where the PACS of ``settings`` runs."""
    native = settings.engine == "native"
    remember_server(
        url=settings.url,
        aet=settings.aet,
        dicom_port=settings.dicom_port,
        engine=settings.engine,
        data_dir=str(settings.data_dir),
        nodes=list(settings.node_urls) if native else [settings.url],
        web_url=settings.web_url,
    )


def serve(
    settings: ServerSettings,
    *,
    background: bool = False,
    on_ready: Callable[[ServerInfo], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Start the PACS; in the foreground, supervise it until Ctrl-C/SIGTERM.

    Returns
    -------
    int
        0 on a clean start (background) or a requested stop (foreground), else non-zero
        (a part that kept dying, the engine's exit code).

    Raises
    ------
    ServerError
        When the engine cannot start (missing software, busy port, ...).
    """
    if settings.engine == "docker":
        project = docker.prepare(settings)
        remember(settings)
        if not background:  # compose runs attached from here on: say where it will be
            if on_ready is not None:
                on_ready(_info(settings, docker.ORTHANC_IMAGE, None))
            return docker.up(project, background=False)
        code = docker.up(project, background=True)  # returns once the health checks pass
        if code == 0 and on_ready is not None:
            on_ready(_info(settings, docker.ORTHANC_IMAGE, None))
        return code
    if background:
        info = start_background(settings)
        remember(settings)
        if on_ready is not None:
            on_ready(info)
        return 0

    def ready(sup: supervisor.Supervisor) -> None:
        remember(settings)
        if on_ready is not None:
            on_ready(_info(settings, sup.runtime.version, os.getpid(), sup.runtime.note))

    return supervisor.run(settings, on_ready=ready, say=say)


def start_background(settings: ServerSettings, timeout: float = READY_TIMEOUT) -> ServerInfo:
    """Start a detached supervisor for ``settings`` and wait until the PACS is up.

    Its settings (the admin's password among them) reach it through
    ``DATA/run/settings.json`` (mode 600), never its command line or environment.

    Raises
    ------
    ServerError
        When it does not come up (with the end of its log).
    """
    layout = DataLayout.of(settings.data_dir)
    running = processes.recorded(layout.supervisor_pid)
    if running is not None:
        raise ServerError(f"a PACS already runs on {layout.root} (supervisor pid {running}): "
                          "`vindr-convert stop` it first")
    processes.make_private(layout.root)
    processes.make_private(layout.run)
    processes.make_private(layout.logs)
    atomic_write(layout.serve_settings, json.dumps(settings_to_json(settings)),
                 mode=PRIVATE_FILE)
    layout.status.unlink(missing_ok=True)
    console = layout.logs / "supervisor-console.log"
    sink = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "server.pacs.supervisor", str(layout.root)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True, cwd="/")
    finally:
        os.close(sink)
    deadline = time.monotonic() + timeout
    while True:
        code = child.poll()
        state = _state(layout)
        if code is not None:
            raise ServerError(f"the PACS did not start (its supervisor exited with code "
                              f"{code}){processes.log_tail(console)}")
        if state.get("state") == supervisor.UP:
            return _info(settings, str(state.get("version", "")), child.pid,
                         str(state.get("runtime_note", "")))
        if time.monotonic() > deadline:
            processes.stop_pid(child.pid, 30.0)
            raise ServerError(f"the PACS was not up within {timeout:.0f} s"
                              f"{processes.log_tail(layout.supervisor_log)}")
        time.sleep(0.1)


def _state(layout: DataLayout) -> dict:
    try:
        return json.loads(layout.status.read_text())
    except (OSError, ValueError):
        return {}


def stored_data_dir(data_dir: Path | None = None) -> Path:
    """``data_dir``, or the one the per-user file records (ServerError when none)."""
    if data_dir is not None:
        return Path(data_dir)
    stored = load_user_config()
    if stored is None or not stored.data_dir:
        raise ServerError(f"no server recorded in {config_path()}: pass --data")
    return Path(stored.data_dir)


def stop(data_dir: Path | None = None, engine: str | None = None) -> bool:
    """Stop the PACS on ``data_dir`` (default: the one ``serve`` last started).

    ``engine`` defaults to what the folder holds (a compose project or a native PACS).

    Returns
    -------
    bool
        False when nothing was running there.
    """
    data_dir = stored_data_dir(data_dir)
    if engine is None:
        engine = ("docker" if docker.DockerProject(Path(data_dir).resolve()).compose_file.is_file()
                  else "native")
    if engine == "docker":
        return docker.stop(data_dir)
    return supervisor.stop(data_dir)


def status(data_dir: Path | None = None) -> supervisor.Health:
    """The native PACS of ``data_dir`` (default: the last one served), part by part."""
    return supervisor.health(stored_data_dir(data_dir))
