"""The viewer: OHIF's static build, served by the front door after a login.

OHIF (``@ohif/app``, a ready static build in its npm package) talks DICOMweb from the
browser. The front (:mod:`server.front.nginx`) serves its files on the same origin as the
DICOMweb it reads, so it needs no CORS, and asks Orthanc for the account first (the browser's
HTTP Basic prompt): the viewer shows only what that account may see, and every image it
fetches is in the audit log. This module fetches the build (:func:`install_ohif`), gives
OHIF our configuration (:func:`app_config`: the front's DICOMweb as its one data source, the
mammography hanging protocol, the box labels) and links the build into a data folder
(:func:`enable`); no process of its own runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from converter.fileio import atomic_write

from server.client import Connection
from server.errors import ServerError
from server.pacs.layout import DataLayout
from server.pacs.layout import default_ohif_dir as _default_ohif_dir

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
# Parts of the build we do not use: onnxruntime (136 MB, segmentation AI) and the
# microscopy viewer.
OHIF_DROPPED = ("ort", "dicom-microscopy-viewer")
MAMMO_PROTOCOL = "vindr-mammo-4up"  # the hanging protocol of ohif-app-config.js

log = logging.getLogger(__name__)


# --- the OHIF build ---------------------------------------------------------------------------


def default_ohif_dir(version: str = OHIF_VERSION) -> Path:
    """Where ``install_ohif`` puts the build (:func:`server.pacs.layout.default_ohif_dir`)."""
    return _default_ohif_dir(version)


def ohif_installed(dest: Path) -> bool:
    """True when ``dest`` holds an unpacked OHIF build."""
    return (dest / "index.html").is_file() and (dest / "app-config.js").is_file()


def install_ohif(dest: Path | None = None, version: str = OHIF_VERSION) -> Path:
    """Fetch ``@ohif/app@version`` with ``npm pack`` and unpack its ``dist/`` into ``dest``.

    The package's integrity is checked by npm. Nothing is built and nothing of OHIF is
    committed to this project. Returns ``dest``; a complete build already there is kept.

    Raises
    ------
    ServerError
        When npm is missing or the package cannot be fetched or unpacked.
    """
    dest = Path(dest) if dest else default_ohif_dir(version)
    if ohif_installed(dest):
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise ServerError("npm not found: install Debian's npm package (apt-get install npm) "
                          "to fetch the OHIF viewer")
    with tempfile.TemporaryDirectory(prefix="vindr-ohif-") as tmp:
        proc = subprocess.run([npm, "pack", f"{OHIF_PACKAGE}@{version}", "--silent"],
                              cwd=tmp, capture_output=True, text=True, check=False)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise ServerError(f"npm pack {OHIF_PACKAGE}@{version} failed: "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        staging = Path(tmp) / "dist"
        _unpack_dist(tarballs[0], staging)
        if not (staging / "index.html").is_file():
            raise ServerError(f"{OHIF_PACKAGE}@{version} has no dist/index.html")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staging), dest)
    return dest


def _unpack_dist(tarball: Path, staging: Path) -> None:
    """``package/dist/**`` of the npm tarball into ``staging``, without the dropped parts."""
    prefix = "package/dist/"
    with tarfile.open(tarball) as archive:
        members = []
        for member in archive.getmembers():
            if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                continue
            rel = member.name[len(prefix):]
            if not rel or rel.split("/")[0] in OHIF_DROPPED:
                continue
            if rel.startswith("/") or ".." in rel.split("/"):
                raise ServerError(f"{tarball.name}: unsafe path {member.name!r}")
            member.name = rel
            members.append(member)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12
            archive.extractall(staging, members=members, filter="data")
        else:  # members are plain files and folders inside staging, checked above
            archive.extractall(staging, members=members)


# --- configuration ------------------------------------------------------------------------


def app_config() -> str:
    """OHIF's ``app-config.js`` (``server/front/resources/ohif-app-config.js``): the front's
    DICOMweb (same origin) as its one data source, the mammography hanging protocol, the box
    labels."""
    template = resources.files("server.front") / "resources" / "ohif-app-config.js"
    return template.read_text(encoding="utf-8")


def write_app_config(data_dir: Path) -> Path:
    """Write OHIF's configuration where the front serves it (mode 600, like everything in
    the data folder: the front runs as its owner)."""
    layout = DataLayout.of(data_dir)
    path = atomic_write(layout.app_config, app_config(), mode=0o600, fsync=False)
    _owned_like_the_folder(path, layout.root)
    return path


def _owned_like_the_folder(path: Path, root: Path) -> None:
    """Give ``path`` to the data folder's owner (the account the front runs as) when we
    are root and it is another."""
    owner = root.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def enable(data_dir: Path, ohif_dir: Path) -> Path:
    """Have the front of ``data_dir`` serve the OHIF build in ``ohif_dir`` (a link); the
    front serves it at once, no restart."""
    if not ohif_installed(ohif_dir):
        raise ServerError(f"no OHIF build in {ohif_dir}: run `vindr-convert view --install` "
                          "(needs npm)")
    layout = DataLayout.of(data_dir)
    if not layout.front.is_dir():
        raise ServerError(f"{data_dir} holds no PACS front: start it with `vindr-convert serve`")
    write_app_config(data_dir)
    link = layout.viewer
    tmp = link.with_name(".ohif.new")
    tmp.unlink(missing_ok=True)
    os.symlink(Path(ohif_dir).resolve(), tmp)
    _owned_like_the_folder(tmp, layout.root)
    os.replace(tmp, link)
    return link


def disable(data_dir: Path) -> bool:
    """Stop serving the viewer from ``data_dir``'s front; False when it did not."""
    link = DataLayout.of(data_dir).viewer
    if not link.is_symlink():
        return False
    link.unlink()
    return True


def exam_urls(front_url: str, connection: Connection) -> tuple[str, str | None]:
    """(study list URL, URL of one annotated exam or None) on the viewer at ``front_url``;
    ``connection`` is the admin's (Orthanc's own port).

    The annotated exam is found through Orthanc's index (``/tools/find``, a SEG series:
    only annotated images have one), which stays fast on a whole archive.
    """
    from server.client import OrthancClient, OrthancError

    study_list = front_url + "/"
    client = OrthancClient.connect(connection, timeout=30)
    try:
        found = client.find("Series", {"Modality": "SEG"}, expand=True, limit=1)
        study = client.study_uid_of_series(found[0]) if found else None
    except OrthancError as exc:
        log.info("no annotated exam found: %s", exc)
        return study_list, None
    if not study:
        return study_list, None
    return study_list, (f"{front_url}/viewer?StudyInstanceUIDs={study}"
                        f"&hangingprotocolId={MAMMO_PROTOCOL}")
