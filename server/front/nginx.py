"""The front door: nginx's configuration, for the native PACS and for docker compose.

nginx (Debian's package natively, the official image under compose) is the only HTTP port
the accounts use. It holds no credential: each request goes to Orthanc with the client's own
``Authorization`` header, and Orthanc checks the password and, through its request filter
(:mod:`server.front.plugin.policy`), what that account may do. nginx adds what Orthanc
cannot do well or at all:

- an allow-list of PS3.18 resources: ``/dicom-web/{studies,series,instances}...`` (GET; POST
  for STOW-RS, which Orthanc refuses to read-only accounts), ``/wado`` (GET) and the
  viewer's files; ``..``, percent-encoded characters and doubled slashes in a path are
  refused (400) before anything reaches Orthanc; every other path is 404;
- the ``Host`` header checked against the names served (a DNS-rebinding page gets 421);
- QIDO-RS searches sent to the index-backed route inside Orthanc (``/vindr-qido``), the raw
  query string with them (``X-Vindr-Query``);
- bodies read to a temporary file with a size limit before Orthanc sees them, answers
  streamed without temporary files, timeouts on slow or idle clients, a listen backlog fit
  for a viewer opening many connections, and a 4xx for every malformed request;
- the viewer (OHIF) served from files after a login check (``auth_request`` to Orthanc:
  the browser's HTTP Basic prompt);
- the audit log: one JSON line per request with the account, method, resource (the study
  UID when there is one), status and bytes (:data:`AUDIT_FORMAT`);
- spreading the requests over the nodes of a cluster, past a node that is down
  (``least_conn``, passive failover).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FRONT_KEY_HEADER = "X-Vindr-Front"
QIDO_ROUTE = "/vindr-qido"
WADO_ROUTE = "/vindr-wado"
AUTH_ROUTE = "/vindr-front/auth"
MAX_BODY = "4g"  # a whole study over STOW-RS (four 20 MB images are 80 MB); bigger: load
# No keep-alive to the nodes: Orthanc's HTTP server gives each connection a thread of its
# 50 for as long as the connection lives, so with more clients than threads a request
# waited for an idle kept connection to time out (wrk -c64: p99 1.75 s against p50 96 ms;
# one connection per request: p99 0.47 s, the same throughput; BENCHMARKS.md).
AUDIT_FORMAT = (
    '{"time":"$time_iso8601","client":"$remote_addr","account":"$remote_user",'
    '"method":"$request_method","uri":"$request_uri","study":"$vindr_study",'
    '"status":$status,"bytes_sent":$body_bytes_sent,"bytes_received":$request_length,'
    '"seconds":$request_time,"node":"$upstream_addr"}'
)
_MIME = {
    "text/html": "html htm", "text/css": "css", "text/javascript": "js mjs",
    "application/json": "json map", "application/wasm": "wasm", "image/png": "png",
    "image/svg+xml": "svg", "image/x-icon": "ico", "image/jpeg": "jpg jpeg",
    "image/gif": "gif", "font/woff": "woff", "font/woff2": "woff2", "font/ttf": "ttf",
    "text/plain": "txt", "application/xml": "xml", "image/webp": "webp",
}
_SEARCH = ("~^(GET|HEAD):/dicom-web(?<vindr_rest>/(studies|series|instances)/?)$",
           "~^(GET|HEAD):/dicom-web(?<vindr_rest>/studies/[0-9.]+/(series|instances)/?)$",
           "~^(GET|HEAD):/dicom-web(?<vindr_rest>/studies/[0-9.]+/series/[0-9.]+/instances/?)$")


@dataclass(frozen=True)
class FrontConfig:
    """What one front serves, and where its files are.

    Attributes
    ----------
    listen
        ``address:port`` pairs of the front (``127.0.0.1:8050``; ``8050`` in a container).
    hosts
        The names and addresses clients use in ``Host`` (without port).
    nodes
        The Orthanc nodes' HTTP addresses (``127.0.0.1:8042``, ``orthanc-1:8042``).
    front_key
        The value of ``X-Vindr-Front`` added to every forwarded request.
    pid, error_log, audit_log, temp, viewer, app_config
        nginx's pid file, its error log, the audit log, its temporary folder, the OHIF
        build folder and OHIF's configuration file.
    admin_listen
        Docker only: where the admin reaches Orthanc's whole REST API through nginx (the
        nodes' own ports are not published); no front key is added there.
    resolver
        Docker only: the DNS server that resolves node names at run time.
    health_listen
        Docker only: where the container's health check asks nginx itself.
    workers
        nginx worker processes.
    """

    listen: tuple[str, ...]
    hosts: tuple[str, ...]
    nodes: tuple[str, ...]
    front_key: str
    pid: Path
    error_log: Path
    audit_log: Path
    temp: Path
    viewer: Path
    app_config: Path
    admin_listen: tuple[str, ...] = ()
    resolver: str | None = None
    health_listen: str | None = None
    workers: int = 2


def _proxy_headers(config: FrontConfig, key: bool = True) -> list[str]:
    lines = [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        # DICOMweb writes its BulkDataURIs and RetrieveURLs from these (X-Forwarded-Host
        # and -Proto first; a client's own Forwarded header is dropped)
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        'proxy_set_header Forwarded "";',
        # what only the front may say: a client's own values are replaced
        f'proxy_set_header {FRONT_KEY_HEADER} "{config.front_key if key else ""}";',
        "proxy_set_header X-Vindr-Query $args;",
        "proxy_connect_timeout 5s;",
        "proxy_send_timeout 600s;",
        "proxy_read_timeout 600s;",
        # passive failover: a node that refuses, times out or answers 502/503 is skipped;
        # POSTs too (re-sending an instance stores it once: OverwriteInstances is off)
        "proxy_next_upstream error timeout http_502 http_503 non_idempotent;",
        "proxy_next_upstream_tries 3;",
    ]
    return lines


def render(config: FrontConfig) -> str:
    """nginx.conf for ``config``."""
    def block(lines: Sequence[str], indent: int) -> str:
        pad = " " * indent
        return "".join(f"{pad}{line}\n" if line else "\n" for line in lines)

    resolve = " resolve" if config.resolver else ""
    upstream = [f"server {node}{resolve} max_fails=3 fail_timeout=10s;" for node in config.nodes]
    mime = [f"{ctype} {exts};" for ctype, exts in sorted(_MIME.items())]
    search_map = [f'"{pattern}" "{QIDO_ROUTE}$vindr_rest";' for pattern in _SEARCH]
    proxy = _proxy_headers(config)
    listen_front = [f"listen {address};" for address in config.listen]
    listen_default = [f"listen {address} default_server backlog=4096;"
                      for address in config.listen]
    names = " ".join(config.hosts)
    text = f"""# The front door of a vindr-dicom PACS; written by `vindr-convert serve`
