"""The typer commands, on a throwaway app: serve/stop, load/verify with stored or explicit
credentials, and clear errors with a non-zero exit code."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
import requests
import typer
from typer.testing import CliRunner

from converter.errors import EXIT_UNUSABLE
from pacs_tools import Pacs, free_port, pacs_folder
from server.pacs import docker, processes, supervisor
from vindr_convert import account_commands
from vindr_convert.pacs_commands import VERIFY_CHECKS, register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    account_commands.register(app)
    return app


def invoke(app: typer.Typer, *args: str, stdin: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def table(output: str) -> dict[str, str]:
    """The rows of a rich table printed by a command: first cell -> last cell."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) >= 2 and cells[0]:
            rows[cells[0]] = cells[-1]
    return rows


def assert_verified_clean(output: str, studies: int, instances: int) -> None:
    """verify's table: what was checked, and zero problems of every kind."""
    rows = table(output)
    assert rows.pop("studies checked") == str(studies), output
    assert rows.pop("instances in the manifest") == str(instances), output
    problems = {label: rows.get(label) for label in VERIFY_CHECKS.values()}
    assert problems == dict.fromkeys(VERIFY_CHECKS.values(), "0"), output


def credentials(pacs: Pacs) -> list[str]:
    creds = pacs.settings.credentials
    return ["--url", pacs.connection.url, "--user", creds.username, "--password", creds.password]


def test_load_and_verify_with_explicit_credentials(app: typer.Typer, pacs: Pacs) -> None:
    result = invoke(app, "load", pacs.out, *credentials(pacs), "--workers", "3")
    assert result.exit_code == 0, result.output
    assert "24 objects: 0 sent, 24 already present, 0 replaced, 0 failed, 0 missing" in result.output
    result = invoke(app, "verify", pacs.release, pacs.out, *credentials(pacs))
    assert result.exit_code == 0, result.output
    assert_verified_clean(result.output, studies=4, instances=24)


def test_wrong_password_fails_clearly(app: typer.Typer, pacs: Pacs) -> None:
    args = credentials(pacs)
    args[-1] = "wrong"
    result = invoke(app, "load", pacs.out, *args)
    assert result.exit_code == EXIT_UNUSABLE
    assert "401 Unauthorized" in result.output


def test_folder_without_manifest_fails_clearly(
    app: typer.Typer, pacs: Pacs, tmp_path: Path
) -> None:
    result = invoke(app, "load", tmp_path, *credentials(pacs))
    assert result.exit_code == EXIT_UNUSABLE
    assert "no manifest" in result.output


def test_bad_modality_fails_clearly(app: typer.Typer, tmp_path: Path) -> None:
    result = invoke(
        app, "serve", "--data", tmp_path, "--modality", "VIEWER-10.0.0.5", "--background"
    )
    assert result.exit_code == EXIT_UNUSABLE
    assert "expected AET@HOST:PORT" in result.output


