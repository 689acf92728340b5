"""Nothing stale: ``load`` sends only files matching the manifest SHA-256 and replaces a PACS
copy that differs from the manifest file; ``verify`` reports such a copy."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from converter.manifest import ManifestRow, read_manifest
from pacs_testdata import make_output
from pacs_tools import Pacs
from server.transfer.load import METHODS, load
from server.transfer.verify import verify
from vindr_convert.pacs_commands import register

pytestmark = pytest.mark.integration


def flip_last_byte(data: bytes) -> bytes:
    """The same object with its last pixel byte inverted (still a valid DICOM file)."""
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def tamper_pacs_copy(pacs: Pacs, entry: ManifestRow, out: Path) -> None:
    """Replace the PACS copy of ``entry`` by a modified one with the same SOP Instance UID.

    Orthanc refuses to overwrite by default (OverwriteInstances false), so DELETE then POST.
    """
    held = pacs.client.instance_index([entry.study_uid])[entry.sop_instance_uid]
    pacs.client.delete_instance(held.orthanc_id)
    answer = pacs.client.store_instance(flip_last_byte(entry.file(out).read_bytes()))
    assert answer.status == "Success"


def cli(*args: object):
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


def credentials(pacs: Pacs) -> list[str]:
    creds = pacs.settings.credentials
    return ["--url", pacs.connection.url, "--user", creds.username, "--password", creds.password]


def test_tampered_local_file_is_never_sent(pacs: Pacs, tmp_path: Path) -> None:
    make_output(tmp_path, n_studies=1, prefix="tampered-local")
    bad = read_manifest(tmp_path)[1]
    bad.file(tmp_path).write_bytes(flip_last_byte(bad.file(tmp_path).read_bytes()))
    result = load(tmp_path, pacs.connection, retries=1, retry_delay=0.1)
    assert not result.ok
    assert (result.sent, result.failed, result.missing) == (5, 1, 1)
    assert [e.path for e in result.errors] == [bad.file(tmp_path)]
    assert "SHA-256" in result.errors[0].message and "not sent" in result.errors[0].message
    assert bad.sop_instance_uid not in pacs.client.sop_instance_uids([bad.study_uid])


def test_tampered_local_file_of_a_loaded_object_is_an_error(pacs: Pacs, tmp_path: Path) -> None:
    make_output(tmp_path, n_studies=1, prefix="tampered-local-loaded")
    assert load(tmp_path, pacs.connection).ok
    bad = read_manifest(tmp_path)[0]
    good_bytes = bad.file(tmp_path).read_bytes()
    bad.file(tmp_path).write_bytes(flip_last_byte(good_bytes))
    result = invoke_load(pacs, tmp_path)
    assert result.exit_code == 1, result.output
    assert str(bad.file(tmp_path)) in result.output.replace("\n", "")
    # the PACS copy stayed the good one
    held = pacs.client.instance_index([bad.study_uid])[bad.sop_instance_uid]
    assert pacs.client.attachment_info(held.orthanc_id).md5 == hashlib.md5(good_bytes).hexdigest()


def invoke_load(pacs: Pacs, out: Path):
    return cli("load", out, *credentials(pacs))


@pytest.mark.parametrize("kind", ["MG", "SEG"])
def test_differing_pacs_copy_is_reported_then_replaced(
    pacs: Pacs, tmp_path: Path, kind: str
) -> None:
    output = make_output(tmp_path, n_studies=1, prefix=f"tampered-pacs-{kind}")
    assert load(tmp_path, pacs.connection).ok
    entry = next(e for e in read_manifest(tmp_path) if e.kind == kind)
    tamper_pacs_copy(pacs, entry, tmp_path)

    checked = verify(output.release, tmp_path, pacs.connection)
    differs = [p for p in checked.problems if p.code == "pacs-content-differs"]
    assert [(p.study_id, entry.path in p.message) for p in differs] == [(entry.study_id, True)]
    if kind == "MG":  # a flipped SEG pixel also makes its mask disagree with the SR box
        assert checked.problems == differs
    result = cli("verify", output.release, tmp_path, *credentials(pacs))
    assert result.exit_code == 1, result.output
    manifest_only = tmp_path / "manifest-only"  # without the files: the SHA-256 of the copy
    manifest_only.mkdir()
    for name in ("manifest.csv", "manifest.json"):
        shutil.copy(tmp_path / name, manifest_only / name)
    checked = verify(output.release, manifest_only, pacs.connection)
    assert [p.message.split(":")[0] for p in checked.problems
            if p.code == "pacs-content-differs"] == [f"{entry.kind} {entry.path} ({entry.sop_instance_uid})"]

    loaded = load(tmp_path, pacs.connection)
    assert loaded.ok, loaded.errors
    assert (loaded.sent, loaded.already_present) == (1, 5)
    assert len(loaded.replaced) == 1 and "replaced a differing copy" in loaded.replaced[0]
    assert str(entry.file(tmp_path)) in loaded.replaced[0]
    assert verify(output.release, tmp_path, pacs.connection).ok


@pytest.mark.parametrize("method", METHODS)
def test_every_method_stores_what_verify_accepts(
    pacs: Pacs, tmp_path: Path, method: str
) -> None:
    """C-STORE makes Orthanc write its own File Meta Information: the data sets compare equal."""
    output = make_output(tmp_path, n_studies=1, prefix=f"content-{method}")
    assert load(tmp_path, pacs.connection, method=method).ok
    checked = verify(output.release, tmp_path, pacs.connection)
    assert checked.ok, checked.problems
    again = load(tmp_path, pacs.connection, method=method)
    assert (again.sent, again.already_present, again.replaced) == (0, 6, [])
