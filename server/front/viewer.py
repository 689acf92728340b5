"""The viewer: OHIF's static build served on loopback by the gateway (:mod:`server.gateway`).

OHIF (``@ohif/app``, a ready static build in its npm package) talks DICOMweb from the
browser. Served from the same origin as the gateway's DICOMweb, it needs no CORS and never
sees the PACS credentials; its searches are answered from Orthanc's index. This module
fetches the build (:func:`install_ohif`), writes its configuration (:func:`app_config`: the
gateway as its one data source, our mammography hanging protocol and box labels) and runs
the gateway with it in the foreground or as a background process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from server.client import Connection
from server.errors import ServerError
from server.front.gateway import Gateway, GatewaySettings, serve_forever, spawn, start_gateway, terminate

__all__ = [
    "Gateway",
    "GatewaySettings",
    "viewer_settings",
    "app_config",
    "exam_urls",
    "install_ohif",
    "start_background",
    "start_gateway",
    "stop_background",
]

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
# Parts of the build we do not use: onnxruntime (136 MB, segmentation AI) and the
# microscopy viewer.
OHIF_DROPPED = ("ort", "dicom-microscopy-viewer")
MAMMO_PROTOCOL = "vindr-mammo-4up"  # the hanging protocol of ohif-app-config.js

log = logging.getLogger(__name__)


# --- the OHIF build ---------------------------------------------------------------------------


def default_ohif_dir(version: str = OHIF_VERSION) -> Path:
    """Where ``install_ohif`` puts the build: ``$XDG_DATA_HOME/vindr-dicom/ohif/<version>``."""
    from server.userconfig import data_home

    return data_home() / "ohif" / version


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


def viewer_settings(ohif_dir: Path, upstream: Connection, host: str = "127.0.0.1",
                    port: int = 3000) -> GatewaySettings:
    """The gateway serving OHIF's build in ``ohif_dir`` with our configuration."""
    return GatewaySettings(ohif_dir, upstream, host, port, app_config=app_config().encode())


def app_config() -> str:
    """OHIF's ``app-config.js`` (``server/resources/ohif-app-config.js``): the gateway as its
    one data source, the mammography hanging protocol, the box labels."""
    template = resources.files("server.front") / "resources" / "ohif-app-config.js"
    return template.read_text(encoding="utf-8")


# --- running it -------------------------------------------------------------------------------

STATE_FILE = "viewer.json"


def state_path() -> Path:
    """Where a background viewer records its pid and URL: beside the per-user server file
    (``$VINDR_DICOM_CONFIG`` moves both)."""
    from server.userconfig import config_path

    return config_path().with_name(STATE_FILE)


def exam_urls(gateway_url: str, connection: Connection) -> tuple[str, str | None]:
    """(study list URL, URL of one annotated exam or None) on the viewer at ``gateway_url``.

    The annotated exam is found through Orthanc's index (``/tools/find``, a SEG series:
    only annotated images have one), which stays fast on a whole archive.
    """
    from server.client import OrthancClient, OrthancError

    study_list = gateway_url + "/"
    client = OrthancClient.connect(connection, timeout=30)
    try:
        found = client.find("Series", {"Modality": "SEG"}, expand=True, limit=1)
        study = client.study_uid_of_series(found[0]) if found else None
    except OrthancError as exc:
        log.info("no annotated exam found: %s", exc)
        return study_list, None
    if not study:
        return study_list, None
    return study_list, (f"{gateway_url}/viewer?StudyInstanceUIDs={study}"
                        f"&hangingprotocolId={MAMMO_PROTOCOL}")


def serve_foreground(settings: GatewaySettings,
                     on_ready: Callable[[Gateway], None] | None = None) -> int:
    """Run the viewer until Ctrl-C or SIGTERM; returns 0 on such a stop."""
    return serve_forever(settings, on_ready)


def start_background(settings: GatewaySettings) -> tuple[int, str]:
    """Start the viewer as a detached process; (pid, URL) once it answers.

    The PACS credentials reach the child through its environment, never its command line.
    """
    stop_background()
    if not ohif_installed(settings.ohif_dir):
        raise ServerError(f"no OHIF build in {settings.ohif_dir}: run "
                          "`vindr-convert view --install` (needs npm)")
    env = dict(os.environ, VINDR_VIEWER_USER=settings.upstream.username or "",
               VINDR_VIEWER_PASSWORD=settings.upstream.password or "")
    args = [sys.executable, "-m", "server.front.viewer", str(settings.ohif_dir),
            settings.upstream.url, settings.host, str(settings.port)]
    log_file = state_path().with_suffix(".log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid = spawn(args, env, settings.host, settings.port, log_file, "viewer")
    url = f"http://{settings.host}:{settings.port}"
    from converter.fileio import atomic_write

    atomic_write(state_path(), json.dumps({"pid": pid, "url": url}) + "\n")
    return pid, url


def stop_background() -> bool:
    """Stop a viewer started with :func:`start_background`; False when none was running."""
    path = state_path()
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    path.unlink(missing_ok=True)
    return terminate(pid, "server.front.viewer")


def _main(argv: list[str]) -> int:
    """``python -m server.viewer OHIF_DIR PACS_URL HOST PORT`` (credentials in the env)."""
    ohif_dir, url, host, port = argv
    connection = Connection(url, os.environ.get("VINDR_VIEWER_USER") or None,
                            os.environ.get("VINDR_VIEWER_PASSWORD") or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return serve_foreground(viewer_settings(Path(ohif_dir), connection, host, int(port)))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
