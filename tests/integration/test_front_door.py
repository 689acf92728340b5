"""The front door against the session's PACS: who gets in, what they may do, what is logged,
what OHIF's requests need, and what a malformed or hostile request gets.

The viewer's files are a three-file stand-in for OHIF's build (index.html, app-config.js, a
bundle), linked as ``vindr-convert view`` links the real one; the browser test
(test_viewer_browser.py) runs the real build.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from converter.manifest import read_manifest
from pacs_tools import READER, WRITER, Pacs
from server.front import viewer
from server.pacs.layout import DataLayout

pytestmark = pytest.mark.integration


def auth(account=READER) -> tuple[str, str]:
    return (account.name, account.password)


def raw(pacs: Pacs, request: bytes, timeout: float = 10) -> bytes:
    """``request`` sent as is to the front; what comes back before it closes (or times out)."""
    url = urllib.parse.urlsplit(pacs.front().url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


@pytest.fixture(scope="module")
def front(pacs: Pacs) -> str:
    return pacs.front().url


@pytest.fixture(scope="module")
def stand_in(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stand-in OHIF build served by the front (then unlinked)."""
    from pacs_tools import pacs_folder

    dist = pacs_folder("ohif")
    dist.chmod(0o755)
    (dist / "index.html").write_text("<html>OHIF stand-in</html>")
    (dist / "app-config.js").write_text("window.config = {};  // replaced by the front")
    (dist / "app.bundle.js").write_text("console.log('bundle');")
    for path in dist.iterdir():
        path.chmod(0o644)
    viewer.enable(pacs.settings.data_dir, dist)
    yield dist
    viewer.disable(pacs.settings.data_dir)


def _studies(pacs: Pacs) -> list[dict]:
    """Every study the PACS holds (other tests add some), asked of Orthanc as the admin."""
    answer = requests.get(pacs.connection.url + "/dicom-web/studies",
                          auth=pacs.connection.session().auth, timeout=60)
    answer.raise_for_status()
    return answer.json()


# --- who gets in -----------------------------------------------------------------------------


def test_nothing_without_an_account(pacs: Pacs, front: str, stand_in: Path) -> None:
    for target in ("/dicom-web/studies", f"/dicom-web/studies/{pacs.studies[0].study_uid}"
                   "/metadata", "/", "/app-config.js", "/wado?requestType=WADO"):
        answer = requests.get(front + target, timeout=30)
        assert answer.status_code == 401, target
        assert answer.headers["WWW-Authenticate"].startswith("Basic")  # the browser asks
    wrong = requests.get(front + "/dicom-web/studies", auth=(READER.name, "wrong-password-1"),
                         timeout=30)
    assert wrong.status_code == 401


def test_accounts_only_through_the_front(pacs: Pacs) -> None:
    """Orthanc's own port answers the admin only: an account there gets 403 (so that every
    account's request is in the audit log)."""
    for account in (READER, WRITER):
        answer = requests.get(pacs.connection.url + "/dicom-web/studies", auth=auth(account),
                              timeout=30)
        assert answer.status_code == 403
    assert requests.get(pacs.connection.url + "/system", auth=pacs.connection.session().auth,
                        timeout=30).status_code == 200


def test_reader_searches_and_retrieves(pacs: Pacs, front: str) -> None:
    found = requests.get(front + "/dicom-web/studies", auth=auth(), timeout=60)
    assert found.status_code == 200
    assert len(found.json()) == len(_studies(pacs)) >= len(pacs.studies)
    assert "WWW-Authenticate" not in found.headers
    study = pacs.studies[0]
    metadata = requests.get(f"{front}/dicom-web/studies/{study.study_uid}/metadata",
                            auth=auth(), timeout=60)
    assert metadata.status_code == 200 and len(metadata.json()) >= 4


def test_a_read_only_account_cannot_store_nor_delete(pacs: Pacs, front: str) -> None:
    study = pacs.studies[0]
    entry = next(e for e in read_manifest(pacs.out) if e.study_uid == study.study_uid)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + entry.file(pacs.out).read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    stow = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    assert requests.post(front + "/dicom-web/studies", data=body, headers=stow, auth=auth(),
                         timeout=60).status_code == 403
    study_id = pacs.client.find("Study", {"StudyInstanceUID": study.study_uid})[0]["ID"]
    for method, url, headers in (
            ("DELETE", f"{front}/dicom-web/studies/{study.study_uid}", {}),
            ("POST", f"{front}/dicom-web/studies/{study.study_uid}?_method=DELETE", {}),
            ("POST", f"{front}/dicom-web/studies/{study.study_uid}",
             {"X-HTTP-Method-Override": "DELETE"}),
            ("GET", f"{pacs.connection.url}/studies/{study_id}?_method=DELETE", {})):
        answer = requests.request(method, url, headers=headers, auth=auth(), timeout=30)
        assert answer.status_code in (403, 405), (method, url, headers)
    assert pacs.client.find("Study", {"StudyInstanceUID": study.study_uid})  # still there
    # a write account stores through the front (STOW-RS), as the manifest's bytes
    answer = requests.post(front + "/dicom-web/studies", data=body, headers=stow,
                           auth=auth(WRITER), timeout=60)
    assert answer.status_code == 200, answer.text