def wait_up(data: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while supervisor.health(data).problem and time.monotonic() < deadline:
        time.sleep(0.1)
    assert supervisor.health(data).problem is None


def test_serve_background_then_accounts_load_verify_stop_without_flags(
    app: typer.Typer, pacs: Pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config" / "server.json"
    monkeypatch.setenv("VINDR_DICOM_CONFIG", str(config))
    data, http_port, dicom_port, web_port = (pacs_folder("cli"), free_port(), free_port(),
                                             free_port())
    result = invoke(
        app, "serve", "--data", data, "--http-port", http_port, "--dicom-port", dicom_port,
        "--web-port", web_port, "--aet", "CLI-PACS", "--modality", "VIEWER@127.0.0.1:11112",
        "--background",
    )  # fmt: skip
    try:
        assert result.exit_code == 0, result.output
        for text in (
            f"http://127.0.0.1:{http_port}/",
            f"http://127.0.0.1:{web_port}/dicom-web/",
            "AET CLI-PACS",
            f"port {dicom_port}",
            str(config),
            "audit log",
        ):
            assert text in result.output
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        stored = json.loads(config.read_text())
        assert stored["url"] == f"http://127.0.0.1:{http_port}"
        assert stored["web_url"] == f"http://127.0.0.1:{web_port}"
        assert stored["username"] and len(stored["password"]) >= 24
        assert stored["password"] not in result.output
        orthanc = json.loads((data / "orthanc.json").read_text())
        assert orthanc["DicomModalities"]["VIEWER"]["Port"] == 11112

        result = invoke(app, "status")
        assert result.exit_code == 0 and "PACS up" in result.output, result.output
        result = invoke(app, "load", pacs.out)
        assert result.exit_code == 0, result.output
        assert "24 objects: 24 sent" in result.output
        result = invoke(app, "verify", pacs.release, pacs.out)
        assert result.exit_code == 0, result.output
        assert_verified_clean(result.output, studies=4, instances=24)

        # an account: added from stdin (never echoed), in effect once the nodes restarted
        front = f"http://127.0.0.1:{web_port}/dicom-web/studies"
        assert requests.get(front, auth=("alice", "alice-password-1"), timeout=30
                            ).status_code == 401
        result = invoke(app, "users", "add", "alice", stdin="alice-password-1\n")
        assert result.exit_code == 2 and "--password-stdin" in result.output
        result = invoke(app, "users", "add", "alice", "--password-stdin",
                        stdin="alice-password-1\n")
        assert result.exit_code == 0 and "account alice added (read)" in result.output
        assert "alice-password-1" not in result.output
        assert stat.S_IMODE((data / "accounts.json").stat().st_mode) == 0o600
        assert "in effect" in result.output
        wait_up(data)
        answer = requests.get(front, auth=("alice", "alice-password-1"), timeout=30)
        assert answer.status_code == 200 and len(answer.json()) == 4
        result = invoke(app, "users", "add", "bob", "--password-stdin", stdin="short\n")
        assert result.exit_code == 2 and "at least 12 characters" in result.output
        result = invoke(app, "users", "list")
        assert "alice" in result.output and "search, retrieve, view" in result.output
        assert "alice-password-1" not in result.output
        result = invoke(app, "users", "remove", "alice")
        assert result.exit_code == 0 and "in effect" in result.output
        wait_up(data)
        assert requests.get(front, auth=("alice", "alice-password-1"), timeout=30
                            ).status_code == 401
    finally:
        result = invoke(app, "stop")
    assert result.exit_code == 0, result.output
    result = invoke(app, "stop")
    assert result.exit_code == 1
    assert "no PACS was running" in result.output


@pytest.mark.skipif(docker.compose_available() and docker.engine_available(), reason="docker works here")
def test_docker_engine_without_docker_fails_clearly(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VINDR_DICOM_CONFIG", str(tmp_path / "server.json"))
    result = invoke(app, "serve", "--engine", "docker", "--data", tmp_path / "pacs", "--background")
    assert result.exit_code == EXIT_UNUSABLE
    assert "docker compose cannot run here" in result.output
    assert (tmp_path / "pacs" / "secrets" / "orthanc.secret.json").is_file()  # project prepared


def test_serve_in_the_foreground_runs_everything_and_stops_it_all(tmp_path: Path) -> None:
    """`serve` (no --background): Orthanc and the front answer; SIGTERM stops every part and
    exits 0."""
    import os
    import signal
    import subprocess
    import sys

    data = pacs_folder("foreground")
    http, dicom, web = free_port(), free_port(), free_port()
    env = dict(os.environ, VINDR_DICOM_CONFIG=str(tmp_path / "server.json"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vindr_convert", "serve", "--data", str(data), "--http-port",
         str(http), "--dicom-port", str(dicom), "--web-port", str(web)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "DICOM " in line or not line:
                break
        text = "".join(lines)
        assert "PACS ready" in text and f"http://127.0.0.1:{web}/dicom-web/" in text, text
        stored = json.loads((tmp_path / "server.json").read_text())
        admin = (stored["username"], stored["password"])
        assert requests.get(f"http://127.0.0.1:{web}/dicom-web/studies", auth=admin,
                            timeout=30).json() == []
        parts = [p.pid for p in supervisor.health(data).parts]
        assert len(parts) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(processes.alive(pid) for pid in parts)
    assert not supervisor.health(data).running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{web}/dicom-web/studies", timeout=5)
