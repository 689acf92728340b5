"""Which Orthanc build runs the PACS: Debian's own, or a newer one from a Debian 13 root.

An archive the size of VinDr-Mammo needs Orthanc >= 1.11 (``ExtraMainDicomTags``: without
it, filters on ImageLaterality, ViewPosition or PatientAge read every candidate file).
Debian 13 ships 1.12.7; Debian 12 ships 1.10.1. On Debian 12 we run Debian 13's Orthanc
from a minimal Debian 13 root built once from Debian's own archive with ``debootstrap``
(``make setup`` does it; about 40 s and 430 MB), without chroot and without root: the
binary is started through the root's own dynamic loader and libraries, so paths, ports,
users and signals stay the host's.

:func:`select` picks what ``serve`` runs: ``auto`` (default) takes the system Orthanc when
it is recent enough, else the Debian 13 root when built, else the system one with a note.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server.errors import ServerError
from server.pacs.layout import default_orthanc_root
from server.pacs.settings import EXTRA_MAIN_DICOM_TAGS_SINCE, ORTHANC_CHOICES, parse_version

CHOICES = ORTHANC_CHOICES

SYSTEM_BINARY = Path("/usr/sbin/Orthanc")
PLUGIN_SUBDIR = Path("usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
POSTGRESQL_PLUGIN = "libOrthancPostgreSQLIndex.so"
PYTHON_PLUGIN = "libOrthancPython.so"
INSTALL_HINT = "apt-get install -y --no-install-recommends orthanc orthanc-dicomweb orthanc-python"
ROOT_SUITE = "trixie"  # Debian 13
ROOT_PACKAGES = ("orthanc", "orthanc-dicomweb", "orthanc-postgresql", "orthanc-python")
ROOT_MIRROR = "http://deb.debian.org/debian"
ROOT_ENV_VAR = "VINDR_DICOM_ORTHANC_ROOT"
_LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib", "lib")
_LOADER = Path("usr/lib64/ld-linux-x86-64.so.2")


def default_root() -> Path:
    """Where the Debian 13 root lives: ``$VINDR_DICOM_ORTHANC_ROOT``, else
    :func:`server.pacs.layout.default_orthanc_root`."""
    if os.environ.get(ROOT_ENV_VAR):
        return Path(os.environ[ROOT_ENV_VAR]).expanduser()
    return default_orthanc_root()


@dataclass(frozen=True)
class Runtime:
    """An Orthanc build: how to start it and which plugins it has.

    Attributes
    ----------
    binary
        The Orthanc executable.
    version
        What ``Orthanc --version`` says.
    root
        The Debian root it runs from, None for the system's own Orthanc.
    note
        Why this one was chosen, for the user (empty when nothing to say).
    """

    binary: Path
    version: str
    root: Path | None = None
    note: str = field(default="", compare=False)

    @property
    def plugin_dir(self) -> Path:
        """Folder of its plugins."""
        return (self.root or Path("/")) / PLUGIN_SUBDIR

    @property
    def origin(self) -> str:
        """Where it comes from, in a few words."""
        if self.root is None:
            return f"the system's Orthanc ({self.binary})"
        return f"Debian 13's Orthanc from {self.root}"

    @property
    def indexes_extra_tags(self) -> bool:
        """True when it supports ``ExtraMainDicomTags``."""
        return parse_version(self.version) >= EXTRA_MAIN_DICOM_TAGS_SINCE

    def command(self, *args: str) -> list[str]:
        """The command line running Orthanc with ``args``."""
        return _command(self.binary, self.root, args)

    def environment(self) -> dict[str, str]:
        """Variables Orthanc needs on top of the caller's: for a root, DCMTK's dictionary and
        the home of the Python its Python plugin embeds, both inside the root."""
        if self.root is None:
            return {}
        return {"DCMDICTPATH": str(self.root / "usr/share/dcmtk/dicom.dic"),
                "PYTHONHOME": str(self.root / "usr")}

    def plugin(self, name: str, install_hint: str = INSTALL_HINT) -> Path:
        """The plugin library ``name``; raises ServerError with an install hint when missing."""
        path = self.plugin_dir / name
        if not path.exists():
            raise ServerError(f"Orthanc's plugin {path} is missing: {install_hint}")
        return path


def _command(binary: Path, root: Path | None, args: Sequence[str]) -> list[str]:
    if root is None:
        return [str(binary), *args]
    libs = ":".join(str(root / d) for d in _LIB_DIRS)
    return [str(root / _LOADER), "--library-path", libs, "--argv0", str(binary), str(binary),
            *args]


def _version(binary: Path, root: Path | None) -> str:
    env = {**os.environ}
    if root is not None:
        env["DCMDICTPATH"] = str(root / "usr/share/dcmtk/dicom.dic")
    try:
        out = subprocess.run(_command(binary, root, ["--version"]), capture_output=True,
                             text=True, timeout=30, check=False, env=env).stdout
    except OSError as exc:
        raise ServerError(f"cannot run {binary}: {exc}") from exc
    first = out.splitlines()[0].split() if out.strip() else []
    if not first:
        raise ServerError(f"{binary} --version printed nothing: is the build complete?")
    return first[-1]


def system_runtime(binary: Path = SYSTEM_BINARY) -> Runtime:
    """The system's Orthanc; raises ServerError with an install hint when missing."""
    if not binary.exists():
        raise ServerError(f"Orthanc is not installed ({binary} missing): {INSTALL_HINT}")
    return Runtime(binary=binary, version=_version(binary, None))


