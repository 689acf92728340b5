"""Configuration without a running server: the Orthanc policy per version, settings checks,
the per-user credentials file, and the docker compose project."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from server.pacs import docker

from server.pacs import engine
from server.errors import SettingsError
from server.pacs import accounts
from server.pacs.settings import (
    KEEP_ALIVE_TIMEOUT,
    Credentials,
    Modality,
    ServerSettings,
    exposure_notes,
    orthanc_config,
    parse_version,
)
from server.userconfig import (
    UserConfig,
    ensure_credentials,
    load_user_config,
    resolve_connection,
    save_user_config,
)

CREDS = Credentials("tester", "test-password-1")


def settings(tmp_path: Path, **kwargs) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path, credentials=CREDS, **kwargs)


# --- Orthanc configuration ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.10.1", "1.12.7", "mainline"])
def test_policy_is_the_same_on_every_version(tmp_path: Path, version: str) -> None:
    config = orthanc_config(
        settings(tmp_path, modalities=(Modality.parse("VIEWER@10.0.0.5:104"),),
                 listen="0.0.0.0"),
        version,
    )
    expected = {
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"tester": "test-password-1"},
        "RemoteAccessAllowed": False,
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        "StorageCompression": False,
        "OverwriteInstances": False,
        "StorageAccessOnFind": "Always",
        "SaveJobs": False,
        "WebDavEnabled": False,
        "DefaultEncoding": "Utf8",
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
    }
    assert {k: config[k] for k in expected} == expected
    assert config["DicomWeb"]["Root"] == "/dicom-web/"
    assert config["DicomWeb"]["StudiesMetadata"] == config["DicomWeb"]["SeriesMetadata"] == "Full"
    viewer = config["DicomModalities"]["VIEWER"]
    assert (viewer["Host"], viewer["Port"], viewer["AllowFind"], viewer["AllowStore"]) == (
        "10.0.0.5",
        104,
        True,
        False,
    )
    assert list(config["DicomModalities"]) == ["VIEWER"]  # no AE title may store
    assert config["KeepAlive"] is True and config["KeepAliveTimeout"] == KEEP_ALIVE_TIMEOUT


def test_orthanc_checks_every_account(tmp_path: Path) -> None:
    config = orthanc_config(settings(tmp_path), "1.12.7",
                            {"reader": "reader-password-1", "tester": "not-the-admin's"})
    # the admin's password wins over an account of the same name
    assert config["RegisteredUsers"] == {"reader": "reader-password-1",
                                         "tester": "test-password-1"}


@pytest.mark.parametrize(
    ("version", "extra"),
    [("1.10.1", False), ("1.11.0", True), ("1.12.7", True), ("mainline", True)],
)
def test_extra_main_dicom_tags_only_from_1_11(tmp_path: Path, version: str, extra: bool) -> None:
    config = orthanc_config(settings(tmp_path), version)
    assert ("ExtraMainDicomTags" in config) is extra
    if extra:
        assert {"ImageLaterality", "ViewPosition"} <= set(config["ExtraMainDicomTags"]["Instance"])
        assert "PatientAge" in config["ExtraMainDicomTags"]["Study"]


def test_parse_version() -> None:
    assert parse_version("1.10.1") == (1, 10, 1)
    assert parse_version("1.12.7") > parse_version("1.11")
    assert parse_version("mainline") > parse_version("1.99.0")


# --- settings checks ----------------------------------------------------------------------


def test_modality_round_trip() -> None:
    assert str(Modality.parse("VIEWER@10.0.0.5:104")) == "VIEWER@10.0.0.5:104"
    assert Modality.parse("WS@[::1]:11112").host == "::1"
    assert Modality.parse("PACS2@pacs.example.org:4242").host == "pacs.example.org"


@pytest.mark.parametrize(
    "text",
    [
        "VIEWER",
        "VIEWER@host",
        "@host:104",
        "VIEWER@host:port",
        "A-VERY-LONG-AE-TITLE@h:1",
        "V@h:70000",
    ],
)
def test_bad_modality_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Modality.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"http_port": 0}, "HTTP port"),
        ({"http_port": 4242}, "must differ"),
        ({"aet": "BAD AET"}, "server AE title"),
        ({"engine": "podman"}, "engine"),
        ({"modalities": (Modality.parse("VINDR@h:1"),)}, "used twice"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(tmp_path, **kwargs)


def test_password_stays_out_of_repr() -> None:
    assert "test-password-1" not in repr(CREDS)
    assert "test-password-1" not in repr(ServerSettings(data_dir=Path("/tmp"), credentials=CREDS))


# --- per-user file ------------------------------------------------------------------------


def test_credentials_generated_once_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "server.json"
    first = ensure_credentials(path)
    assert len(first.password) >= 24
    assert ensure_credentials(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["password"] == first.password


def test_connection_explicit_values_win(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    save_user_config(UserConfig("vindr", "stored-pw", url="http://127.0.0.1:8042"), path)
    stored = resolve_connection(path=path)
    assert (stored.url, stored.username, stored.password) == (
        "http://127.0.0.1:8042",
        "vindr",
        "stored-pw",
    )
    explicit = resolve_connection("http://pacs:9000", "other", "given", path=path)
    assert (explicit.url, explicit.username, explicit.password) == (
        "http://pacs:9000",
        "other",
        "given",
    )
    assert resolve_connection(password="new", path=path).password == "new"
    assert load_user_config(tmp_path / "absent.json") is None


def test_connection_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no PACS URL"):
        resolve_connection(path=tmp_path / "absent.json")


# --- docker compose -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(docker.COMPOSE_TEMPLATE.read_text())


@pytest.fixture()
def project(tmp_path: Path, monkeypatch) -> docker.DockerProject:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))  # no OHIF build there
    return docker.prepare(settings(tmp_path / "pacs", http_port=18042, dicom_port=14242,
                                   web_port=18050, remote_access=True))


def nginx_of(project: docker.DockerProject) -> str:
    """The project's nginx.conf without its comments."""
    lines = project.nginx_config.read_text().splitlines()
    return "\n".join(line.partition("#")[0] for line in lines)


