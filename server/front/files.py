"""The front door's files in a data folder: nginx's configuration and Orthanc's plugin code.

:func:`prepare` writes, for one PACS (``DATA/front/``, :class:`server.pacs.layout.DataLayout`):

- ``plugin/vindr_front/``: a copy of :mod:`server.front.plugin` (what Orthanc runs in
  process), ``plugin/start.py`` (the script Orthanc's Python plugin starts), and
  ``plugin/settings.json`` (the admin's name, every account's role, the hosts served, the
  front's key) beside ``plugin/dictionary.json`` (pydicom's DICOM dictionary);
- ``nginx.conf`` (:mod:`server.front.nginx`);
- ``app-config.js``, OHIF's configuration (:mod:`server.front.viewer`).

The front's key (what nginx adds to each request, so that Orthanc knows it came through the
door and was logged) is new at every start; nothing outside the data folder knows it.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from converter.fileio import PRIVATE_FILE, atomic_write

from server.front import nginx
from server.front.plugin.dictionary import Dictionary
from server.pacs.layout import DataLayout

PLUGIN_PACKAGE = "vindr_front"
PLUGIN_MODULES = ("__init__.py", "dictionary.py", "policy.py", "qido.py", "in_orthanc.py")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class PluginPaths:
    """Where Orthanc finds the plugin's files (its own view: a container mounts them
    elsewhere than the host has them)."""

    folder: Path

    @property
    def script(self) -> Path:
        """``PythonScript``."""
        return self.folder / "start.py"

    @property
    def settings(self) -> Path:
        """The settings the plugin reads."""
        return self.folder / "settings.json"

    @property
    def dictionary(self) -> Path:
        """The DICOM dictionary the plugin reads."""
        return self.folder / "dictionary.json"


def served_hosts(extra: Sequence[str] = (), remote: bool = False) -> tuple[str, ...]:
    """The names and addresses a client may put in ``Host``: loopback's, ``extra``, and, for
    a PACS reached from other machines (``remote``), this machine's name and addresses."""
    hosts = list(LOOPBACK_NAMES) + [h.lower() for h in extra]
    if remote:
        names = {socket.gethostname(), socket.getfqdn()}
        hosts += sorted(n.lower() for n in names if n)
        for name in names:
            try:
                hosts += sorted({str(info[4][0]) for info in socket.getaddrinfo(name, None)})
            except OSError:
                pass
    return tuple(dict.fromkeys(hosts))


def pydicom_dictionary() -> Dictionary:
    """pydicom's data dictionary, for the in-Orthanc code (which has no pydicom)."""
    from pydicom.datadict import DicomDictionary

    return Dictionary({entry[4]: (tag, entry[0]) for tag, entry in DicomDictionary.items()
                       if entry[4]})


def new_front_key() -> str:
    """A fresh key for ``X-Vindr-Front``."""
    return secrets.token_urlsafe(32)


def write_plugin(folder: Path, *, admin: str, roles: Mapping[str, str], hosts: Sequence[str],
                 front_key: str, seen_as: Path | None = None) -> PluginPaths:
    """Copy the plugin's code into ``folder`` with its settings and dictionary (mode 600).

    ``seen_as`` is where Orthanc will see ``folder`` (a container's mount point); the
    written paths are those. Returns the paths as Orthanc sees them.
    """
    here = PluginPaths(Path(folder))
    there = PluginPaths(Path(seen_as) if seen_as is not None else Path(folder))
    here.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    here.folder.chmod(0o700)
    package = here.folder / PLUGIN_PACKAGE
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True, mode=0o700)
    source = resources.files("server.front.plugin")
    for name in PLUGIN_MODULES:
        atomic_write(package / name, (source / name).read_bytes(), mode=PRIVATE_FILE,
                     fsync=False)
    pydicom_dictionary().dump(here.dictionary)
    here.dictionary.chmod(PRIVATE_FILE)
    settings = {"admin": admin, "roles": dict(sorted(roles.items())), "hosts": list(hosts),
                "front_key": front_key, "dictionary": str(there.dictionary)}
    atomic_write(here.settings, json.dumps(settings, indent=2) + "\n", mode=PRIVATE_FILE,
                 fsync=False)
    script = ("# Written by `vindr-convert serve`: Orthanc's Python plugin runs it at start.\n"
              "import sys\n"
              f"sys.path.insert(0, {str(there.folder)!r})\n"
              f"from {PLUGIN_PACKAGE} import in_orthanc\n"
              f"in_orthanc.register({str(there.settings)!r})\n")
    atomic_write(here.script, script, mode=PRIVATE_FILE, fsync=False)
    return there


def native_front(layout: DataLayout, *, listen: Sequence[str], hosts: Sequence[str],
                 nodes: Sequence[str], front_key: str) -> nginx.FrontConfig:
    """The front of a native PACS: nginx on the host, its files in the data folder."""
    return nginx.FrontConfig(
        listen=tuple(listen), hosts=tuple(hosts), nodes=tuple(nodes), front_key=front_key,
        pid=layout.front_pid, error_log=layout.front_error_log, audit_log=layout.audit_log,
        temp=layout.front_tmp, viewer=layout.viewer, app_config=layout.app_config)


def write_front_config(layout: DataLayout, config: nginx.FrontConfig) -> Path:
    """Write nginx's configuration (mode 600) and make its temporary folder."""
    layout.front_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    return atomic_write(layout.front_config, nginx.render(config), mode=PRIVATE_FILE,
                        fsync=False)
