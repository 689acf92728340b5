"""A full disk under Orthanc's storage during a load (a small tmpfs as the storage, root
only): ``load`` names it once and stops sending, the next ``serve`` removes the empty files
the failed stores left, and a re-run with room completes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from converter.manifest import read_manifest
from pacs_testdata import make_output
from pacs_tools import pacs_settings, running_pacs
from server.pacs import processes
from server.pacs.layout import DataLayout
from server.transfer.load import load
from server.transfer.verify import verify

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]


def _mount_tmpfs(folder: Path, size: int) -> None:
    account = processes.service_account("orthanc")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o",
                    f"size={size},mode=0700,uid={account.uid},gid={account.gid}",
                    "vindr-full-disk-test", str(folder)], check=True)


def _empty_files(storage: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(storage) for n in names
            if Path(d) != storage and (Path(d) / n).stat().st_size == 0]


def test_a_full_disk_is_named_once_and_stops_the_load(tmp_path: Path) -> None:
    out = tmp_path / "out"
    output = make_output(out, n_studies=4, prefix="full-disk")
    entries = read_manifest(out)
    total = sum(e.file(out).stat().st_size for e in entries)
    settings = pacs_settings()
    storage = DataLayout.of(settings.data_dir).storage
    # room for the SQLite index (its write-ahead log takes 1 MB) and a third of the objects
    _mount_tmpfs(storage, 1024 * 1024 + total // 3)
    try:
        with running_pacs(settings, with_accounts=False) as running:
            result = load(out, running.admin, workers=2, retries=2, retry_delay=0.1)
            assert not result.ok
            assert 0 < result.sent < len(entries)
            first = str(result.errors[0])
            assert "the load stopped" in first and "is its disk full?" in first, first
            assert "cannot write to its storage" in first, first
            assert result.errors == result.errors[:1], result.errors  # said once, no flood
            assert f"{len(entries) - result.sent} object(s) not stored" in first
        # the next serve clears what the failed stores left; with room the re-run completes
        subprocess.run(["mount", "-o", f"remount,size={64 * 1024 * 1024 + 2 * total}",
                        str(storage)], check=True)
        with running_pacs(settings, with_accounts=False) as running:
            assert _empty_files(storage) == []
            again = load(out, running.admin, workers=2)
            assert again.ok, again.errors
            assert verify(output.release, out, running.admin).ok
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=False)


def test_serve_removes_empty_files_from_the_storage_only(tmp_path: Path) -> None:
    """Unit-sized: the cleaning keeps every non-empty file and the index at the top."""
    from server.pacs.supervisor import remove_empty_files

    storage = tmp_path / "storage"
    (storage / "ab" / "cd").mkdir(parents=True)
    (storage / "index").write_bytes(b"")  # top level: Orthanc's, never touched
    (storage / "ab" / "cd" / "empty").write_bytes(b"")
    (storage / "ab" / "cd" / "object").write_bytes(b"DICM")
    assert remove_empty_files(storage) == 1
    assert sorted(p.name for p in storage.rglob("*") if p.is_file()) == ["index", "object"]
