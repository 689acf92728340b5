"""Start and stop the PACS on the chosen engine, and remember where it runs.

The CLI's ``serve`` and ``stop`` are thin wrappers around :func:`make_settings`,
:func:`serve` and :func:`stop`; the credentials and the server's whereabouts go to the
per-user file (:mod:`server.userconfig`) so that ``load`` and ``verify`` find them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.pacs import supervisor as cluster

from server.pacs import docker
from server.errors import ServerError
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
)
from server.userconfig import (
    config_path,
    default_data_dir,
    ensure_credentials,
    load_user_config,
    remember_server,
)


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
    )


def _info(settings: ServerSettings, version: str, pid: int | None,
          runtime_note: str = "") -> ServerInfo:
    notes = (docker.exposure_notes(settings) if settings.engine == "docker"
             else exposure_notes(settings, version) + index_notes(version))
    if runtime_note:
        notes = [runtime_note, *notes]
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
        web_url=settings.web_url if settings.engine == "native" else None,
        node_urls=settings.node_urls if settings.engine == "native" else (settings.url,),
        index=settings.index if settings.engine == "native" else "postgresql",
    )


def _remember(settings: ServerSettings) -> None:
    native_engine = settings.engine == "native"
    remember_server(
        url=settings.url,
        aet=settings.aet,
        dicom_port=settings.dicom_port,
        engine=settings.engine,
        data_dir=str(settings.data_dir),
        nodes=list(settings.node_urls) if native_engine else [settings.url],
        web_url=settings.web_url if native_engine else None,
    )


def serve(
    settings: ServerSettings,
    *,
    background: bool = False,
    on_ready: Callable[[ServerInfo], None] | None = None,
) -> int:
    """Start the PACS; in the foreground, run it until Ctrl-C/SIGTERM.

    Returns
    -------
    int
        0 on a clean start (background) or a requested stop (foreground), else the
        engine's exit code.

    Raises
    ------
    ServerError
        When the engine cannot start (missing software, busy port, ...).
    """
    if settings.engine == "docker":
        project = docker.prepare(settings)
        _remember(settings)
        if not background:  # compose runs attached from here on: say where it will be
            if on_ready is not None:
                on_ready(_info(settings, docker.ORTHANC_IMAGE, None))
            return docker.up(project, background=False)
        code = docker.up(project, background=True)  # returns once the health checks pass
        if code == 0 and on_ready is not None:
            on_ready(_info(settings, docker.ORTHANC_IMAGE, None))
        return code
    started = cluster.start(settings)
    _remember(settings)
    first = started.first
    if on_ready is not None:
        on_ready(_info(settings, first.system.version, first.pid, first.runtime.note))
    if background:
        return 0
    return _run_until_stopped(started)


def _run_until_stopped(started: cluster.Cluster) -> int:
    """Wait until Ctrl-C or SIGTERM (0) or until a node exits by itself (its code); then
    stop everything."""

    class _Stop(Exception):
        pass

    def _raise(signum: int, frame: object) -> None:
        raise _Stop()

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for node in started.nodes:
                code = node.process.poll()
                if code is not None:
                    return code
            time.sleep(0.2)
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        started.stop()


def stop(data_dir: Path | None = None, engine: str | None = None) -> bool:
    """Stop the PACS on ``data_dir`` (default: the one ``serve`` last started).

    ``engine`` defaults to what the folder holds (a compose project or a native server).

    Returns
    -------
    bool
        False when nothing was running there.
    """
    stored = load_user_config()
    if data_dir is None:
        if stored is None or not stored.data_dir:
            raise ServerError(f"no server recorded in {config_path()}: pass --data")
        data_dir = Path(stored.data_dir)
    if engine is None:
        engine = (
            "docker"
            if docker.DockerProject(Path(data_dir).resolve()).compose_file.is_file()
            else "native"
        )
    if engine == "docker":
        return docker.stop(data_dir)
    return cluster.stop(data_dir)