def root_runtime(root: Path | None = None) -> Runtime:
    """Debian 13's Orthanc from the root at ``root`` (:func:`default_root` when None).

    Raises
    ------
    ServerError
        When the root is not built, with the command that builds it.
    """
    root = Path(root or default_root()).expanduser().resolve()
    binary = root / "usr/sbin/Orthanc"
    if not binary.exists() or not (root / _LOADER).exists():
        raise ServerError(f"no Debian 13 Orthanc at {root}: build it with "
                          "`vindr-convert install-orthanc` (or `make setup`)")
    if not (root / PLUGIN_SUBDIR / PYTHON_PLUGIN).exists():
        raise ServerError(f"the Debian 13 root at {root} lacks Orthanc's Python plugin (made "
                          "by an older vindr-dicom): rebuild it with "
                          "`vindr-convert install-orthanc --force` (or `make setup`)")
    return Runtime(binary=binary, version=_version(binary, root), root=root)


def select(choice: str = "auto", root: Path | None = None) -> Runtime:
    """The Orthanc to run for ``choice`` (``auto``, ``system`` or ``debian13``).

    ``auto``: the system's when it has ``ExtraMainDicomTags`` (>= 1.11), else the Debian 13
    root when built, else the system's with a note saying what that costs and how to get the
    newer one.
    """
    if choice not in CHOICES:
        raise ServerError(f"Orthanc {choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "debian13":
        return root_runtime(root)
    system: Runtime | None = None
    try:
        system = system_runtime()
    except ServerError:
        if choice == "system":
            raise
    if choice == "system" or (system is not None and system.indexes_extra_tags):
        assert system is not None
        return system
    try:
        chosen = root_runtime(root)
    except ServerError as exc:
        if system is None:
            raise ServerError(f"no usable Orthanc: {INSTALL_HINT}; or {exc}") from exc
        return _with_note(system, f"Orthanc {system.version} is too old to index the tags "
                          "the archive is queried on (ExtraMainDicomTags needs 1.11); "
                          "`vindr-convert install-orthanc` gets Debian 13's 1.12")
    if system is None:
        return _with_note(chosen, f"no system Orthanc: using {chosen.origin}")
    return _with_note(chosen, f"using {chosen.origin}: the system's Orthanc {system.version} "
                      "cannot index ImageLaterality, ViewPosition or PatientAge "
                      "(--orthanc system to use it anyway)")


def _with_note(runtime: Runtime, note: str) -> Runtime:
    return Runtime(runtime.binary, runtime.version, runtime.root, note)


def build_root(root: Path | None = None, *, mirror: str = ROOT_MIRROR,
               packages: Sequence[str] = ROOT_PACKAGES) -> Runtime:
    """Build the Debian 13 root with ``debootstrap --variant=minbase`` (about 40 s, 430 MB).

    Needs root privileges (through sudo when not root) and debootstrap. Built in a
    temporary folder beside ``root``, renamed when complete: an interrupted build leaves
    no half root behind.

    Raises
    ------
    ServerError
        No debootstrap, or debootstrap failing (with the end of its log).
    """
    root = Path(root or default_root()).expanduser().resolve()
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if debootstrap is None:
        raise ServerError("debootstrap is missing: apt-get install -y debootstrap")
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo"]
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        subprocess.run([*sudo, "rm", "-rf", str(partial)], check=False)
    command = [*sudo, debootstrap, "--variant=minbase", f"--include={','.join(packages)}",
               ROOT_SUITE, str(partial), mirror]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ServerError(f"debootstrap failed (exit {done.returncode}):\n{tail}")
    if root.exists():
        subprocess.run([*sudo, "rm", "-rf", str(root)], check=True)
    subprocess.run([*sudo, "mv", str(partial), str(root)], check=True)
    return root_runtime(root)
