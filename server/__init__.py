"""The PACS side of vindr-dicom: run Orthanc, load a converted folder into it, verify it.

Modules follow the data flow: :mod:`server.settings` (one settings object -> Orthanc
configuration), :mod:`server.userconfig` (per-user credentials file),
:mod:`server.native` / :mod:`server.docker` (the two engines), :mod:`server.engine`
(start/stop on either), :mod:`server.client` (REST client), :mod:`server.load` (send +
check the objects of the converter's manifest, :mod:`converter.manifest`),
:mod:`server.verify` (fetch over DICOMweb + compare), :mod:`server.demo` (the whole chain)
and :mod:`server.commands` (CLI).
"""

from .client import Connection, OrthancClient, OrthancError, SystemInfo, dicomweb_client
from .errors import ServerError
from .load import LoadError, LoadResult, load
from .settings import Credentials, Modality, ServerSettings, orthanc_config
from .verify import StudyObjects, VerifyResult, fetch_studies, fetch_study, verify

__all__ = [
    "Connection",
    "Credentials",
    "LoadError",
    "LoadResult",
    "Modality",
    "OrthancClient",
    "OrthancError",
    "ServerError",
    "ServerSettings",
    "StudyObjects",
    "SystemInfo",
    "VerifyResult",
    "dicomweb_client",
    "fetch_study",
    "fetch_studies",
    "load",
    "orthanc_config",
    "verify",
]
