"""One settings object for the PACS, and the Orthanc configuration it stands for.

:class:`ServerSettings` holds what a user chooses (ports, AE titles, modalities, remote
access, credentials, engine); :func:`orthanc_config` turns it into the Orthanc JSON
configuration shared by every engine. The engines (:mod:`server.native`,
:mod:`server.docker`) add only their own file-system layout and plugin loading.

Every value here has a reason, written down in ``shared/reference/orthanc.md``: in short,
Orthanc's defaults either lose data silently (storage limits), match nothing silently
(``StorageAccessOnFind``), or open access (``DicomAlwaysAllowStore``, remote access without
users).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

from server.errors import SettingsError

Engine = Literal["native", "docker"]
ENGINES: tuple[str, ...] = ("native", "docker")
# Which Orthanc build the native engine runs (server.runtime.select).
ORTHANC_CHOICES: tuple[str, ...] = ("auto", "system", "debian13")
# Orthanc's index: its own SQLite file, or a private PostgreSQL server (server.postgres),
# needed for several nodes.
INDEXES: tuple[str, ...] = ("sqlite", "postgresql")

DEFAULT_HTTP_PORT = 8042
DEFAULT_DICOM_PORT = 4242
DEFAULT_WEB_PORT = 8050  # the front door: DICOMweb (searches from the index) and the viewer
DEFAULT_AET = "VINDR"
# What `load --method cstore` calls from: a prefix and a random part, registered on the
# nodes only while that load runs (server.transfer.load), so no other local user can store.
LOADER_AET_PREFIX = "VL-"
# Orthanc closes an idle HTTP keep-alive connection after this many seconds (its default
# is 1); the front closes its own idle connections to the nodes after 1 s (front/nginx.py).
KEEP_ALIVE_TIMEOUT = 2
DEFAULT_USERNAME = "vindr"
DICOMWEB_ROOT = "/dicom-web/"
LOOPBACK = "127.0.0.1"
ANY_ADDRESS = "0.0.0.0"

# Tags we filter on, or that QIDO-RS returns by default (PS3.18 Table 6.7.1-2/2a), that
# Orthanc does not keep in its index by default; from Orthanc 1.11 on ExtraMainDicomTags
# makes them index-backed, so that no query of the archive reads a DICOM file (1.10
# ignores the key). Justified one by one in shared/reference/orthanc.md.
EXTRA_MAIN_DICOM_TAGS: dict[str, list[str]] = {
    "Patient": [],
    "Study": ["PatientAge"],
    "Series": [],
    "Instance": ["ImageLaterality", "ViewPosition", "SOPClassUID", "Rows", "Columns",
                 "BitsAllocated"],
}
EXTRA_MAIN_DICOM_TAGS_SINCE = (1, 11)

_AET = re.compile(r"^[A-Za-z0-9._-]{1,16}$")


def check_aet(aet: str, what: str = "AE title") -> str:
    """Return ``aet`` if it is a usable AE title (1-16 of ``A-Z a-z 0-9 . _ -``).

    Raises
    ------
    ValueError
        Naming ``what`` and the bad value.
    """
    if not _AET.match(aet):
        raise SettingsError(f"{what} {aet!r}: use 1 to 16 characters among A-Z a-z 0-9 . _ -")
    return aet


def check_port(port: int, what: str = "port") -> int:
    """Return ``port`` if it is a TCP port number (1..65535); raises ValueError otherwise."""
    if not 0 < int(port) < 65536:
        raise SettingsError(f"{what} {port!r}: must be between 1 and 65535")
    return int(port)


def is_ip(text: str) -> bool:
    """True when ``text`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (False for names and other addresses)."""
    return is_ip(address) and ipaddress.ip_address(address).is_loopback


def resolve_host(host: str) -> str:
    """``host`` as the IP address Orthanc will see (itself when already an address).

    Orthanc's host check (``DicomCheckModalityHost``) compares the peer's IP with the
    configured Host as strings, so a name must be turned into its address beforehand.

    Raises
    ------
    SettingsError
        When the name does not resolve.
    """
    if is_ip(host):
        return host
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise SettingsError(f"modality host {host!r} does not resolve ({exc}): give its IP "
                            "address") from exc
    return str(infos[0][4][0])


def parse_version(version: str) -> tuple[int, ...]:
    """``"1.10.1"`` -> ``(1, 10, 1)``; ``"mainline"`` (a development build) -> ``(999,)``."""
    numbers = re.findall(r"\d+", version)
    if version.strip().lower() == "mainline" or not numbers:
        return (999,)
    return tuple(int(n) for n in numbers)


@dataclass(frozen=True)
class Modality:
    """A remote DICOM node Orthanc knows, with what it may ask of Orthanc.

    Parameters
    ----------
    aet, host, port
        Its AE title and where Orthanc reaches it (C-MOVE destination).
    allow_echo, allow_find, allow_get, allow_move, allow_store
        The DICOM services this AE title may request from Orthanc.
    """

    aet: str
    host: str
    port: int
    allow_echo: bool = True
    allow_find: bool = True
    allow_get: bool = True
    allow_move: bool = True
    allow_store: bool = False

    def __post_init__(self) -> None:
        check_aet(self.aet, "modality AE title")
        check_port(self.port, f"port of modality {self.aet}")
        if not self.host:
            raise SettingsError(f"modality {self.aet}: empty host")

    @classmethod
    def parse(cls, text: str) -> Modality:
        """Parse ``AET@HOST:PORT`` (IPv6 hosts in brackets: ``AET@[::1]:104``).

        Raises
        ------
        ValueError
            When ``text`` is not of that form.
        """
        aet, at, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon and aet and host and port.isdigit()):
            raise SettingsError(f"modality {text!r}: expected AET@HOST:PORT, e.g. VIEWER@10.0.0.5:104")
        return cls(aet=aet, host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"

    def resolved(self) -> tuple[Modality, str | None]:
        """This modality with its host name replaced by its IP address, and a note saying so
        (None when the host was already an address)."""
        address = resolve_host(self.host)
        if address == self.host:
            return self, None
        note = (f"modality {self.aet}: host {self.host} resolved to {address}; Orthanc accepts "
                f"{self.aet} only from {address} (serve again if that address changes)")
        return replace(self, host=address), note

    def orthanc_entry(self) -> dict[str, Any]:
        """The object form of a ``DicomModalities`` entry, with per-service flags."""
        return {
            "AET": self.aet,
            "Host": self.host,
            "Port": self.port,
            "AllowEcho": self.allow_echo,
            "AllowFind": self.allow_find,
            "AllowGet": self.allow_get,
            "AllowMove": self.allow_move,
            "AllowStore": self.allow_store,
            "AllowStorageCommitment": False,
        }


@dataclass(frozen=True)
class Credentials:
    """HTTP basic-auth credentials of the one Orthanc user we register."""

    username: str
    password: str

    def __post_init__(self) -> None:
        if not self.username or ":" in self.username:
            raise SettingsError(f"username {self.username!r}: must be non-empty, without ':'")
        if not self.password:
            raise SettingsError("password must not be empty")

    @classmethod
    def generate(cls, username: str = DEFAULT_USERNAME) -> Credentials:
        """New credentials with a random 32-character URL-safe password."""
        return cls(username=username, password=secrets.token_urlsafe(24))

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class ServerSettings:
    """Everything a user chooses about the PACS.

    Parameters
    ----------
    data_dir
        Where the engine keeps its configuration, storage, logs and pid file.
    credentials
        The registered HTTP user (see :mod:`server.userconfig` for where it is kept).
    http_port, dicom_port, aet
        Orthanc's REST/DICOMweb port, DICOM port and AE title.
    modalities
        Remote DICOM nodes allowed to echo, find, get and move (C-MOVE destinations too),
        each accepted only from its own IP address (hosts must be addresses: see
        :meth:`Modality.resolved`).
    remote_access
        Serve the front door (DICOMweb, the viewer) beyond the loopback interface; Orthanc's
        own port (the admin's REST API) stays on loopback.
    listen
        Where DICOM peers may be: ``127.0.0.1`` (default: this machine only), an address of
        this machine or ``0.0.0.0``. Modalities beyond loopback need a non-loopback value.
        The docker engine publishes the DICOM port on it; Debian's Orthanc cannot bind its
        DICOM port to one address (see :func:`exposure_notes`).
    engine
        ``native`` (Debian's Orthanc) or ``docker`` (``docker/docker-compose.yml``).
    sync_storage
        fsync every stored file (``SyncStorageArea``); off only for a bulk load that is
        verified afterwards.
    name
        Orthanc's display name.
    orthanc
        Which Orthanc build the native engine runs: ``auto`` (the system's when >= 1.11,
        else Debian 13's from its root), ``system`` or ``debian13`` (:mod:`server.runtime`).
    index
        ``sqlite`` (Orthanc's own file) or ``postgresql`` (a private PostgreSQL server in
        the data folder, :mod:`server.postgres`).
    nodes
        Orthanc processes sharing the index and the storage (more than one needs
        ``postgresql``); node ``i`` (from 0) listens on ``http_port + i`` and
        ``dicom_port + i``.
    web_port
        The front door's port (:mod:`server.front`): DICOMweb with searches answered from
        the index, and the viewer, for every account; loopback unless ``remote_access``.
    hostnames
        Host names clients use for the front besides loopback's (and, with
        ``remote_access``, this machine's): any other ``Host`` is refused.
    """

    data_dir: Path
    credentials: Credentials
    http_port: int = DEFAULT_HTTP_PORT
    dicom_port: int = DEFAULT_DICOM_PORT
    aet: str = DEFAULT_AET
    modalities: tuple[Modality, ...] = ()
    remote_access: bool = False
    engine: Engine = "native"
    sync_storage: bool = True
    name: str = "vindr-dicom"
    listen: str = LOOPBACK
    orthanc: str = "auto"
    index: str = "sqlite"
    nodes: int = 1
    web_port: int = DEFAULT_WEB_PORT
    hostnames: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        object.__setattr__(self, "modalities", tuple(self.modalities))
        check_port(self.http_port, "HTTP port")
        check_port(self.dicom_port, "DICOM port")
        if self.http_port == self.dicom_port:
            raise SettingsError(f"HTTP and DICOM ports must differ (both {self.http_port})")
        check_aet(self.aet, "server AE title")
        if self.engine not in ENGINES:
            raise SettingsError(f"engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.index not in INDEXES:
            raise SettingsError(f"index {self.index!r}: choose one of {', '.join(INDEXES)}")
        if self.nodes < 1 or (self.nodes > 1 and self.index != "postgresql"):
            raise SettingsError(f"{self.nodes} nodes: give 1, or more with --index postgresql "
                                "(nodes share one PostgreSQL index)")
        object.__setattr__(self, "hostnames", tuple(h.lower() for h in self.hostnames))
        ports = [p for i in range(self.nodes) for p in self.node_ports(i)]
        check_port(self.web_port, "front door port")
        ports.append(self.web_port)
        if len(set(ports)) != len(ports) or max(ports) > 65535:
            raise SettingsError(f"ports clash: HTTP {self.http_port}.., DICOM "
                                f"{self.dicom_port}.. (one each per node), front door "
                                f"{self.web_port}: choose ports further apart")
        if self.orthanc not in ORTHANC_CHOICES:
            raise SettingsError(f"Orthanc build {self.orthanc!r}: choose one of "
                                f"{', '.join(ORTHANC_CHOICES)}")
        seen = {self.aet.upper()}
        for aet in [m.aet for m in self.modalities]:
            if aet.upper() in seen:
                raise SettingsError(f"AE title {aet} is used twice (server and modalities)")
            seen.add(aet.upper())
        self._check_addresses()

    def _check_addresses(self) -> None:
        """Modality hosts are IP addresses, reachable given ``listen``."""
        if not is_ip(self.listen):
            raise SettingsError(f"listen address {self.listen!r}: give an IP address "
                                f"({LOOPBACK}, {ANY_ADDRESS} or one of this machine's)")
        for modality in self.modalities:
            if not is_ip(modality.host):
                raise SettingsError(f"modality {modality}: the host must be an IP address "
                                    "(Orthanc compares it with the caller's address)")
            if is_loopback(self.listen) and not is_loopback(modality.host):
                raise SettingsError(
                    f"modality {modality} is not on this machine, but DICOM is kept to "
                    f"loopback: add --listen {ANY_ADDRESS} (or this machine's address) to "
                    "expose the DICOM port on purpose")

    def node_ports(self, node: int) -> tuple[int, int]:
        """(HTTP port, DICOM port) of node ``node`` (from 0)."""
        return self.http_port + node, self.dicom_port + node

    def node(self, node: int) -> ServerSettings:
        """These settings as node ``node`` (from 0) sees them: its own ports."""
        http, dicom = self.node_ports(node)
        return replace(self, http_port=http, dicom_port=dicom, nodes=1)

    @property
    def node_urls(self) -> tuple[str, ...]:
        """The REST base URL of every node."""
        return tuple(f"http://127.0.0.1:{self.node_ports(i)[0]}" for i in range(self.nodes))

    @property
    def web_url(self) -> str:
        """The front door's base URL, as reached from this machine."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def url(self) -> str:
        """The REST base URL, as reached from this machine."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root URL, as reached from this machine."""
        return self.url + DICOMWEB_ROOT.rstrip("/")


def settings_to_json(settings: ServerSettings) -> dict[str, Any]:
    """``settings`` as JSON-ready data (the password included: keep it private)."""
    data = {name: getattr(settings, name) for name in ServerSettings.__dataclass_fields__}
    data["data_dir"] = str(settings.data_dir)
    data["credentials"] = {"username": settings.credentials.username,
                           "password": settings.credentials.password}
    data["modalities"] = [asdict(m) for m in settings.modalities]
    data["hostnames"] = list(settings.hostnames)
    return data


def settings_from_json(data: Mapping[str, Any]) -> ServerSettings:
    """The settings :func:`settings_to_json` wrote (SettingsError when they are not)."""
    try:
        fields = dict(data)
        fields["credentials"] = Credentials(**fields["credentials"])
        fields["modalities"] = tuple(Modality(**m) for m in fields.get("modalities", ()))
        fields["hostnames"] = tuple(fields.get("hostnames", ()))
        known = {k: v for k, v in fields.items() if k in ServerSettings.__dataclass_fields__}
        return ServerSettings(**known)
    except (KeyError, TypeError) as exc:
        raise SettingsError(f"not a saved set of server settings: {exc}") from exc


def orthanc_config(settings: ServerSettings, version: str,
                   accounts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The engine-independent Orthanc configuration for ``settings``.

    Parameters
    ----------
    settings
        The user's choices.
    version
        The Orthanc version that will read it (as ``GET /system`` or ``--version`` tell);
        keys newer versions need are added only for them.
    accounts
        The other accounts' passwords by name (:mod:`server.pacs.accounts`): Orthanc checks
        them all; what each may do is the front's filter's business.

    Returns
    -------
    dict
        JSON-ready configuration; engines add storage paths, plugins and remote access.
    """
    config: dict[str, Any] = {
        "Name": settings.name,
        "HttpPort": settings.http_port,
        "DicomPort": settings.dicom_port,
        "DicomAet": settings.aet,
        "DicomServerEnabled": True,
        "HttpServerEnabled": True,
        # the admin's port: this machine only (127.0.0.1); --remote opens the front door
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {**dict(accounts or {}),
                            settings.credentials.username: settings.credentials.password},
        "KeepAlive": True,
        "KeepAliveTimeout": KEEP_ALIVE_TIMEOUT,
        # Storage: no limit (a limit silently deletes the oldest patients), no compression
        # (ingest drops tenfold), idempotent re-sends.
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        "StorageCompression": False,
        "SyncStorageArea": settings.sync_storage,
        "OverwriteInstances": False,
        "StorageAccessOnFind": "Always",
        "SaveJobs": False,
        "WebDavEnabled": False,
        "DefaultEncoding": "Utf8",
        # DICOM access: only listed AE titles, each with its own services.
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        # Every AE title is accepted only from its configured Host, compared as a string
        # with the peer's IP: hosts are resolved to addresses beforehand (Modality.resolved).
        # No AE title may store: `load --method cstore` registers a random one for its run.
        "DicomCheckModalityHost": True,
        "DicomModalities": {m.aet: m.orthanc_entry() for m in settings.modalities},
        "DicomWeb": {
            "Enable": True,
            "Root": DICOMWEB_ROOT,
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
            # DICOMweb >= 1.15 computes each stable series' WADO-RS metadata in the
            # background and stores it as an attachment: CPU that grows with the archive
            # and kept a 5,000-exam server busy long after its load (orthanc.md).
            "EnableMetadataCache": False,
        },
    }
    if parse_version(version) >= EXTRA_MAIN_DICOM_TAGS_SINCE:
        config["ExtraMainDicomTags"] = {k: list(v) for k, v in EXTRA_MAIN_DICOM_TAGS.items()}
    return config


def exposure_notes(settings: ServerSettings, version: str) -> list[str]:
    """What the network can reach of a native Orthanc ``version`` on ``settings``, for users.

    Neither Debian 12's Orthanc 1.10.1 (its configuration keys) nor Orthanc's sources up to
    mid-2024 (1.12.4) have an option binding the DICOM or HTTP port to one address: both
    listen on every interface. HTTP answers only 127.0.0.1
    unless ``remote_access`` (``RemoteAccessAllowed``); DICOM refuses every association whose
    calling AE title and IP address are not a registered pair (``DicomCheckModalityHost``).
    """
    if is_loopback(settings.listen):
        reach = f"only from this machine ({LOOPBACK}, for local tools)"
    else:
        reach = f"from {settings.listen} as asked (--listen), for the modalities listed"
    listed = ", ".join(str(m) for m in settings.modalities) or "none"
    return [
        f"DICOM: Orthanc {version} cannot bind its DICOM port to one address; port "
        f"{settings.dicom_port} accepts connections on every interface, and Orthanc refuses "
        f"any association whose calling AE title and IP are not registered ({listed}): "
        f"{reach}; no AE title may store, but the random one `load --method cstore` "
        "registers for its own run",
    ]


def index_notes(version: str) -> list[str]:
    """What the index of Orthanc ``version`` cannot answer by itself, with its measured cost."""
    try:
        too_old = parse_version(version) < EXTRA_MAIN_DICOM_TAGS_SINCE
    except ValueError:  # e.g. the docker image's tag: a recent Orthanc
        return []
    if not too_old:
        return []
    return [f"index: Orthanc {version} cannot index ImageLaterality, ViewPosition or "
            "PatientAge (ExtraMainDicomTags needs 1.11): filters on them read every candidate "
            "file, about 2 ms an image (47 s over the 20,000 images of 5,000 exams), and study "
            "or series lists over DICOMweb cost 8-61 x the index (BENCHMARKS.md)"]
