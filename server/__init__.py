"""The PACS side of vindr-dicom, in three subpackages for its three jobs.

- :mod:`server.pacs`: running the PACS. One settings object (``settings``) -> Orthanc's
  configuration; which Orthanc build (``runtime``); the folders and files of a data folder
  (``layout``); starting, watching and stopping processes (``processes``); an Orthanc node
  (``orthanc``), its PostgreSQL index (``postgres``), the accounts (``accounts``), the
  supervisor that runs them all and restarts what dies (``supervisor``), docker compose
  (``docker``), and ``engine`` (serve/stop on either engine).
- :mod:`server.front`: its HTTP front door. nginx in front of every node (``nginx``: accounts
  checked by Orthanc, an allow-list of DICOMweb resources, the audit log), the code that runs
  inside Orthanc (``plugin``: the per-account request filter and QIDO-RS from the index), and
  the OHIF viewer's files (``viewer``).
- :mod:`server.transfer`: moving data in and checking it: ``load`` (send the converter's
  manifest), ``integrity`` (is a PACS copy the manifest's file) and ``verify`` (fetch over
  DICOMweb and compare with the release).

:mod:`server.client` (REST and DICOMweb clients), :mod:`server.userconfig` (the per-user
credentials file) and :mod:`server.errors` serve all three. It uses the converter library;
the converter never uses it.

The public names below are loaded on first use, so importing one module (the command
line's option defaults from :mod:`server.pacs.settings`, say) does not load the HTTP and
DICOM client libraries.
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
    "LoadError": "transfer.load",
    "LoadResult": "transfer.load",
    "Credentials": "pacs.settings",
    "Modality": "pacs.settings",
    "ServerSettings": "pacs.settings",
    "orthanc_config": "pacs.settings",
    "StudyObjects": "transfer.verify",
    "VerifyResult": "transfer.verify",
    "fetch_studies": "transfer.verify",
    "fetch_study": "transfer.verify",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'server' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = sorted(_EXPORTS)
