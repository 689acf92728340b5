"""The front door without a server: who may do what (the request filter's rules), nginx's
configuration (checked by nginx itself), the code Orthanc runs (with a stand-in for
Orthanc's Python module), the accounts, and the audit log's rotation."""

from __future__ import annotations

import ast
import base64
import json
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from server.errors import SettingsError
from server.front import files as front_files
from server.front import nginx
from server.front.plugin import policy
from server.front.plugin.dictionary import Dictionary
from server.pacs import accounts
from server.pacs.layout import DataLayout
from server.pacs.supervisor import rotate_files

KEY = "front-key-for-tests"
UID = "1.2.840.10008.99"
RULES = policy.Rules("admin", {"reader": "read", "writer": "write"}, KEY,
                     frozenset({"127.0.0.1", "localhost", "::1", "pacs.example"}))


def headers(account: str | None = "reader", host: str = "127.0.0.1:8050",
            key: str | None = KEY) -> dict[str, str]:
    found = {"host": host}
    if account:
        found["authorization"] = "Basic " + base64.b64encode(f"{account}:pw".encode()).decode()
    if key is not None:
        found["x-vindr-front"] = key
    return found


# --- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("uri", [
    "/vindr-qido/studies", "/vindr-qido/series", "/vindr-qido/instances",
    f"/vindr-qido/studies/{UID}/series", f"/vindr-qido/studies/{UID}/series/{UID}/instances",
    "/dicom-web/studies", f"/dicom-web/studies/{UID}", f"/dicom-web/studies/{UID}/metadata",
    f"/dicom-web/studies/{UID}/series/{UID}/rendered",
    f"/dicom-web/studies/{UID}/series/{UID}/instances/{UID}/frames/1,2",
    f"/dicom-web/studies/{UID}/series/{UID}/instances/{UID}/bulk/7FE00010",
    "/wado", "/vindr-wado", "/vindr-front/auth",
])
def test_a_reader_may_search_and_retrieve(uri: str) -> None:
    assert RULES.decide(1, uri, headers()).allowed


@pytest.mark.parametrize(("method", "uri"), [
    (1, "/system"), (1, "/tools/find"), (2, "/tools/find"), (2, "/tools/shutdown"),
    (2, "/tools/create-dicom"), (1, "/instances/abc/file"), (4, f"/dicom-web/studies/{UID}"),
    (4, "/studies/abc"), (1, "/dicom-web/servers"), (2, "/dicom-web/servers/x/stow"),
    (1, "/app/explorer.html"), (3, "/modalities/X"), (1, "/patients"), (2, "/instances"),
    (2, "/dicom-web/studies"), (1, "/dicom-web/studies/not-a-uid"),
])
def test_a_reader_may_do_nothing_else(method: int, uri: str) -> None:
    decision = RULES.decide(method, uri, headers())
    assert not decision.allowed and "reader" in decision.reason


def test_only_a_write_account_stores_and_only_with_stow() -> None:
    assert RULES.decide(2, "/dicom-web/studies", headers("writer")).allowed
    assert RULES.decide(2, f"/dicom-web/studies/{UID}", headers("writer")).allowed
    assert "read-only" in RULES.decide(2, "/dicom-web/studies", headers()).reason
    assert not RULES.decide(2, "/instances", headers("writer")).allowed
    assert not RULES.decide(4, f"/dicom-web/studies/{UID}", headers("writer")).allowed


def test_accounts_come_through_the_front_the_admin_anywhere() -> None:
    for key in (None, "", "guessed"):
        decision = RULES.decide(1, "/dicom-web/studies", headers(key=key))
        assert not decision.allowed and "front door" in decision.reason
    assert RULES.decide(2, "/tools/shutdown", headers("admin", key=None)).allowed
    assert not RULES.decide(1, "/dicom-web/studies", headers("mallory")).allowed
    assert not RULES.decide(1, "/dicom-web/studies", headers(None)).allowed


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1:8050", True), ("localhost", True), ("[::1]:8042", True),
    ("PACS.example:443", True), ("evil.example", False), ("127.0.0.1.nip.io:8050", False),
    ("", False),
])
def test_the_host_must_be_this_servers(host: str, allowed: bool) -> None:
    assert RULES.decide(1, "/dicom-web/studies", headers(host=host)).allowed is allowed
    assert RULES.decide(1, "/system", headers("admin", host=host)).allowed is allowed


