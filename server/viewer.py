"""The viewer: OHIF's static build served on loopback behind a same-origin gateway to the PACS.

OHIF (``@ohif/app``, a ready static build in its npm package) talks DICOMweb from the
browser. Served from the same origin as a small gateway, it needs no CORS and never sees the
PACS credentials:

- ``/dicom-web/...`` and ``/wado...`` are forwarded to the PACS with HTTP basic auth added.
  The query string is percent-decoded first: OHIF encodes every QIDO value
  (``includefield=00081030%2C...``, ``*`` as ``%2A``) and Debian's Orthanc builds do not
  decode query arguments, so an encoded wildcard or field list would silently match nothing.
  The request line goes out byte for byte (``http.client``; ``requests`` re-encodes ``^``).
  An RFC 7239 ``Forwarded`` header names the gateway, so the DICOMweb plugin writes
  BulkDataURIs and RetrieveURLs that point back at the gateway (same origin).
- ``/app-config.js`` is OHIF's configuration, generated (:func:`app_config`): one DICOMweb
  data source (the gateway), our mammography hanging protocol and box labels.
- everything else is the static build, with the single-page fallback (an unknown path
  without a file extension, e.g. ``/viewer``, gets ``index.html``).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import mimetypes
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from .client import Connection
from .errors import ServerError

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
# Parts of the build we do not use: onnxruntime (136 MB, segmentation AI) and the
# microscopy viewer.
OHIF_DROPPED = ("ort", "dicom-microscopy-viewer")
PROXIED = ("/dicom-web/", "/wado")
MAMMO_PROTOCOL = "vindr-mammo-4up"  # the hanging protocol of ohif-app-config.js
CHUNK = 1 << 16
UPSTREAM_TIMEOUT = 300.0
# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "authorization", "forwarded",
        "accept-encoding"}

log = logging.getLogger(__name__)
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


# --- the OHIF build ---------------------------------------------------------------------------


def default_ohif_dir(version: str = OHIF_VERSION) -> Path:
    """Where ``install_ohif`` puts the build: ``$XDG_DATA_HOME/vindr-dicom/ohif/<version>``."""
    from .userconfig import data_home

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


def app_config() -> str:
    """OHIF's ``app-config.js`` (``server/resources/ohif-app-config.js``): the gateway as its
    one data source, the mammography hanging protocol, the box labels."""
    template = resources.files("server") / "resources" / "ohif-app-config.js"
    return template.read_text(encoding="utf-8")


# --- the gateway ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewerSettings:
    """What the gateway serves and where it forwards to."""

    ohif_dir: Path
    upstream: Connection
    host: str = "127.0.0.1"
    port: int = 3000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vindr-dicom-viewer"
    server: Gateway

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path.startswith(PROXIED):
            self._forward()
        else:
            self._static()

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if self.path.startswith(PROXIED):
            self._forward()
        else:
            self._reply(405, b"method not allowed\n", "text/plain")

    # -- forwarding --

    def _forward(self) -> None:
        path, _, query = self.path.partition("?")
        target = path + ("?" + urllib.parse.unquote(query) if query else "")
        if any(ch in target for ch in " \r\n\t"):
            self._reply(400, b"spaces or line breaks in a query cannot be forwarded\n",
                        "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers.update(self.server.upstream_headers)
        # Both name the gateway: the DICOMweb plugin builds BulkDataURIs and RetrieveURLs from
        # the RFC 7239 Forwarded header, or from Host in versions that ignore it.
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        headers["Forwarded"] = f"host={host};proto=http"
        headers["Host"] = host
        try:
            answer = self.server.request(self.command, target, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("upstream %s %s failed: %s", self.command, target, exc)
            self._reply(502, f"PACS unreachable: {exc}\n".encode(), "text/plain")
            return
        with answer.connection:
            self._relay(answer.response)
        if answer.response.status >= 400:
            log.info("%s %s -> %d", self.command, target, answer.response.status)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response(response.status)
        length = response.getheader("Content-Length")
        for key, value in response.getheaders():
            if key.lower() not in _HOP and key.lower() not in ("content-length",
                                                               "www-authenticate"):
                self.send_header(key, value)
        data = None if length is not None else response.read()
        self.send_header("Content-Length", length if length is not None else str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if data is not None:
            self.wfile.write(data)
            return
        while chunk := response.read(CHUNK):
            self.wfile.write(chunk)

    # -- static files --

    def _static(self) -> None:
        rel = posixpath.normpath(urllib.parse.unquote(self.path.partition("?")[0])).lstrip("/")
        if rel == "app-config.js":
            self._reply(200, self.server.config_js, "text/javascript")
            return
        root = self.server.settings.ohif_dir
        path = (root / rel).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            if "." in posixpath.basename(rel):  # a missing asset is a real 404
                self._reply(404, b"not found\n", "text/plain")
                return
            path = root / "index.html"  # single-page application fallback
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._reply(200, path.read_bytes(), ctype)

    def _reply(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


@dataclass
class _Answer:
    connection: _Pooled
    response: http.client.HTTPResponse


class _Pooled:
    """A keep-alive upstream connection lent to one request, returned when done."""

    def __init__(self, pool: list[http.client.HTTPConnection], lock: threading.Lock,
                 conn: http.client.HTTPConnection) -> None:
        self.pool, self.lock, self.conn = pool, lock, conn

    def __enter__(self) -> _Pooled:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            with self.lock:
                self.pool.append(self.conn)
        else:
            self.conn.close()


class Gateway(ThreadingHTTPServer):
    """The same-origin gateway: OHIF's files and the PACS's DICOMweb, on one port."""

    daemon_threads = True

    def __init__(self, settings: ViewerSettings) -> None:
        if not ohif_installed(settings.ohif_dir):
            raise ServerError(f"no OHIF build in {settings.ohif_dir}: run "
                              "`vindr-convert view --install` (needs npm)")
        self.settings = settings
        self.config_js = app_config().encode("utf-8")
        parts = urllib.parse.urlsplit(settings.upstream.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ServerError(f"the viewer forwards to an http:// PACS, not {settings.upstream.url}")
        self._upstream = (parts.hostname, parts.port or 80, parts.path.rstrip("/"))
        self.upstream_headers: dict[str, str] = {}
        if settings.upstream.username is not None:
            token = f"{settings.upstream.username}:{settings.upstream.password or ''}"
            self.upstream_headers["Authorization"] = (
                "Basic " + base64.b64encode(token.encode()).decode("ascii"))
        self._pool: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        try:
            super().__init__((settings.host, settings.port), _Handler)
        except OSError as exc:
            raise ServerError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc

    @property
    def url(self) -> str:
        """The viewer's base URL."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def request(self, method: str, target: str, body: bytes,
                headers: dict[str, str]) -> _Answer:
        """Send one request upstream on a pooled keep-alive connection; a GET that fails on
        a kept-alive connection (closed by the PACS meanwhile) is sent again on a new one."""
        host, port, prefix = self._upstream
        idempotent = method in ("GET", "HEAD")  # others go on a new connection, never twice
        with self._lock:
            conn = self._pool.pop() if self._pool and idempotent else None
        if conn is not None:  # a kept-alive connection the PACS may have closed meanwhile
            try:
                return self._send(conn, method, prefix + target, body, headers)
            except (OSError, http.client.HTTPException):
                conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        try:
            return self._send(conn, method, prefix + target, body, headers)
        except (OSError, http.client.HTTPException):
            conn.close()
            raise

    def _send(self, conn: http.client.HTTPConnection, method: str, target: str, body: bytes,
              headers: dict[str, str]) -> _Answer:
        conn.putrequest(method, target, skip_host="Host" in headers, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return _Answer(_Pooled(self._pool, self._lock, conn), conn.getresponse())


def start_gateway(settings: ViewerSettings) -> tuple[Gateway, threading.Thread]:
    """A running gateway in a background thread (tests, the demo); ``shutdown()`` stops it."""
    gateway = Gateway(settings)
    thread = threading.Thread(target=gateway.serve_forever, name="vindr-viewer", daemon=True)
    thread.start()
    return gateway, thread


# --- running it -------------------------------------------------------------------------------

STATE_FILE = "viewer.json"
READY_TIMEOUT = 15.0


def state_path() -> Path:
    """Where a background viewer records its pid and URL: beside the per-user server file
    (``$VINDR_DICOM_CONFIG`` moves both)."""
    from .userconfig import config_path

    return config_path().with_name(STATE_FILE)


def exam_urls(gateway_url: str, connection: Connection) -> tuple[str, str | None]:
    """(study list URL, URL of one annotated exam or None) on the viewer at ``gateway_url``.

    The annotated exam is found through Orthanc's index (``/tools/find``, a SEG series:
    only annotated images have one), which stays fast on a whole archive.
    """
    from .client import OrthancClient, OrthancError

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


def serve_foreground(settings: ViewerSettings,
                     on_ready: Callable[[Gateway], None] | None = None) -> int:
    """Run the viewer until Ctrl-C or SIGTERM; returns 0 on such a stop."""
    gateway = Gateway(settings)

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=gateway.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if on_ready is not None:
            on_ready(gateway)
        gateway.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        gateway.server_close()
    return 0


def start_background(settings: ViewerSettings) -> tuple[int, str]:
    """Start the viewer as a detached process; (pid, URL) once it answers.

    The PACS credentials reach the child through its environment, never its command line.
    """
    stop_background()
    if not ohif_installed(settings.ohif_dir):
        raise ServerError(f"no OHIF build in {settings.ohif_dir}: run "
                          "`vindr-convert view --install` (needs npm)")
    env = dict(os.environ, VINDR_VIEWER_USER=settings.upstream.username or "",
               VINDR_VIEWER_PASSWORD=settings.upstream.password or "")
    args = [sys.executable, "-m", "server.viewer", str(settings.ohif_dir),
            settings.upstream.url, settings.host, str(settings.port)]
    log_file = state_path().with_suffix(".log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as sink:
        child = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                 stderr=sink, start_new_session=True)
    url = f"http://{settings.host}:{settings.port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ServerError(f"the viewer exited at once (code {child.returncode}); see {log_file}")
        try:
            with socket.create_connection((settings.host, settings.port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    else:
        child.kill()
        raise ServerError(f"the viewer did not answer within {READY_TIMEOUT:.0f} s; see {log_file}")
    from converter.fileio import atomic_write

    atomic_write(state_path(), json.dumps({"pid": child.pid, "url": url}) + "\n")
    return child.pid, url


def stop_background() -> bool:
    """Stop a viewer started with :func:`start_background`; False when none was running."""
    path = state_path()
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    path.unlink(missing_ok=True)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"server.viewer" not in cmdline:  # the pid was reused by another program
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    return True


def _main(argv: list[str]) -> int:
    """``python -m server.viewer OHIF_DIR PACS_URL HOST PORT`` (credentials in the env)."""
    ohif_dir, url, host, port = argv
    connection = Connection(url, os.environ.get("VINDR_VIEWER_USER") or None,
                            os.environ.get("VINDR_VIEWER_PASSWORD") or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return serve_foreground(ViewerSettings(Path(ohif_dir), connection, host, int(port)))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
