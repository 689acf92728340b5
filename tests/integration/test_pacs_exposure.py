"""Nothing leaked: every DICOM caller is checked by AE title AND IP address, no AE title may
store but the random one a C-STORE load registers for its own run (from 127.0.0.1 only),
nothing beyond loopback gets an association, and the native storage is private (folders
700, files 600)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from converter.manifest import read_manifest
from pacs_tools import ELSEWHERE_AET, ELSEWHERE_HOST, PYNETDICOM_AET, SERVER_AET, Pacs
from server.pacs.layout import DataLayout
from server.transfer import load as loading

OLD_LOADER_AET = "VINDR-LOADER"  # the store-enabled AE title earlier versions registered

pytestmark = pytest.mark.integration


def associate(pacs: Pacs, calling: str, source: str, contexts=(Verification,), host="127.0.0.1"):
    """An association to the PACS from ``source`` (a local address) as ``calling``."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    for context in contexts:
        ae.add_requested_context(*(context if isinstance(context, tuple) else (context,)))
    return ae.associate(host, pacs.dicom_port, ae_title=SERVER_AET, bind_address=(source, 0))


def echo_ok(pacs: Pacs, calling: str, source: str, host: str = "127.0.0.1") -> bool:
    assoc = associate(pacs, calling, source, host=host)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return int(getattr(status, "Status", -1)) == 0


def test_written_config_checks_hosts(pacs: Pacs) -> None:
    config = json.loads(DataLayout.of(pacs.settings.data_dir).node(0).config.read_text())
    assert config["DicomCheckModalityHost"] is True
    assert config["RemoteAccessAllowed"] is False
    assert not any(m["AllowStore"] for m in config["DicomModalities"].values())


def test_a_known_aet_from_another_address_is_refused(pacs: Pacs) -> None:
    """ELSEWHERE is registered at 127.0.0.2: refused from 127.0.0.1, accepted from 127.0.0.2."""
    assert not echo_ok(pacs, ELSEWHERE_AET, "127.0.0.1")
    assert echo_ok(pacs, ELSEWHERE_AET, ELSEWHERE_HOST)
    assert echo_ok(pacs, PYNETDICOM_AET, "127.0.0.1")
    assert not echo_ok(pacs, PYNETDICOM_AET, ELSEWHERE_HOST)


def store_status(pacs: Pacs, calling: str, source: str) -> int | None:
    """The C-STORE status of one MG sent as ``calling`` from ``source`` (None: refused).

    Offered in the file's own transfer syntax only, so that what is stored is the manifest's
    data set (the session's PACS stays what ``load`` sent)."""
    entry = next(e for e in read_manifest(pacs.out) if e.kind == "MG")
    syntax = pydicom.dcmread(entry.file(pacs.out), stop_before_pixels=True).file_meta
    assoc = associate(pacs, calling, source,
                      contexts=((entry.sop_class_uid, [syntax.TransferSyntaxUID]),))
    if not assoc.is_established:
        return None
    status = assoc.send_c_store(entry.file(pacs.out))
    assoc.release()
    return int(getattr(status, "Status", -1))


def test_the_loader_aet_stores_during_its_load_only_and_from_127_0_0_1_only(
        pacs: Pacs, monkeypatch) -> None:
    """No AE title may store (the old fixed one included). A C-STORE load registers a random
    one on every node for its run: it stores from 127.0.0.1 (not from another local address)
    while the load runs, and is gone afterwards."""
    assert store_status(pacs, OLD_LOADER_AET, "127.0.0.1") is None
    seen: dict[str, object] = {}
    register = loading._register_loader

    def spy(nodes, aet):
        register(nodes, aet)
        seen["aet"] = aet
        seen["listed"] = aet in pacs.client.session.get(pacs.client.url + "/modalities",
                                                        timeout=10).json()
        seen["from 127.0.0.3"] = store_status(pacs, aet, "127.0.0.3")
        seen["from 127.0.0.1"] = store_status(pacs, aet, "127.0.0.1")

    monkeypatch.setattr(loading, "_register_loader", spy)
    entries = read_manifest(pacs.out)
    held = pacs.client.instance_index({entries[0].study_uid})
    pacs.client.delete_instance(held[entries[0].sop_instance_uid].orthanc_id)  # one to send
    try:
        result = loading.load(pacs.out, pacs.connection, method="cstore")
    finally:  # the session's PACS holds the manifest's bytes again (C-STORE's copy does not)
        held = pacs.client.instance_index({entries[0].study_uid})
        if entries[0].sop_instance_uid in held:
            pacs.client.delete_instance(held[entries[0].sop_instance_uid].orthanc_id)
        assert loading.load(pacs.out, pacs.connection).ok
    assert result.ok, result.errors
    aet = str(seen["aet"])
    assert aet.startswith("VL-") and len(aet) == 16
    assert seen["listed"] is True and seen["from 127.0.0.3"] is None
    assert seen["from 127.0.0.1"] == 0
    assert aet not in pacs.client.session.get(pacs.client.url + "/modalities", timeout=10).json()
    assert store_status(pacs, aet, "127.0.0.1") is None


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
    for calling in (OLD_LOADER_AET, PYNETDICOM_AET, ELSEWHERE_AET, "ANYONE"):
        assert not echo_ok(pacs, calling, address, host=address), calling


def test_native_storage_is_private_after_a_load(pacs: Pacs) -> None:
    root = pacs.settings.data_dir
    files = 0
    for folder, dirs, names in os.walk(root):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in names:
            path = Path(folder) / name
            if path.is_symlink():  # Orthanc's current log, the viewer's build
                continue
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            files += 1
    assert files > 24  # the loaded objects, the index, the logs, the front's files...