def nodes(compose: dict) -> dict[str, dict]:
    """The compose file's Orthanc services, by name."""
    return {name: service for name, service in compose["services"].items()
            if service["image"] == docker.ORTHANC_IMAGE}


def directive(config: str, name: str) -> list[str]:
    """The arguments of every ``name`` directive in ``config``, one string each."""
    found = re.finditer(rf"^\s*{name}\s+([^;]*);", config, re.MULTILINE)
    return [m.group(1).strip() for m in found]


def test_compose_images_are_pinned_and_match_the_code(compose: dict) -> None:
    images = {name: service["image"] for name, service in compose["services"].items()}
    assert images == {**{node: docker.ORTHANC_IMAGE for node in docker.ORTHANC_NODES},
                      "front": docker.NGINX_IMAGE, "postgres": docker.POSTGRES_IMAGE}
    for image in images.values():
        tag = image.rpartition(":")[2]
        assert tag and tag != "latest" and any(c.isdigit() for c in tag)
    assert re.match(r"\d+\.\d+\.\d+-", docker.NGINX_IMAGE.rpartition(":")[2])  # not 1.30-alpine


def test_compose_services_have_health_checks_restart_and_secrets(compose: dict) -> None:
    for name, service in compose["services"].items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    postgres, front = compose["services"]["postgres"], compose["services"]["front"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert postgres["secrets"] == ["postgres_password"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert set(compose["secrets"]) == {"orthanc.secret.json", "postgres_password"}
    assert set(compose["volumes"]) == {"orthanc-storage", "postgres-data"}
    assert "secrets" not in front  # nginx holds no credentials: Orthanc checks them
    assert front["healthcheck"]["test"][0] == "CMD"
    assert f"http://{docker.HEALTH_LISTEN}/health" in front["healthcheck"]["test"]


def test_compose_orthanc_nodes_share_database_storage_configuration_and_front_code(
        compose: dict) -> None:
    found = nodes(compose)
    assert tuple(found) == docker.ORTHANC_NODES and len(found) >= 2
    identifiers = set()
    for name, node in found.items():
        assert node["healthcheck"]["test"] == ["CMD", "/probes/test-aliveness.py"], name
        assert node["depends_on"] == {"postgres": {"condition": "service_healthy"}}, name
        env = node["environment"]
        assert env["DICOM_WEB_PLUGIN_ENABLED"] == env["POSTGRESQL_PLUGIN_ENABLED"] == "true"
        assert env["PYTHON_PLUGIN_ENABLED"] == "true"  # the request filter, QIDO-RS
        assert env["TCP_NODELAY"] == "1"
        identifiers.add(env["ORTHANC__DATABASE_SERVER_IDENTIFIER"])
        assert node["secrets"] == ["orthanc.secret.json"], name  # one configuration for all
        assert node["volumes"] == ["${VINDR_STORAGE_DIR:-orthanc-storage}:/var/lib/orthanc/db",
                                   f"./front/plugin:{docker.CONTAINER_PLUGIN}:ro"]
    assert len(identifiers) == len(found)  # each node its own row in the shared database


def test_compose_publishes_the_front_the_admin_port_on_loopback_and_dicom_per_node(
        compose: dict) -> None:
    front = compose["services"]["front"]
    assert front["ports"] == [
        f"${{VINDR_WEB_BIND:-127.0.0.1}}:${{VINDR_WEB_PORT:-8050}}:{docker.CONTAINER_WEB_PORT}",
        f"127.0.0.1:${{VINDR_HTTP_PORT:-8042}}:{docker.CONTAINER_HTTP_PORT}",
    ]
    assert "./front/nginx.conf:/etc/nginx/nginx.conf:ro" in front["volumes"]
    assert f"./logs:{docker.CONTAINER_LOGS}" in front["volumes"]  # the audit log
    assert front["depends_on"] == {node: {"condition": "service_healthy"}
                                   for node in docker.ORTHANC_NODES}
    for index, (name, node) in enumerate(nodes(compose).items()):
        variable = docker.dicom_port_variable(name)
        published = f"${{VINDR_DICOM_BIND:-127.0.0.1}}:${{{variable}:-{4242 + index}}}"
        # DICOM only: HTTP goes through the front
        assert node["ports"] == [f"{published}:{docker.CONTAINER_DICOM_PORT}"]
    assert docker.dicom_port_variable("orthanc-2") == "VINDR_DICOM_PORT_2"


def test_every_compose_variable_is_written_by_prepare(tmp_path: Path) -> None:
    used = set(re.findall(r"\$\{(\w+)", docker.COMPOSE_TEMPLATE.read_text()))
    env = docker.env_file_text(settings(tmp_path))
    assert used == {line.split("=", 1)[0] for line in env.splitlines()}


def test_docker_front_balances_every_node_and_keeps_the_admin_port_apart(
        compose: dict, project: docker.DockerProject) -> None:
    nginx = nginx_of(project)
    upstream = re.search(r"upstream\s+orthanc\s*\{(.*?)\}", nginx, re.DOTALL)
    assert upstream is not None
    servers = [args.split()[0] for args in directive(upstream.group(1), "server")]
    assert servers == [f"{node}:{docker.CONTAINER_HTTP_PORT}" for node in nodes(compose)]
    for args in directive(upstream.group(1), "server"):
        assert "resolve" in args.split()  # a stopped node does not keep nginx from starting
    assert directive(nginx, "resolver")[0].split()[0] == "127.0.0.11"  # docker's DNS
    assert directive(upstream.group(1), "zone")
    # no idle connections kept to the nodes (each would hold one of Orthanc's HTTP threads)
    assert not directive(upstream.group(1), "keepalive")
    listens = directive(nginx, "listen")
    assert f"{docker.CONTAINER_WEB_PORT} default_server backlog=4096" in listens
    assert str(docker.CONTAINER_HTTP_PORT) in listens and docker.HEALTH_LISTEN in listens
    keys = [args for args in directive(nginx, "proxy_set_header") if "X-Vindr-Front" in args]
    # the front's key on the front's locations, never on the admin's port
    assert keys[-1] == 'X-Vindr-Front ""' and len(set(keys)) == 2


def test_docker_nodes_run_the_front_code_with_the_accounts(project: docker.DockerProject,
                                                            tmp_path: Path) -> None:
    config = json.loads(project.orthanc_secret.read_text())
    assert config["PythonScript"] == f"{docker.CONTAINER_PLUGIN}/start.py"
    plugin = json.loads((project.root / "front/plugin/settings.json").read_text())
    assert plugin["admin"] == "tester" and plugin["dictionary"].startswith(
        str(docker.CONTAINER_PLUGIN))
    script = (project.root / "front/plugin/start.py").read_text()
    assert str(docker.CONTAINER_PLUGIN) in script
    assert plugin["front_key"] in project.nginx_config.read_text()
    accounts.add(project.root, accounts.Account("reader", "reader-password-1"), admin="tester")
    again = docker.prepare(settings(project.root, http_port=18042, dicom_port=14242))
    config = json.loads(again.orthanc_secret.read_text())
    assert config["RegisteredUsers"] == {"reader": "reader-password-1",
                                         "tester": "test-password-1"}
    assert json.loads((project.root / "front/plugin/settings.json").read_text())["roles"] == {
        "reader": "read"}


def test_docker_rotates_the_audit_log_beside_nginx(project: docker.DockerProject) -> None:
    script = project.rotate_script.read_text()
    assert script.rstrip().endswith("exec nginx -c /etc/nginx/nginx.conf")
    assert f"{docker.CONTAINER_LOGS}/audit.log" in script and "kill -USR1" in script
    proc = subprocess.run(["sh", "-n", str(project.rotate_script)], capture_output=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_postgres_takes_the_connections_of_every_node(compose: dict) -> None:
    command = compose["services"]["postgres"]["command"]
    limits = [c.split("=", 1)[1] for c in command if c.startswith("max_connections=")]
    room = int(limits[0]) - len(docker.ORTHANC_NODES) * docker.INDEX_CONNECTIONS_PER_NODE
    assert room >= 10  # psql, pg_isready, a maintenance job


def test_nodes_are_configured_as_several_writers_on_one_database(tmp_path: Path) -> None:
    config = docker.docker_config(settings(tmp_path), "pg-password")
    assert config["PostgreSQL"] == {
        "EnableIndex": True,
        "EnableStorage": False,  # the files stay in the folder every node mounts
        "Host": "postgres",
        "Port": 5432,
        "Database": "orthanc",
        "Username": "orthanc",
        "Password": "pg-password",
        "Lock": False,  # several Orthanc servers on one database
        "TransactionMode": "ReadCommitted",
        "IndexConnectionsCount": docker.INDEX_CONNECTIONS_PER_NODE,
    }
    assert "DatabaseServerIdentifier" not in config  # per node, from the compose file
    assert config["KeepAliveTimeout"] == KEEP_ALIVE_TIMEOUT
    assert config["CheckRevisions"] is False
    # re-sending an instance (a retried upload, nginx's failover) stores it once; no node
    # recycles the shared archive; no node keeps jobs in the shared database
    assert config["OverwriteInstances"] is False
    assert config["MaximumStorageSize"] == config["MaximumPatientCount"] == 0
    assert config["SaveJobs"] is False


def test_prepare_writes_the_project(project: docker.DockerProject, compose: dict,
                                    tmp_path: Path) -> None:
    assert stat.S_IMODE(project.root.stat().st_mode) == 0o700
    for name, spec in compose["secrets"].items():
        assert (project.root / spec["file"]).is_file(), name
    config = json.loads(project.orthanc_secret.read_text())
    assert (config["HttpPort"], config["DicomPort"], config["RemoteAccessAllowed"]) == (
        8042,
        4242,
        True,
    )
    assert config["PostgreSQL"]["Password"] == project.postgres_secret.read_text().strip()
    assert config["RegisteredUsers"] == {"tester": "test-password-1"}
    assert "ExtraMainDicomTags" in config and "Plugins" not in config
    env = dict(line.split("=", 1) for line in project.env_file.read_text().splitlines())
    assert (env["VINDR_WEB_BIND"], env["VINDR_WEB_PORT"], env["VINDR_HTTP_PORT"],
            env["VINDR_DICOM_PORT"], env["VINDR_DICOM_PORT_2"]) == (
        "0.0.0.0", "18050", "18042", "14242", "14243")
    assert env["VINDR_VIEWER_DIR"] == "./front/no-viewer"  # no OHIF build installed
    password = project.postgres_secret.read_text()
    docker.prepare(settings(project.root))
    assert project.postgres_secret.read_text() == password  # kept: the database remembers it


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"http_port": 4243, "dicom_port": 4242}, "orthanc-2 .4243. is the HTTP port"),
     ({"dicom_port": 65535}, "DICOM port of orthanc-2 65536")],
)
def test_prepare_refuses_node_ports_it_cannot_publish(tmp_path: Path, kwargs: dict,
                                                      message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        docker.prepare(settings(tmp_path / "pacs", **kwargs))
    assert not (tmp_path / "pacs").exists()


def test_up_removes_the_services_of_an_older_project(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(docker, "_run", lambda project, *args: calls.append(args) or 0)
    project = docker.DockerProject(tmp_path)
    docker.up(project)
    docker.up(project, background=False)
    assert calls == [("up", "--remove-orphans", "-d", "--wait"),
                     ("up", "--remove-orphans", "--abort-on-container-exit")]


@pytest.mark.skipif(not docker.compose_available(), reason="docker compose is not installed here")
def test_compose_config_accepts_the_project(project: docker.DockerProject) -> None:
    proc = subprocess.run(
        project.command("config", "--format", "json"), capture_output=True, text=True,
        check=False
    )
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    published = {name: [(p["host_ip"], p["published"], p["target"]) for p in s["ports"]]
                 for name, s in services.items() if s.get("ports")}
    assert published == {
        "front": [("0.0.0.0", "18050", 8050), ("127.0.0.1", "18042", 8042)],
        "orthanc-1": [("127.0.0.1", "14242", 4242)],
        "orthanc-2": [("127.0.0.1", "14243", 4242)],
    }


# --- who can reach the PACS (issue 8) -------------------------------------------------------


def test_dicom_is_host_checked_and_no_ae_title_may_store(tmp_path: Path) -> None:
    config = orthanc_config(settings(tmp_path, modalities=(Modality.parse("V@127.0.0.1:1"),)),
                            "1.10.1")
    assert config["DicomCheckModalityHost"] is True
    assert config["DicomAlwaysAllowStore"] is False and config["DicomAlwaysAllowEcho"] is False
    assert settings(tmp_path).listen == "127.0.0.1"
    # `load --method cstore` registers a random AE title for its run (test_pacs_exposure.py)
    assert [m for m in config["DicomModalities"].values() if m["AllowStore"]] == []


def test_a_modality_beyond_loopback_needs_listen(tmp_path: Path) -> None:
    far = (Modality.parse("VIEWER@10.0.0.5:104"),)
    with pytest.raises(SettingsError, match="--listen"):
        settings(tmp_path, modalities=far)
    assert settings(tmp_path, modalities=far, listen="0.0.0.0").listen == "0.0.0.0"
    with pytest.raises(SettingsError, match="listen address"):
        settings(tmp_path, listen="everywhere")


def test_modality_host_names_are_resolved_and_said(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VINDR_DICOM_CONFIG", str(tmp_path / "server.json"))
    notes: list[str] = []
    made = engine.make_settings(tmp_path / "pacs", modalities=["WS@localhost:11112"], notes=notes)
    assert made.modalities[0].host == "127.0.0.1"
    assert notes and "localhost resolved to 127.0.0.1" in notes[0]
    with pytest.raises(SettingsError, match="must be an IP address"):
        settings(tmp_path, modalities=(Modality.parse("WS@localhost:11112"),))
    with pytest.raises(SettingsError, match="does not resolve"):
        engine.make_settings(tmp_path / "pacs", modalities=["WS@no-such-host.invalid:104"])


def test_serve_says_what_the_dicom_port_exposes(tmp_path: Path) -> None:
    notes = " ".join(exposure_notes(settings(tmp_path), "1.10.1"))
    assert "cannot bind its DICOM port" in notes and "no AE title may store" in notes
    assert "only from this machine" in notes


def test_docker_publishes_dicom_on_loopback_unless_listen(tmp_path: Path, compose: dict) -> None:
    for node in nodes(compose).values():
        assert node["ports"][0].startswith("${VINDR_DICOM_BIND:-127.0.0.1}:")
    assert docker.exposure_notes(settings(tmp_path)) == [
        ("DICOM ports 4242 (orthanc-1), 4243 (orthanc-2) are published on 127.0.0.1 only; "
         "no AE title may store but the random one a C-STORE load registers for its run")]
    local = docker.prepare(settings(tmp_path / "local"))
    env = dict(line.split("=", 1) for line in local.env_file.read_text().splitlines())
    assert env["VINDR_DICOM_BIND"] == "127.0.0.1"
    config = json.loads(local.orthanc_secret.read_text())
    assert config["DicomCheckModalityHost"] is False  # docker's bridge hides the caller
    far = docker.prepare(settings(tmp_path / "far", listen="0.0.0.0",
                                  modalities=(Modality.parse("VIEWER@10.0.0.5:104"),)))
    config = json.loads(far.orthanc_secret.read_text())
    assert config["DicomCheckModalityHost"] is True
    assert list(config["DicomModalities"]) == ["VIEWER"]  # no store-enabled AE title
