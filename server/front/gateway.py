"""The gateway in front of the PACS: DICOMweb with searches answered from Orthanc's index.

One small HTTP server (loopback by default) that

- answers QIDO-RS searches (``GET /dicom-web/studies``, ``/series``, ``/instances`` and the
  study/series-scoped forms) from Orthanc's index through :mod:`server.qido`, at index speed,
  when the index holds every attribute the search names; any other search goes to the plugin;
- forwards everything else under ``/dicom-web/`` and ``/wado`` to the PACS with HTTP basic
  auth added. The query string is percent-decoded first: OHIF and dicomweb-client encode
  QIDO values (``includefield=00081030%2C...``, ``*`` as ``%2A``) and Debian's Orthanc
  builds do not decode query arguments, so an encoded wildcard or field list would silently
  match nothing. The request line goes out byte for byte (``http.client``; ``requests``
  re-encodes ``^``). An RFC 7239 ``Forwarded`` header names the gateway, so the DICOMweb
  plugin writes BulkDataURIs and RetrieveURLs that point back at the gateway;
- for the viewer (:mod:`server.viewer`), serves OHIF's static build and its generated
  ``/app-config.js`` on the same origin (no CORS, no credentials in the browser), with the
  single-page fallback (an unknown path without a file extension gets ``index.html``).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import mimetypes
import os
import posixpath
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from server.front.plugin import qido
from server.client import Connection
from server.errors import ServerError

DICOMWEB = "/dicom-web/"
PROXIED = (DICOMWEB, "/wado")
CHUNK = 1 << 16
UPSTREAM_TIMEOUT = 300.0
# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "authorization", "forwarded",
        "accept-encoding"}

log = logging.getLogger(__name__)
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


class GatewayUpstreamError(ServerError):
    """The PACS answered a request of the gateway's own with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway serves and where it forwards to.

    Parameters
    ----------
    ohif_dir
        OHIF's static build to serve (None: DICOMweb only).
    upstream
        The PACS (Orthanc's REST root, with credentials).
    host, port
        Where the gateway listens.
    index_qido
        Answer QIDO-RS searches from Orthanc's index (:mod:`server.qido`) when it can.
    app_config
        The ``/app-config.js`` served with OHIF (:func:`server.viewer.viewer_settings`).
    more_upstreams
        The REST URLs of the other nodes of a cluster (same credentials): requests go to
        each node in turn, and past a node that is down.
    """

    ohif_dir: Path | None
    upstream: Connection
    host: str = "127.0.0.1"
    port: int = 3000
    index_qido: bool = True
    app_config: bytes = b""
    more_upstreams: tuple[str, ...] = ()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave as separate writes: no 40 ms
    server_version = "vindr-dicom-viewer"
    server: Gateway

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path.startswith(DICOMWEB) and self.command == "GET" and self._search():
            return
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

    # -- QIDO-RS from the index --

    def _search(self) -> bool:
        """Answer a QIDO-RS search from Orthanc's index; False to forward it instead."""
        path, _, query = self.path[len(DICOMWEB) - 1:].partition("?")
        accept = self.headers.get("Accept", "")
        if "xml" in accept and "json" not in accept:
            return False  # DICOM XML answers: the plugin's
        try:
            search = qido.parse(path, query)
        except qido.QidoError as exc:
            self._reply(400, f"{exc}\n".encode(), "text/plain")
            return True
        if search is None:
            return False
        try:
            index = self.server.index_tags()
            plan = qido.plan(search, index) if index is not None else None
            if plan is None:
                return False
            cache = self.server.parents
            with cache.lock:  # the cache is as true as the change log before the search
                cache.refresh()
            answers = self.server.find(plan.body)  # searches run side by side
            with cache.lock:
                cache.resolve(search.level, answers)
                if plan.modalities_from_children:
                    cache.resolve_children(answers)
                data = qido.render(answers, plan, self._dicomweb_base(), cache)
        except GatewayUpstreamError as exc:
            if exc.status == 400:  # a value the index rejects: the plugin says why
                return False
            self._reply(502, f"PACS: {exc}\n".encode(), "text/plain")
            return True
        except (OSError, http.client.HTTPException) as exc:
            log.warning("upstream search failed: %s", exc)
            self._reply(502, f"PACS unreachable: {exc}\n".encode(), "text/plain")
            return True
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        for warning in plan.warnings:
            self.send_header("Warning", warning)
        self.end_headers()
        self.wfile.write(data)
        return True

    def _dicomweb_base(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}{DICOMWEB.rstrip('/')}"

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
        root = self.server.settings.ohif_dir
        if root is None:
            self._reply(404, b"not found (this gateway serves DICOMweb only)\n", "text/plain")
            return
        if rel == "app-config.js":
            self._reply(200, self.server.config_js, "text/javascript")
            return
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


class _Unreachable(Exception):
    """A node refused the connection: nothing was sent to it."""


@dataclass
class _Upstream:
    """One node of the PACS and its idle keep-alive connections."""

    host: str
    port: int
    prefix: str
    pool: list[http.client.HTTPConnection]

    @classmethod
    def parse(cls, url: str) -> _Upstream:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ServerError(f"the gateway forwards to an http:// PACS, not {url}")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"), [])


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
    """The gateway: the PACS's DICOMweb (searches from the index) and, for the viewer,
    OHIF's files on the same origin."""

    daemon_threads = True

    def __init__(self, settings: GatewaySettings) -> None:
        if settings.ohif_dir is not None and not (settings.ohif_dir / "index.html").is_file():
            raise ServerError(f"no OHIF build in {settings.ohif_dir}: run "
                              "`vindr-convert view --install` (needs npm)")
        self.settings = settings
        self.config_js = settings.app_config
        self._index: qido.IndexTags | None = None
        self.parents = qido.ParentCache(self.call)
        self._index_known = not settings.index_qido
        self._upstreams = [_Upstream.parse(url)
                           for url in (settings.upstream.url, *settings.more_upstreams)]
        self._turn = 0
        self.upstream_headers: dict[str, str] = {}
        if settings.upstream.username is not None:
            token = f"{settings.upstream.username}:{settings.upstream.password or ''}"
            self.upstream_headers["Authorization"] = (
                "Basic " + base64.b64encode(token.encode()).decode("ascii"))
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
                headers: dict[str, str], retry: bool = False) -> _Answer:
        """Send one request to a node of the PACS, in turn (round robin), on a pooled
        keep-alive connection. A node that refuses the connection is skipped (nothing was
        sent: safe for any method); a GET (or a request marked ``retry``, e.g. a search)
        that fails on a kept-alive connection (closed by the PACS meanwhile) is sent again
        on a new one."""
        with self._lock:
            start = self._turn
            self._turn = (self._turn + 1) % len(self._upstreams)
        order = self._upstreams[start:] + self._upstreams[:start]
        for upstream in order[:-1]:
            try:
                return self._request_one(upstream, method, target, body, headers, retry)
            except _Unreachable as exc:
                log.warning("PACS node %s:%s unreachable (%s): trying the next one",
                            upstream.host, upstream.port, exc.__cause__)
        try:
            return self._request_one(order[-1], method, target, body, headers, retry)
        except _Unreachable as exc:
            raise exc.__cause__ or exc from None

    def _request_one(self, upstream: _Upstream, method: str, target: str, body: bytes,
                     headers: dict[str, str], retry: bool) -> _Answer:
        idempotent = retry or method in ("GET", "HEAD")  # others: new connection, never twice
        with self._lock:
            conn = upstream.pool.pop() if upstream.pool and idempotent else None
        if conn is not None:  # a kept-alive connection the PACS may have closed meanwhile
            try:
                return self._send(upstream, conn, method, target, body, headers)
            except (OSError, http.client.HTTPException):
                conn.close()
        conn = http.client.HTTPConnection(upstream.host, upstream.port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise _Unreachable() from exc
        try:
            return self._send(upstream, conn, method, target, body, headers)
        except (OSError, http.client.HTTPException):
            conn.close()
            raise

    def index_tags(self) -> qido.IndexTags | None:
        """What the PACS's index holds (``GET /system``, asked once); None when Orthanc
        does not say (before 1.11): every search then goes to the plugin."""
        if not self._index_known:
            answer = self.request("GET", "/system", b"", dict(self.upstream_headers))
            with answer.connection:
                data = answer.response.read()
            if answer.response.status != 200:
                raise GatewayUpstreamError(answer.response.status, data[:200].decode(errors="replace"))
            self._index = qido.IndexTags.from_system(json.loads(data))
            self._index_known = True
        return self._index

    def find(self, body: dict) -> list[dict]:
        """``POST /tools/find`` on the PACS."""
        return list(self.call("POST", "/tools/find", body))

    def call(self, method: str, path: str, body: dict | None) -> Any:
        """One REST request of the gateway's own to the PACS: its JSON answer (None for
        404). Raises GatewayUpstreamError on another error status."""
        headers = dict(self.upstream_headers)
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        answer = self.request(method, path, data, headers, retry=True)
        with answer.connection:
            text = answer.response.read()
        if answer.response.status == 404:
            return None
        if answer.response.status != 200:
            raise GatewayUpstreamError(answer.response.status,
                                       text[:300].decode(errors="replace"))
        return json.loads(text)

    def _send(self, upstream: _Upstream, conn: http.client.HTTPConnection, method: str,
              target: str, body: bytes, headers: dict[str, str]) -> _Answer:
        conn.putrequest(method, upstream.prefix + target, skip_host="Host" in headers, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return _Answer(_Pooled(upstream.pool, self._lock, conn), conn.getresponse())


def start_gateway(settings: GatewaySettings) -> tuple[Gateway, threading.Thread]:
    """A running gateway in a background thread (tests, the demo); ``shutdown()`` stops it."""
    gateway = Gateway(settings)
    thread = threading.Thread(target=gateway.serve_forever, name="vindr-viewer", daemon=True)
    thread.start()
    return gateway, thread


# --- running it beside the PACS (serve) ---------------------------------------------------------

READY_TIMEOUT = 15.0


def spawn(args: list[str], env: dict[str, str], host: str, port: int, log_file: Path,
          what: str) -> int:
    """Start ``args`` detached (own session, output to ``log_file``) and wait until it
    accepts connections on ``host:port``; its pid. ``what`` names it in errors."""
    with open(log_file, "ab") as sink:
        child = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                 stderr=sink, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if child.poll() is not None:
            raise ServerError(f"the {what} exited at once (code {child.returncode}); see "
                              f"{log_file}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return child.pid
        except OSError:
            if time.monotonic() > deadline:
                child.kill()
                raise ServerError(f"the {what} did not answer within {READY_TIMEOUT:.0f} s; "
                                  f"see {log_file}") from None
            time.sleep(0.05)


def terminate(pid: int, module: str) -> bool:
    """SIGTERM ``pid`` if it still runs ``python -m <module>`` (a pid file can outlive its
    process and the pid be reused), and wait until it is gone; False when it was not."""
    from server.pacs.orthanc import zombie

    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if module.encode() not in cmdline:  # the pid was reused by another program
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists() or zombie(pid):
            break
        time.sleep(0.05)
    return True


def start_detached(settings: GatewaySettings, pid_file: Path, log_file: Path) -> int:
    """Start a DICOMweb-only gateway as a detached process (``serve --background``); its pid
    once it accepts connections. The credentials reach it through its environment, never
    its command line."""
    from converter.fileio import PRIVATE_FILE, atomic_write

    stop_detached(pid_file)
    env = dict(os.environ, VINDR_GATEWAY_USER=settings.upstream.username or "",
               VINDR_GATEWAY_PASSWORD=settings.upstream.password or "")
    args = [sys.executable, "-m", "server.front.gateway", settings.host, str(settings.port),
            settings.upstream.url, *settings.more_upstreams]
    pid = spawn(args, env, settings.host, settings.port, log_file, "gateway")
    atomic_write(pid_file, f"{pid}\n", mode=PRIVATE_FILE, fsync=False)
    return pid


def stop_detached(pid_file: Path) -> bool:
    """Stop a gateway started by :func:`start_detached`; False when none was running."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return False
    Path(pid_file).unlink(missing_ok=True)
    return terminate(pid, "server.front.gateway")


def serve_forever(settings: GatewaySettings,
                  on_ready: Callable[[Gateway], None] | None = None) -> int:
    """Run a gateway until SIGTERM or Ctrl-C (0 then); ``on_ready`` is called once it
    listens."""
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


def _main(argv: list[str]) -> int:
    """``python -m server.gateway HOST PORT PACS_URL [MORE_NODE_URLS...]`` (credentials in
    the environment)."""
    host, port, url, *more = argv
    connection = Connection(url, os.environ.get("VINDR_GATEWAY_USER") or None,
                            os.environ.get("VINDR_GATEWAY_PASSWORD") or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return serve_forever(GatewaySettings(None, connection, host, int(port),
                                         more_upstreams=tuple(more)))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