def test_traversal_and_method_overrides_reach_nothing(pacs: Pacs, front: str) -> None:
    """The relays of Orthanc's admin API the old gateway allowed (issue 14), tried as the
    reader: refused at the front (400) or by Orthanc's filter (403); Orthanc still up."""
    study = pacs.studies[0]
    study_id = pacs.client.find("Study", {"StudyInstanceUID": study.study_uid})[0]["ID"]
    attempts = [
        b"POST /dicom-web/../tools/shutdown HTTP/1.1",
        b"POST /dicom-web/%2e%2e/tools/shutdown HTTP/1.1",
        b"POST /dicom-web/..%2Ftools/shutdown HTTP/1.1",
        b"GET /dicom-web/..%2F..%2Finstances HTTP/1.1",
        b"GET /dicom-web//../system HTTP/1.1",
        b"POST /dicom-web/studies/../tools/create-dicom HTTP/1.1",
        f"GET /dicom-web/../studies/{study_id}?_method=DELETE HTTP/1.1".encode(),
        f"POST /dicom-web/../studies/{study_id} HTTP/1.1\r\nX-HTTP-Method-Override: DELETE"
        .encode(),
        b"GET /dicom-web/servers HTTP/1.1",
        b"GET /wado/../system HTTP/1.1",
        b"GET /tools/find HTTP/1.1",
        b"GET /system HTTP/1.1",
        b"GET /app/explorer.html HTTP/1.1",
    ]
    token = requests.auth._basic_auth_str(*auth())  # type: ignore[attr-defined]
    host = urllib.parse.urlsplit(front).netloc.encode()
    for line in attempts:
        answer = raw(pacs, line + b"\r\nHost: " + host + b"\r\nAuthorization: "
                     + token.encode() + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        # refused, or (outside /dicom-web and /wado) the viewer's own page: never Orthanc
        viewer_page = status_of(answer) == 200 and b"Content-Type: text/html" in answer
        assert status_of(answer) in (400, 403, 404, 405) or viewer_page, (line, answer[:200])
        assert b"application/json" not in answer, line
    assert pacs.client.system().version  # Orthanc is still up
    assert pacs.client.find("Study", {"StudyInstanceUID": study.study_uid})


def test_a_foreign_host_is_refused(pacs: Pacs, front: str) -> None:
    """A web page that rebinds its own name to 127.0.0.1 names itself in Host: refused."""
    for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io"):
        answer = requests.get(front + "/dicom-web/studies", auth=auth(),
                              headers={"Host": host}, timeout=30)
        assert answer.status_code == 421, host
    answer = requests.get(front.replace("127.0.0.1", "localhost") + "/dicom-web/studies",
                          auth=auth(), timeout=30)
    assert answer.status_code == 200


# --- what is logged ------------------------------------------------------------------------------


def test_every_request_is_in_the_audit_log(pacs: Pacs, front: str) -> None:
    log = DataLayout.of(pacs.settings.data_dir).audit_log
    study = pacs.studies[1]
    marker = f"audit-{uuid.uuid4().hex[:8]}"
    requests.get(f"{front}/dicom-web/studies/{study.study_uid}/metadata?x={marker}",
                 auth=auth(), timeout=60)
    requests.get(f"{front}/dicom-web/studies?PatientID={marker}", timeout=30)  # no account
    requests.post(f"{front}/dicom-web/studies?y={marker}", data=b"", auth=auth(), timeout=30)
    deadline = time.monotonic() + 5
    lines: list[dict] = []
    while len(lines) < 3 and time.monotonic() < deadline:
        lines = [json.loads(line) for line in log.read_text().splitlines() if marker in line]
        time.sleep(0.1)
    by_status = {line["status"]: line for line in lines}
    retrieve = by_status[200]
    assert retrieve["account"] == READER.name and retrieve["method"] == "GET"
    assert retrieve["study"] == study.study_uid and retrieve["bytes_sent"] > 1000
    assert retrieve["client"] == "127.0.0.1" and retrieve["node"]
    assert by_status[401]["account"] == ""
    assert by_status[403]["account"] == READER.name and by_status[403]["method"] == "POST"
    assert (log.stat().st_mode & 0o777) == 0o600


# --- what OHIF and dicomweb-client need ------------------------------------------------------


def test_viewer_files_after_login_with_the_single_page_fallback(front: str,
                                                                stand_in: Path) -> None:
    assert requests.get(front + "/", auth=auth(), timeout=30).text == "<html>OHIF stand-in</html>"
    assert requests.get(front + "/app.bundle.js", auth=auth(),
                        timeout=30).text == "console.log('bundle');"
    spa = requests.get(front + "/viewer?StudyInstanceUIDs=1.2.3", auth=auth(), timeout=30)
    assert spa.status_code == 200 and "OHIF stand-in" in spa.text
    assert requests.get(front + "/missing.js", auth=auth(), timeout=30).status_code == 404
    config = requests.get(front + "/app-config.js", auth=auth(), timeout=30)
    assert config.headers["Content-Type"].startswith("text/javascript")
    assert "replaced by the front" not in config.text and "window.config" in config.text
    assert "qidoRoot: '/dicom-web'" in config.text and "wadoRoot: '/dicom-web'" in config.text
    assert requests.post(front + "/", auth=auth(), timeout=30).status_code in (403, 405)


def test_encoded_wildcards_and_field_lists_are_decoded(pacs: Pacs, front: str) -> None:
    """OHIF sends ``PatientID=VINDR-%2A`` and ``includefield=00081030%2C00100020``; Debian's
    Orthanc decodes neither, the front's QIDO does."""
    encoded = "/dicom-web/studies?PatientID=VINDR-%2A&includefield=00081030%2C00101010"
    found = requests.get(front + encoded, auth=auth(), timeout=60).json()
    assert len(found) == len(_studies(pacs)) >= len(pacs.studies)
    assert all("00081030" in study for study in found)  # both include fields honoured
    assert any("00101010" in study for study in found)  # (PatientAge: absent from some exams)


def test_bulk_data_uris_point_at_the_front(pacs: Pacs, front: str) -> None:
    study = pacs.studies[0]
    metadata = requests.get(f"{front}/dicom-web/studies/{study.study_uid}/metadata",
                            auth=auth(), timeout=60).json()
    uris = [value["BulkDataURI"] for item in metadata for value in item.values()
            if isinstance(value, dict) and "BulkDataURI" in value]
    assert uris and all(uri.startswith(front + "/dicom-web/") for uri in uris)
    pixels = requests.get(uris[0], auth=auth(), timeout=60, headers={
        "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    assert pixels.status_code == 200 and len(pixels.content) > 1000


def test_frames_and_wado_uri_through_the_front(pacs: Pacs, front: str) -> None:
    study = pacs.studies[0]
    series = requests.get(f"{front}/dicom-web/studies/{study.study_uid}/series?Modality=MG",
                          auth=auth(), timeout=60).json()
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = requests.get(f"{front}/dicom-web/studies/{study.study_uid}/series/"
                             f"{series_uid}/instances", auth=auth(), timeout=60).json()
    sop = instances[0]["00080018"]["Value"][0]
    frame = requests.get(
        f"{front}/dicom-web/studies/{study.study_uid}/series/{series_uid}/instances/"
        f"{sop}/frames/1", auth=auth(), timeout=60,
        headers={"Accept": 'multipart/related; type="application/octet-stream"; '
                           "transfer-syntax=*"})
    assert frame.status_code == 200
    assert frame.headers["Content-Type"].startswith("multipart/related")
    wado = requests.get(f"{front}/wado", auth=auth(), timeout=60, params={
        "requestType": "WADO", "studyUID": study.study_uid, "seriesUID": series_uid,
        "objectUID": sop, "contentType": "application/dicom"})  # '/' sent as %2F
    assert wado.status_code == 200 and wado.content[128:132] == b"DICM"


# --- malformed and slow clients ------------------------------------------------------------


def test_malformed_requests_get_a_4xx(pacs: Pacs, front: str) -> None:
    token = requests.auth._basic_auth_str(*auth()).encode()  # type: ignore[attr-defined]
    host = urllib.parse.urlsplit(front).netloc.encode()
    head = b"Host: " + host + b"\r\nAuthorization: " + token + b"\r\n"
    cases = [
        b"GET /dicom-web/studies?limit=%C2%B2 HTTP/1.1\r\n" + head + b"\r\n",
        b"GET /dicom-web/studies?PatientName=%FF%FE HTTP/1.1\r\n" + head + b"\r\n",
        b"POST /dicom-web/studies HTTP/1.1\r\n" + head + b"Content-Length: abc\r\n\r\n",
        b"GET /dicom-web/studies?\xff\xfe=1 HTTP/1.1\r\n" + head + b"\r\n",
        b"GET /dicom-web/stud\x00ies HTTP/1.1\r\n" + head + b"\r\n",
        b"BREW /dicom-web/studies HTTP/1.1\r\n" + head + b"\r\n",
        b"GET /dicom-web/studies?limit=10&offset=x HTTP/1.1\r\n" + head + b"\r\n",
        b"GET " + b"/dicom-web/studies?PatientID=" + b"A" * 40000 + b" HTTP/1.1\r\n" + head
        + b"\r\n",
    ]
    for request in cases:
        answer = raw(pacs, request)
        assert 400 <= status_of(answer) < 500, (request[:80], answer[:200])
    # an HTTP version nobody speaks: the status made for it, not a dropped connection
    answer = raw(pacs, b"GET /dicom-web/studies HTTP/9.9\r\n" + head + b"\r\n")
    assert status_of(answer) == 505
    # a body shorter than its Content-Length: the front gives up on it and says so
    started = time.monotonic()
    answer = raw(pacs, b"POST /dicom-web/studies HTTP/1.1\r\n" + head
                 + b"Content-Length: 100\r\n\r\nshort", timeout=60)
    assert status_of(answer) in (400, 408) or answer == b"", answer[:200]
    assert time.monotonic() - started < 45
    assert pacs.client.system().version


def test_idle_and_half_sent_connections_are_closed(pacs: Pacs, front: str) -> None:
    """300 connections that send half a request and wait hold nothing for long: the front
    closes them all after its header timeout (10 s)."""
    url = urllib.parse.urlsplit(front)
    sockets = []
    for _ in range(300):
        sock = socket.create_connection((url.hostname, url.port), timeout=30)
        sock.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sockets.append(sock)
    try:
        # meanwhile the front serves others at once
        assert requests.get(front + "/dicom-web/studies?limit=1", auth=auth(),
                            timeout=10).status_code == 200
        deadline = time.monotonic() + 30
        closed = 0
        for sock in sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock.recv(1024)  # b"" (closed) or a 408 before the close
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_nodes_down_is_a_clear_502() -> None:
    """A front whose nodes do not answer says so (502), holding no credential of its own."""
    from pacs_tools import free_port, pacs_folder
    from server.front import files as front_files
    from server.front import nginx
    from server.pacs import processes, supervisor

    layout = DataLayout.of(pacs_folder("front"))
    account = processes.service_account("orthanc")
    for folder in (layout.root, layout.front, layout.logs):
        processes.make_private(folder, account)
    port = free_port()
    config = front_files.native_front(layout, listen=[f"127.0.0.1:{port}"],
                                      hosts=["127.0.0.1"], nodes=[f"127.0.0.1:{free_port()}"],
                                      front_key="k")
    front_files.write_front_config(layout, config)
    processes.give(layout.root, account, tree=True)
    assert "Authorization" not in nginx.render(config)  # it forwards the client's own
    process = processes.start(
        [str(supervisor.NGINX), "-p", str(layout.front), "-c", str(layout.front_config),
         "-e", str(layout.front_error_log)], name="front", log=layout.logs / "console.log",
        account=account)
    try:
        processes.wait_until(lambda: processes.accepts("127.0.0.1", port), process, 15)
        answer = requests.get(f"http://127.0.0.1:{port}/dicom-web/studies", auth=auth(),
                              timeout=30)
        assert answer.status_code == 502
    finally:
        process.stop()


def test_a_repeated_search_sees_what_was_stored_and_deleted_since(pacs: Pacs, front: str) -> None:
    """The front reuses a search's answer only while nothing was stored or deleted."""
    import io

    from pydicom import examples
    from pydicom.uid import generate_uid

    patient = f"VINDR-CACHE-{uuid.uuid4().hex[:8]}"
    url = f"{front}/dicom-web/studies?PatientID={patient}"

    def found() -> list[str]:
        answer = requests.get(url, auth=auth(), timeout=60)
        answer.raise_for_status()
        return [item["0020000D"]["Value"][0] for item in answer.json()]

    assert found() == [] and found() == []  # the second from the answer cache
    ds = examples.ct
    ds.PatientID, ds.StudyInstanceUID = patient, generate_uid()
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    admin = pacs.connection.session()
    stored = admin.post(pacs.connection.url + "/instances", data=buffer.getvalue(), timeout=60)
    stored.raise_for_status()
    try:
        assert found() == [ds.StudyInstanceUID]
        assert found() == [ds.StudyInstanceUID]
    finally:
        admin.delete(f"{pacs.connection.url}/studies/{stored.json()['ParentStudy']}",
                     timeout=60).raise_for_status()
    assert found() == []
