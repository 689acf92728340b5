"""The PACS side of vindr-dicom: run Orthanc, load a converted folder into it, verify it.

Modules follow the data flow: :mod:`server.settings` (one settings object -> Orthanc
configuration), :mod:`server.userconfig` (per-user credentials file),
:mod:`server.native` / :mod:`server.docker` (the two engines), :mod:`server.engine`
(start/stop on either), :mod:`server.client` (REST client), :mod:`server.load` (send +
check the objects of the converter's manifest, :mod:`converter.manifest`) and
:mod:`server.verify` (fetch over DICOMweb + compare). It uses the converter library; the
converter never uses it.

The public names below are loaded on first use, so importing one module (the command
line's option defaults from :mod:`server.settings`, say) does not load the HTTP and DICOM
client libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Connection": "client",
    "OrthancClient": "client",
    "OrthancError": "client",
    "SystemInfo": "client",
    "dicomweb_client": "client",
    "ServerError": "errors",
    "LoadError": "load",
    "LoadResult": "load",
    "Credentials": "settings",
    "Modality": "settings",
    "ServerSettings": "settings",
    "orthanc_config": "settings",
    "StudyObjects": "verify",
    "VerifyResult": "verify",
    "fetch_studies": "verify",
    "fetch_study": "verify",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'server' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = sorted(_EXPORTS)