# (server/front/nginx.py). Do not edit: serve writes it again.

daemon off;
worker_processes {config.workers};
pid {config.pid};
error_log {config.error_log} warn;

events {{
    worker_connections 4096;
}}

http {{
    types {{
{block(mime, 8)}    }}
    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    client_body_temp_path {config.temp}/body;
    proxy_temp_path {config.temp}/proxy;
    fastcgi_temp_path {config.temp}/fastcgi;
    uwsgi_temp_path {config.temp}/uwsgi;
    scgi_temp_path {config.temp}/scgi;
{f"    resolver {config.resolver} valid=10s ipv6=off;" + chr(10) if config.resolver else ""}
    # the audit log: who asked what, and what they got (DATA/logs/audit.log)
    map $uri $vindr_study {{
        "~^/dicom-web/studies/(?<vindr_uid>[0-9.]+)" $vindr_uid;
        default $arg_studyUID;
    }}
    log_format vindr_audit escape=json '{AUDIT_FORMAT}';
    access_log {config.audit_log} vindr_audit;

    # searches go to the index-backed QIDO-RS inside Orthanc, the rest to its DICOMweb
    map "$request_method:$uri" $vindr_target {{
{block(search_map, 8)}        default $uri;
    }}

    upstream orthanc {{
{f"        zone orthanc 64k;{chr(10)}" if config.resolver else ""}        least_conn;
{block(upstream, 8)}    }}

    # clients: bodies to a temporary file up to {MAX_BODY}, then to Orthanc; answers
    # streamed through memory buffers; slow or idle clients closed
    client_max_body_size {MAX_BODY};
    client_body_buffer_size 1m;
    client_header_timeout 10s;
    client_body_timeout 30s;
    send_timeout 60s;
    keepalive_timeout 30s;
    keepalive_requests 10000;
    large_client_header_buffers 4 32k;
    proxy_request_buffering on;
    proxy_buffering on;
    proxy_max_temp_file_size 0;
    proxy_buffers 16 64k;

    # a Host this PACS does not answer to (DNS rebinding): refused
    server {{
{block(listen_default, 8)}        server_name _;
        default_type text/plain;
        return 421 "this server answers to {names}\\n";
    }}

    server {{
{block(listen_front, 8)}        server_name {names};
        default_type text/plain;  # what the refusals below say; files have their types

        # '..', percent-encoded characters or doubled slashes in a path: refused here,
        # before Orthanc would resolve them
        if ($request_uri ~ "^[^?]*(%|\\.\\.|//|\\x5c)") {{
            return 400 "path not allowed\\n";
        }}

        error_page 401 = @login;
        location @login {{
            add_header WWW-Authenticate 'Basic realm="vindr-dicom"' always;
            return 401 "login required\\n";
        }}

        location = /vindr-front-login {{
            internal;
            proxy_pass http://orthanc{AUTH_ROUTE};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
{block(proxy, 12)}        }}

        # DICOMweb: QIDO-RS, WADO-RS (GET), STOW-RS (POST, write accounts)
        location ~ "^/dicom-web/(studies|series|instances)(/[A-Za-z0-9.,_/-]*)?$" {{
            limit_except GET POST {{
                deny all;
            }}
            proxy_pass http://orthanc$vindr_target$is_args$args;
{block(proxy, 12)}        }}

        # WADO-URI (its query decoded inside Orthanc)
        location = /wado {{
            limit_except GET {{
                deny all;
            }}
            proxy_pass http://orthanc{WADO_ROUTE}$is_args$args;
{block(proxy, 12)}        }}

        location /dicom-web/ {{
            return 404 "not a DICOMweb resource of this server\\n";
        }}

        # the viewer: OHIF's files once logged in; but its web-app manifest, which browsers
        # fetch without credentials (it names the application and its icons, no data)
        location = /manifest.json {{
            root {config.viewer};
            try_files $uri =404;
        }}

        location = /app-config.js {{
            auth_request /vindr-front-login;
            alias {config.app_config};
            default_type text/javascript;
            add_header Cache-Control no-cache;
        }}

        location / {{
            limit_except GET {{
                deny all;
            }}
            auth_request /vindr-front-login;
            root {config.viewer};
            # the single-page application: a path without a file extension is one of its
            # routes (index.html); a missing file is a real 404
            location ~ "\\.[A-Za-z0-9]+$" {{
                auth_request /vindr-front-login;
                try_files $uri =404;
            }}
            try_files $uri $uri/ /index.html =404;
            add_header Cache-Control no-cache;
        }}
    }}
{_admin_server(config)}}}
"""
    return text


def _admin_server(config: FrontConfig) -> str:
    """Docker only: the admin's way to the nodes' whole REST API (no front key), and the
    container's health check."""
    text = ""
    if config.admin_listen:
        listen = "".join(f"        listen {address};\n" for address in config.admin_listen)
        proxy = "".join(f"            {line}\n" for line in _proxy_headers(config, key=False))
        text += f"""
    # the admin's REST API (load, verify, stop); other accounts are refused by Orthanc here
    server {{
{listen}        client_max_body_size 0;
        location / {{
            proxy_pass http://orthanc;
{proxy}        }}
    }}
"""
    if config.health_listen:
        text += f"""
    # the container's health check only (not published): nginx itself answers
    server {{
        listen {config.health_listen};
        access_log off;
        location = /health {{
            return 200 "ok\\n";
        }}
    }}
"""
    return text