def test_basic_user_and_host_name() -> None:
    assert policy.basic_user(headers()["authorization"]) == "reader"
    assert policy.basic_user("Basic !!!") is None and policy.basic_user("Bearer x") is None
    assert policy.basic_user("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert policy.host_name("[::1]:80") == "::1" and policy.host_name("A.b:1") == "a.b"


# --- nginx's configuration --------------------------------------------------------------------


def native_config(tmp_path: Path, **kwargs: object) -> nginx.FrontConfig:
    layout = DataLayout.of(tmp_path)
    fields = dict(listen=["127.0.0.1:18050"], hosts=["127.0.0.1", "localhost"],
                  nodes=["127.0.0.1:18042", "127.0.0.1:18043"], front_key=KEY)
    fields.update(kwargs)
    return front_files.native_front(layout, **fields)  # type: ignore[arg-type]


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed")
    layout = DataLayout.of(tmp_path)
    for folder in (layout.front, layout.logs):
        folder.mkdir(parents=True)
    front_files.write_front_config(layout, native_config(tmp_path))
    check = subprocess.run([binary, "-t", "-p", str(layout.front), "-c",
                            str(layout.front_config), "-e", str(layout.front_error_log)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert stat.S_IMODE(layout.front_config.stat().st_mode) == 0o600


def test_the_front_holds_no_credential_and_bounds_every_client(tmp_path: Path) -> None:
    text = nginx.render(native_config(tmp_path))
    assert "Authorization" not in text and "auth_basic" not in text
    assert f'proxy_set_header X-Vindr-Front "{KEY}";' in text
    for directive in ("client_max_body_size 4g;", "client_header_timeout 10s;",
                      "client_body_timeout 30s;", "send_timeout 60s;", "keepalive_timeout 30s;",
                      "proxy_request_buffering on;", "proxy_max_temp_file_size 0;",
                      "default_server backlog=4096;", "least_conn;"):
        assert directive in text, directive
    assert "server 127.0.0.1:18042 max_fails=3" in text and "server 127.0.0.1:18043" in text
    assert 'return 421' in text and "server_name 127.0.0.1 localhost;" in text
    assert "auth_request /vindr-front-login;" in text
    assert "escape=json" in text and str(DataLayout.of(tmp_path).audit_log) in text


def test_searches_go_to_the_index_and_nothing_else_to_orthancs_api(tmp_path: Path) -> None:
    text = nginx.render(native_config(tmp_path))
    assert '"/vindr-qido$vindr_rest"' in text
    assert "proxy_pass http://orthanc$vindr_target$is_args$args;" in text
    assert "proxy_pass http://orthanc/vindr-wado$is_args$args;" in text
    passes = [line.strip() for line in text.splitlines() if "proxy_pass " in line]
    assert len(passes) == 3  # login check, DICOMweb, WADO-URI: no other route to Orthanc


# --- the code Orthanc runs -------------------------------------------------------------------


def test_the_plugin_uses_the_standard_library_only() -> None:
    package = Path(front_files.__file__).parent / "plugin"
    allowed = set(sys.stdlib_module_names) | {"orthanc", "__future__"}
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, (path.name, name)
    assert set(front_files.PLUGIN_MODULES) == {p.name for p in package.glob("*.py")}


class FakeOrthanc(types.ModuleType):
    """What Orthanc's Python plugin offers, recorded (the thing under test is our glue)."""

    class OrthancException(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("orthanc")
        self.filters: list = []
        self.routes: dict = {}
        self.logged: list[str] = []

    def RegisterIncomingHttpRequestFilter(self, callback):  # noqa: N802 - Orthanc's names
        self.filters.append(callback)

    def RegisterRestCallback(self, uri, callback):  # noqa: N802
        self.routes[uri] = callback

    def LogWarning(self, text):  # noqa: N802
        self.logged.append(text)

    LogError = LogWarning


def test_the_copied_plugin_registers_its_filter_and_routes(tmp_path: Path,
                                                           monkeypatch) -> None:
    paths = front_files.write_plugin(tmp_path / "plugin", admin="admin",
                                     roles={"reader": "read"}, hosts=["127.0.0.1"],
                                     front_key=KEY)
    fake = FakeOrthanc()
    monkeypatch.setitem(sys.modules, "orthanc", fake)
    monkeypatch.syspath_prepend(str(paths.folder))
    for name in list(sys.modules):
        if name.startswith(front_files.PLUGIN_PACKAGE):
            monkeypatch.delitem(sys.modules, name)
    namespace: dict = {}
    exec(compile(paths.script.read_text(), str(paths.script), "exec"), namespace)  # noqa: S102
    assert set(fake.routes) == {"/vindr-qido/(.*)", "/vindr-wado", "/vindr-front/auth"}
    (allow,) = fake.filters
    assert allow("/dicom-web/studies", method=1, ip="127.0.0.1", headers=headers(), get={})
    assert not allow("/tools/shutdown", method=2, ip="127.0.0.1", headers=headers(), get={})
    assert any("refused /tools/shutdown" in line and "reader" in line for line in fake.logged)
    assert not allow("/dicom-web/studies", method=1, ip="127.0.0.1", headers=None, get={})
    settings = json.loads(paths.settings.read_text())
    assert settings["roles"] == {"reader": "read"} and settings["front_key"] == KEY
    assert Dictionary.load(paths.dictionary).tag_of("PatientName") == 0x00100010
    for path in paths.folder.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# --- accounts and the audit log ---------------------------------------------------------------


def test_accounts_are_kept_private_and_checked(tmp_path: Path) -> None:
    assert accounts.add(tmp_path, accounts.Account("reader", "reader-password-1"), "admin") is False
    assert accounts.add(tmp_path, accounts.Account("reader", "another-password",
                                                   accounts.WRITE), "admin") is True
    found = accounts.read_accounts(tmp_path)
    assert found["reader"].role == "write" and found["reader"].password == "another-password"
    assert stat.S_IMODE(DataLayout.of(tmp_path).accounts.stat().st_mode) == 0o600
    assert "another-password" not in repr(found["reader"])
    with pytest.raises(SettingsError, match="admin account"):
        accounts.add(tmp_path, accounts.Account("admin", "admin-password-1"), "admin")
    with pytest.raises(SettingsError, match="at least 12"):
        accounts.Account("bob", "short")
    with pytest.raises(SettingsError, match="account name"):
        accounts.Account("bob smith", "a-long-password")
    with pytest.raises(SettingsError, match="role"):
        accounts.Account("bob", "a-long-password", "admin")
    assert accounts.remove(tmp_path, "reader") and not accounts.remove(tmp_path, "reader")
    DataLayout.of(tmp_path).accounts.write_text("{not json")
    with pytest.raises(SettingsError, match="not a valid accounts file"):
        accounts.read_accounts(tmp_path)


def test_the_audit_log_rotates_keeping_the_newest(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    for generation in range(5):
        log.write_text(f"generation {generation}\n")
        rotate_files(log, keep=3)
    assert not log.exists()
    assert [(tmp_path / f"audit.log.{k}").read_text() for k in (1, 2, 3)] == [
        "generation 4\n", "generation 3\n", "generation 2\n"]
    assert not (tmp_path / "audit.log.4").exists()
