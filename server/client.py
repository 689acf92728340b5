"""A small REST client for Orthanc around an injected :class:`requests.Session`.

The session carries authentication and keep-alive; the client only knows Orthanc's routes:
``/system``, ``/plugins``, ``POST /instances``, ``POST /tools/find``, and per instance its
stored file, the file's size and MD5 (``/attachments/dicom/info``) and ``DELETE``. The DICOMweb side
goes through :func:`dicomweb_client` (the ``dicomweb-client`` library), on a session of the
same :class:`Connection`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient

from server.errors import ServerError
from server.pacs.settings import DICOMWEB_ROOT, parse_version

DEFAULT_TIMEOUT = 300.0
# Studies per /tools/find request: one UID list match ("uid1\uid2...") asks for many.
FIND_BATCH = 100


@dataclass(frozen=True)
class Connection:
    """Where a PACS is and who we are to it."""

    url: str
    username: str | None = None
    password: str | None = None

    def session(self) -> requests.Session:
        """A new keep-alive session authenticated as this connection's user."""
        session = requests.Session()
        if self.username is not None:
            session.auth = (self.username, self.password or "")
        return session

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, username={self.username!r})"


@dataclass(frozen=True)
class SystemInfo:
    """What ``GET /system`` and ``GET /plugins`` tell about a running Orthanc."""

    version: str
    api_version: int
    name: str
    dicom_aet: str
    dicom_port: int
    http_port: int
    plugins: tuple[str, ...]

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """The version as numbers, e.g. ``(1, 10, 1)``."""
        return parse_version(self.version)

    @property
    def has_dicomweb(self) -> bool:
        """True when the DICOMweb plugin is loaded."""
        return "dicom-web" in self.plugins


@dataclass(frozen=True)
class StoreAnswer:
    """Orthanc's answer to one ``POST /instances``: ``Success`` or ``AlreadyStored``."""

    status: str
    orthanc_id: str

    @property
    def already_stored(self) -> bool:
        """True when the instance was in Orthanc before this request."""
        return self.status == "AlreadyStored"


@dataclass(frozen=True)
class HeldInstance:
    """An instance Orthanc holds: its Orthanc ID and the size of its stored file."""

    orthanc_id: str
    file_size: int


@dataclass(frozen=True)
class AttachmentInfo:
    """Size and MD5 of an instance's stored DICOM file (``md5`` None when not recorded)."""

    size: int
    md5: str | None


