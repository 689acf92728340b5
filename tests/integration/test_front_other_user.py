"""The PACS tried as another user of this machine would try it (``nobody``, through
``setpriv``), against every port its processes listen on: without an account each HTTP port
answers 401, each DICOM port refuses the association, PostgreSQL refuses the login; with the
read-only account's password, storing and deleting are refused and the relays of Orthanc's
admin API reach nothing; Orthanc is still up afterwards.

Runs for the session's PACS (one node, SQLite) and for a two-node PostgreSQL cluster. Needs
root (to act as another user); as another user the suite cannot switch, and says so.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from converter.manifest import read_manifest
from pacs_tools import READER, SERVER_AET, Pacs, Running, pacs_folder, pacs_settings, running_pacs
from server.client import OrthancClient
from server.pacs import supervisor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OTHER = "nobody"
PROBE = textwrap.dedent("""
    import json, sys, urllib.request, urllib.error, base64
    ports, account, paths = json.loads(sys.argv[1])
    def ask(method, url, headers=None, data=None):
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code
        except Exception as error:
            return repr(error)
    found = {}
    for port in ports:
        base = f"http://127.0.0.1:{port}"
        found[port] = {"anonymous": [ask("GET", base + p) for p in paths]}
    if account:
        token = base64.b64encode(account.encode()).decode()
        auth = {"Authorization": "Basic " + token}
        front = ports[0]
        base = f"http://127.0.0.1:{front}"
        found["with account"] = {
            "stow": ask("POST", base + "/dicom-web/studies", dict(auth, **{
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}),
                b"--x\\r\\nContent-Type: application/dicom\\r\\n\\r\\n" + sys.stdin.buffer.read()
                + b"\\r\\n--x--\\r\\n"),
            "delete": ask("DELETE", base + "/dicom-web/studies/" + paths[-1].rsplit("/", 1)[-1],
                          auth),
            "override": ask("POST", base + "/dicom-web/studies/" + paths[-1].rsplit("/", 1)[-1],
                            dict(auth, **{"X-HTTP-Method-Override": "DELETE"})),
            "shutdown": ask("POST", base + "/dicom-web/../tools/shutdown", auth),
            "orthanc port": [ask("GET", f"http://127.0.0.1:{p}/dicom-web/studies", auth)
                             for p in ports[1:]],
        }
    print(json.dumps(found))
""")


def as_other(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``args`` run as :data:`OTHER` (no groups), from /."""
    account = pwd.getpwnam(OTHER)
    return subprocess.run(["setpriv", f"--reuid={account.pw_uid}",
                           f"--regid={account.pw_gid}", "--clear-groups", "--", *args],
                          input=stdin, capture_output=True, timeout=300, cwd="/", check=False)


@pytest.fixture(scope="module", autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root (setpriv): CI runs as root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing")


def listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports these processes listen on (from /proc: no port is forgotten)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    ports = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                ports.add(inodes[target[8:-1]])
    return ports


def pacs_pids(running: Running) -> set[int]:
    """The PACS's parts and their children (nginx's workers, PostgreSQL's backends)."""
    parts = {p.pid for p in supervisor.health(running.settings.data_dir).parts if p.pid}
    pids = set(parts)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in parts:  # in a part's session
                pids.add(int(entry.name))
    return pids


def check_as_another_user(running: Running, out: Path) -> None:
    settings = running.settings
    front = settings.web_port
    http = [settings.node_ports(i)[0] for i in range(settings.nodes)]
    dicom = [settings.node_ports(i)[1] for i in range(settings.nodes)]
    entries = read_manifest(out)
    study = entries[0].study_uid
    ports = listening_ports(pacs_pids(running))
    index = ports - {front, *http, *dicom}
    assert len(index) == (1 if settings.index == "postgresql" else 0), (ports, index)
    assert {front, *http, *dicom} <= ports

    paths = ["/", "/dicom-web/studies", "/system", "/app/explorer.html",
             f"/dicom-web/studies/{study}"]
    probe = as_other(["/usr/bin/python3", "-c", PROBE, json.dumps(
        [[front, *http], f"{READER.name}:{READER.password}", paths])],
        stdin=entries[0].file(out).read_bytes())
    assert probe.returncode == 0, probe.stderr.decode()
    found = json.loads(probe.stdout)
    for port in [front, *http]:
        assert found[str(port)]["anonymous"] == [401] * len(paths), (port, found)
    account = found["with account"]
    assert account["stow"] == 403 and account["delete"] in (403, 405)
    assert account["override"] in (403, 405) and account["shutdown"] == 400
    assert account["orthanc port"] == [403] * len(http)  # accounts only through the front

    # DICOM has no accounts: an AE title registered at 127.0.0.1 (`serve --modality`) is
    # usable by any user of this machine (README); serve registers none of its own, and no
    # other AE title gets an association
    registered = {m.aet for m in settings.modalities}
    callers = [aet for aet in ("ANYONE", "VINDR-LOADER", "DCMTK") if aet not in registered]
    for port in dicom:
        for calling in callers:
            echo = as_other(["/usr/bin/echoscu", "-aet", calling, "-aec", SERVER_AET,
                             "127.0.0.1", str(port)])
            assert echo.returncode != 0, (port, calling, echo.stdout)
            assert b"Association Rejected" in echo.stdout + echo.stderr, echo.stderr
        store = as_other(["/usr/bin/storescu", "-aet", "VINDR-LOADER", "-aec", SERVER_AET,
                          "127.0.0.1", str(port), str(entries[0].file(out))])
        assert store.returncode != 0
    for port in index:  # PostgreSQL wants a password nobody here has
        psql = as_other(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "orthanc",
                         "-d", "orthanc", "-w", "-c", "select 1"])
        assert psql.returncode != 0 and b"password" in psql.stderr, psql.stderr
    client = OrthancClient.connect(running.admin)
    assert client.system().version  # Orthanc is still up
    assert client.find("Study", {"StudyInstanceUID": study})  # and nothing was deleted


def test_the_session_pacs_as_another_user(pacs: Pacs) -> None:
    readable_out = pacs_folder("out")  # nobody must read the file it tries to store
    copy = readable_out / "copy"
    shutil.copytree(pacs.out, copy)
    for path in [readable_out, *readable_out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    check_as_another_user(pacs.running, copy)


@pytest.fixture(scope="module")
def cluster(pacs: Pacs) -> Iterator[tuple[Running, Path]]:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("PostgreSQL's server is not installed")
    from server.transfer.load import load

    with running_pacs(pacs_settings(index="postgresql", nodes=2)) as running:
        assert load(pacs.out, running.admin, nodes=running.settings.node_urls).ok
        readable_out = pacs_folder("out")
        copy = readable_out / "copy"
        shutil.copytree(pacs.out, copy)
        for path in [readable_out, *readable_out.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield running, copy


def test_a_two_node_postgresql_cluster_as_another_user(cluster: tuple[Running, Path]) -> None:
    running, out = cluster
    check_as_another_user(running, out)
