"""The viewer's same-origin gateway against the real Orthanc: what OHIF's requests need.

The static files are a two-file stand-in for OHIF's build (index.html, app-config.js); the
browser test (test_viewer_browser.py) runs the real build.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pacs_tools import Pacs, free_port, running_gateway
from server.front.viewer import Gateway, viewer_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    dist = tmp_path_factory.mktemp("ohif")
    (dist / "index.html").write_text("<html>OHIF stand-in</html>")
    (dist / "app-config.js").write_text("window.config = {};  // replaced by the gateway")
    (dist / "app.bundle.js").write_text("console.log('bundle');")
    with running_gateway(viewer_settings(dist, pacs.connection, port=free_port())) as server:
        yield server


def _studies(pacs: Pacs) -> list[dict]:
    """Every study the PACS holds (other tests add some), asked directly with credentials."""
    answer = requests.get(pacs.connection.url + "/dicom-web/studies",
                          auth=pacs.connection.session().auth)
    answer.raise_for_status()
    return answer.json()


def test_static_files_and_single_page_fallback(gateway: Gateway) -> None:
    assert requests.get(gateway.url + "/").text == "<html>OHIF stand-in</html>"
    assert requests.get(gateway.url + "/app.bundle.js").text == "console.log('bundle');"
    spa = requests.get(gateway.url + "/viewer?StudyInstanceUIDs=1.2.3")
    assert spa.status_code == 200 and "OHIF stand-in" in spa.text
    assert requests.get(gateway.url + "/missing.js").status_code == 404
    assert requests.get(gateway.url + "/../../etc/passwd").text == "<html>OHIF stand-in</html>"


def test_app_config_points_at_the_gateway(gateway: Gateway) -> None:
    config = requests.get(gateway.url + "/app-config.js")
    assert config.headers["Content-Type"].startswith("text/javascript")
    text = config.text
    assert "window.config" in text and "replaced by the gateway" not in text
    assert "qidoRoot: '/dicom-web'" in text and "wadoRoot: '/dicom-web'" in text
    assert "supportsWildcard: true" in text  # the gateway decodes what OHIF encodes


def test_no_credentials_needed_and_none_leaked(gateway: Gateway, pacs: Pacs) -> None:
    direct = requests.get(pacs.connection.url + "/dicom-web/studies")
    assert direct.status_code == 401  # the PACS itself wants them
    answer = requests.get(gateway.url + "/dicom-web/studies")
    assert answer.status_code == 200
    assert len(answer.json()) == len(_studies(pacs)) >= len(pacs.studies)
    assert "WWW-Authenticate" not in answer.headers


def test_encoded_wildcards_and_field_lists_are_decoded(gateway: Gateway, pacs: Pacs) -> None:
    """OHIF sends ``PatientID=VINDR-%2A`` and ``includefield=00081030%2C00100020``."""
    encoded = "/dicom-web/studies?PatientID=VINDR-%2A&includefield=00081030%2C00101010"
    # Debian's Orthanc 1.10 answers this directly with no study at all (the trap the
    # gateway removes); whatever the PACS version, through the gateway it finds them all.
    found = requests.get(gateway.url + encoded).json()
    assert len(found) == len(_studies(pacs)) >= len(pacs.studies)
    assert all("00081030" in study for study in found)  # both include fields honoured
    assert any("00101010" in study for study in found)  # (PatientAge: absent from some exams)


def test_bulk_data_uris_are_same_origin(gateway: Gateway, pacs: Pacs) -> None:
    study = pacs.studies[0]
    metadata = requests.get(f"{gateway.url}/dicom-web/studies/{study.study_uid}/metadata").json()
    uris = [value["BulkDataURI"] for item in metadata for value in item.values()
            if isinstance(value, dict) and "BulkDataURI" in value]
    assert uris and all(uri.startswith(gateway.url + "/dicom-web/") for uri in uris)
    pixels = requests.get(uris[0], headers={"Accept": "multipart/related; "
                                            "type=\"application/octet-stream\"; transfer-syntax=*"})
    assert pixels.status_code == 200 and len(pixels.content) > 1000


def test_frames_through_the_gateway(gateway: Gateway, pacs: Pacs) -> None:
    study = pacs.studies[0]
    series = requests.get(f"{gateway.url}/dicom-web/studies/{study.study_uid}/series"
                          "?Modality=MG").json()
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = requests.get(f"{gateway.url}/dicom-web/studies/{study.study_uid}/series/"
                             f"{series_uid}/instances").json()
    sop = instances[0]["00080018"]["Value"][0]
    frame = requests.get(
        f"{gateway.url}/dicom-web/studies/{study.study_uid}/series/{series_uid}/instances/"
        f"{sop}/frames/1",
        headers={"Accept": "multipart/related; type=\"application/octet-stream\"; "
                           "transfer-syntax=*"})
    assert frame.status_code == 200
    assert frame.headers["Content-Type"].startswith("multipart/related")


def test_pacs_down_is_a_clear_502(pacs: Pacs, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("x")
    (tmp_path / "app-config.js").write_text("x")
    from server.client import Connection

    dead = Connection(f"http://127.0.0.1:{free_port()}", "u", "p")
    with running_gateway(viewer_settings(tmp_path, dead, port=free_port())) as server:
        answer = requests.get(server.url + "/dicom-web/studies")
        assert answer.status_code == 502 and "PACS unreachable" in answer.text