class OrthancError(ServerError):
    """An HTTP request to Orthanc failed (``status`` is None when no answer came)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OrthancClient:
    """Orthanc's REST API, over an injected session.

    Parameters
    ----------
    session
        A :class:`requests.Session` carrying authentication (see :meth:`Connection.session`).
    url
        Orthanc's base URL, e.g. ``http://127.0.0.1:8042``.
    timeout
        Seconds to wait for each answer.
    """

    def __init__(self, session: requests.Session, url: str, timeout: float = DEFAULT_TIMEOUT):
        self.session = session
        self.url = url.rstrip("/")
        self.timeout = timeout

    @classmethod
    def connect(cls, connection: Connection, timeout: float = DEFAULT_TIMEOUT) -> OrthancClient:
        """A client on a new session for ``connection``."""
        return cls(connection.session(), connection.url, timeout)

    def _request(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self.url + route, timeout=self.timeout, **kwargs
            )
        except requests.ConnectionError as exc:
            raise OrthancError(f"cannot connect to Orthanc at {self.url} (is it running?)") from exc
        except requests.RequestException as exc:
            raise OrthancError(f"{method} {self.url}{route}: {exc}") from exc
        if response.status_code == 401:
            raise OrthancError(
                f"{method} {self.url}{route}: 401 Unauthorized (wrong or missing credentials)", 401
            )
        if not response.ok:
            detail = response.text.strip().replace("\n", " ")[:300]
            raise OrthancError(
                f"{method} {self.url}{route}: HTTP {response.status_code} {detail}",
                response.status_code,
            )
        return response

    def system(self) -> SystemInfo:
        """Version, AE title, ports and plugins of the server."""
        info = self._request("GET", "/system").json()
        plugins = self._request("GET", "/plugins").json()
        return SystemInfo(
            version=str(info.get("Version", "")),
            api_version=int(info.get("ApiVersion", 0)),
            name=str(info.get("Name", "")),
            dicom_aet=str(info.get("DicomAet", "")),
            dicom_port=int(info.get("DicomPort", 0)),
            http_port=int(info.get("HttpPort", 0)),
            plugins=tuple(plugins),
        )

    def store_instance(self, data: bytes) -> StoreAnswer:
        """``POST /instances`` one DICOM file; raises :class:`OrthancError` on failure."""
        answer = self._request(
            "POST", "/instances", data=data, headers={"Content-Type": "application/dicom"}
        ).json()
        status = answer.get("Status", "")
        if status not in ("Success", "AlreadyStored"):
            raise OrthancError(f"POST /instances: unexpected answer {answer}")
        return StoreAnswer(status=status, orthanc_id=str(answer.get("ID", "")))

    def find(
        self, level: str, query: Mapping[str, str], *, expand: bool = True,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``POST /tools/find`` at ``level`` (Patient, Study, Series, Instance).

        Values follow C-FIND matching: ``*`` wildcards and ``\\``-separated UID lists work
        here (unlike QIDO query strings on Debian's builds).
        """
        body: dict[str, Any] = {"Level": level, "Query": dict(query), "Expand": expand}
        if limit is not None:
            body["Limit"] = limit
        return list(self._request("POST", "/tools/find", json=body).json())

    def study_uid_of_series(self, series: Mapping[str, Any]) -> str | None:
        """The StudyInstanceUID of an expanded ``/tools/find`` series answer."""
        parent = series.get("ParentStudy")
        if not parent:
            return None
        study = self._request("GET", f"/studies/{parent}").json()
        return study.get("MainDicomTags", {}).get("StudyInstanceUID")

    def instance_index(self, study_uids: Iterable[str]) -> dict[str, HeldInstance]:
        """SOP Instance UID -> :class:`HeldInstance` of every instance under ``study_uids``.

        Asks ``FIND_BATCH`` studies per ``/tools/find`` request with a UID list match; the
        expanded answers carry each instance's Orthanc ID and stored file size.
        """
        uids = sorted(set(study_uids))
        found: dict[str, HeldInstance] = {}
        for start in range(0, len(uids), FIND_BATCH):
            query = {"StudyInstanceUID": "\\".join(uids[start : start + FIND_BATCH])}
            for instance in self.find("Instance", query):
                sop = instance.get("MainDicomTags", {}).get("SOPInstanceUID")
                if sop:
                    found[sop] = HeldInstance(str(instance["ID"]), int(instance.get("FileSize", -1)))
        return found

    def sop_instance_uids(self, study_uids: Iterable[str]) -> set[str]:
        """SOP Instance UIDs stored in Orthanc under any of ``study_uids``."""
        return set(self.instance_index(study_uids))

    def attachment_info(self, orthanc_id: str) -> AttachmentInfo:
        """Size and MD5 of the stored file (``/attachments/dicom/info``, Orthanc >= 1.9)."""
        info = self._request("GET", f"/instances/{orthanc_id}/attachments/dicom/info").json()
        md5 = info.get("UncompressedMD5") or None
        return AttachmentInfo(size=int(info.get("UncompressedSize", -1)), md5=md5)

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file, byte for byte (``GET /instances/{id}/file``)."""
        return self._request("GET", f"/instances/{orthanc_id}/file").content

    def put_modality(self, name: str, entry: Mapping[str, Any]) -> None:
        """``PUT /modalities/{name}``: Orthanc knows a DICOM node (until it restarts)."""
        self._request("PUT", f"/modalities/{name}", json=dict(entry))

    def delete_modality(self, name: str) -> None:
        """``DELETE /modalities/{name}``."""
        self._request("DELETE", f"/modalities/{name}")

    def delete_instance(self, orthanc_id: str) -> None:
        """``DELETE /instances/{id}``."""
        self._request("DELETE", f"/instances/{orthanc_id}")


def dicomweb_client(
    connection: Connection, session: requests.Session | None = None
) -> DICOMwebClient:
    """A ``dicomweb-client`` client on ``connection``'s DICOMweb root.

    ``session`` defaults to a new :meth:`Connection.session` (authenticated, keep-alive).

    Debian's Orthanc does not URL-decode query arguments: give QIDO filters exact values of
    letters, digits, dots and hyphens only, and ``fields`` as a list (sent as repeated
    ``includefield``), never a comma-joined string.
    """
    return DICOMwebClient(
        url=connection.url.rstrip("/") + DICOMWEB_ROOT.rstrip("/"),
        session=session if session is not None else connection.session(),
    )
