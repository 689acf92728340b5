"""Nothing leaked: every DICOM caller is checked by AE title AND IP address, the store-enabled
loader AE title works from 127.0.0.1 only, nothing beyond loopback gets an association, and
the native storage is private (folders 700, files 600)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from converter.manifest import read_manifest
from pacs_tools import ELSEWHERE_AET, ELSEWHERE_HOST, PYNETDICOM_AET, SERVER_AET, Pacs
from server.pacs import orthanc as native
from server.pacs.settings import DEFAULT_LOADER_AET

pytestmark = pytest.mark.integration


def associate(pacs: Pacs, calling: str, source: str, contexts=(Verification,), host="127.0.0.1"):
    """An association to the PACS from ``source`` (a local address) as ``calling``."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate(host, pacs.dicom_port, ae_title=SERVER_AET, bind_address=(source, 0))


def echo_ok(pacs: Pacs, calling: str, source: str, host: str = "127.0.0.1") -> bool:
    assoc = associate(pacs, calling, source, host=host)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return int(getattr(status, "Status", -1)) == 0


def test_written_config_checks_hosts(pacs: Pacs) -> None:
    config = json.loads(native.Layout(pacs.settings.data_dir).config.read_text())
    assert config["DicomCheckModalityHost"] is True
    assert config["RemoteAccessAllowed"] is False
    loader = config["DicomModalities"][DEFAULT_LOADER_AET]
    assert (loader["Host"], loader["AllowStore"]) == ("127.0.0.1", True)


def test_a_known_aet_from_another_address_is_refused(pacs: Pacs) -> None:
    """ELSEWHERE is registered at 127.0.0.2: refused from 127.0.0.1, accepted from 127.0.0.2."""
    assert not echo_ok(pacs, ELSEWHERE_AET, "127.0.0.1")
    assert echo_ok(pacs, ELSEWHERE_AET, ELSEWHERE_HOST)
    assert echo_ok(pacs, PYNETDICOM_AET, "127.0.0.1")
    assert not echo_ok(pacs, PYNETDICOM_AET, ELSEWHERE_HOST)


def test_the_loader_aet_stores_from_127_0_0_1_only(pacs: Pacs, tmp_path: Path) -> None:
    entry = next(e for e in read_manifest(pacs.out) if e.kind == "MG")
    for source, allowed in (("127.0.0.3", False), ("127.0.0.1", True)):
        assoc = associate(pacs, DEFAULT_LOADER_AET, source, contexts=(entry.sop_class_uid,))
        if not assoc.is_established:
            assert not allowed, f"C-STORE association from {source} refused"
            continue
        status = assoc.send_c_store(entry.file(pacs.out))
        assoc.release()
        assert (int(getattr(status, "Status", -1)) == 0) is allowed, source


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (``ip -4 addr``), if any."""
    try:
        text = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                              check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return None


def test_dicom_is_not_reachable_beyond_loopback(pacs: Pacs) -> None:
    """From a non-loopback address of this machine, no AE title gets an association.

    Orthanc 1.10.1 cannot bind its DICOM port to loopback, so the TCP port may well accept
    the connection; the host check must then refuse every association (the loader's too).
    """
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with socket.socket() as sock:
        sock.settimeout(5)
        tcp_open = sock.connect_ex((address, pacs.dicom_port)) == 0
    if not tcp_open:
        return  # not even reachable at the TCP level
    for calling in (DEFAULT_LOADER_AET, PYNETDICOM_AET, ELSEWHERE_AET, "ANYONE"):
        assert not echo_ok(pacs, calling, address, host=address), calling


def test_native_storage_is_private_after_a_load(pacs: Pacs) -> None:
    root = pacs.settings.data_dir
    files = 0
    for folder, dirs, names in os.walk(root):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in names:
            path = Path(folder) / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            files += 1
    assert files > 24  # the loaded objects, the index, the logs...
