"""The output folder: private modes, the lock's shared and exclusive holders, the workers'
start method."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from converter.errors import OutputError
from converter.output import LOCK_FILE, output_lock
from converter.pipeline import convert_release
from converter.workers import pool_context, run_parallel


def _modes(root: Path) -> tuple[set[int], set[int]]:
    """Permission bits of every folder (root included) and of every file below ``root``."""
    folders, files = {stat.S_IMODE(root.stat().st_mode)}, set()
    for path in root.rglob("*"):
        (folders if path.is_dir() else files).add(stat.S_IMODE(path.stat().st_mode))
    return folders, files


def test_out_is_private_whatever_the_umask(tiny_release, tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)  # an older run's world-readable folder is narrowed too
    old = os.umask(0o002)
    try:
        result = convert_release(tiny_release, out, workers=2)
    finally:
        os.umask(old)
    assert result.objects["MG"] and result.objects["SEG"] and result.objects["SR"]
    folders, files = _modes(out)
    assert folders == {0o700}
    assert files == {0o600}
    assert (out / LOCK_FILE).is_file() and (out / "images").is_dir()


def test_lock_exclusive_refuses_readers_and_writers(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(OutputError, match="being written by a convert run"):
            with output_lock(out, shared=True):
                pass
        with pytest.raises(OutputError, match="another convert or load run"):
            with output_lock(out):
                pass
    with output_lock(out, shared=True):  # free again
        pass


def test_lock_shared_admits_readers_and_refuses_convert(tiny_release, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out, shared=True), output_lock(out, shared=True):
        with pytest.raises(OutputError, match="another convert or load run"):
            convert_release(tiny_release, out, workers=1)
    assert not (out / "manifest.csv").exists()


def test_shared_lock_of_a_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="no such output folder"):
        with output_lock(tmp_path / "absent", shared=True):
            pass


_NO_FORK_SCRIPT = """
import os, threading
def no_fork():
    raise AssertionError("os.fork() called in the converting process")
os.fork = no_fork
threading.Thread(target=threading.Event().wait, daemon=True).start()  # a threaded caller
from converter.workers import run_parallel
parents = list(run_parallel(os.getppid, [(n, ()) for n in range(4)], 2, lambda k, e: repr(e)))
assert len(parents) == 4 and all(isinstance(p, int) for p in parents), parents
assert os.getpid() not in parents, parents
print("ok")
"""


def test_workers_are_not_forks_of_a_threaded_caller():
    """The pool starts its workers from a fork server, never by fork() of the (threaded)
    converting process, which Python 3.12+ warns may deadlock: in a fresh interpreter whose
    os.fork raises, with a thread running, the workers start and none is our child."""
    assert pool_context().get_start_method() == "forkserver"
    done = subprocess.run([sys.executable, "-c", _NO_FORK_SCRIPT], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_load_and_convert_keep_out_of_each_other(tmp_path):
    """load holds OUT's lock shared: it refuses to start while a convert writes OUT (which
    re-converting during a load used to break with ENOENT), and convert refuses to start
    while a load reads it; several loads may run together."""
    from converter.manifest import write_manifest
    from server.client import Connection
    from server.transfer.load import load

    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, [])
    nowhere = Connection("http://127.0.0.1:9", "admin", "password")
    with output_lock(out):  # a convert runs
        with pytest.raises(OutputError, match="being written by a convert run"):
            load(out, nowhere)
    with output_lock(out, shared=True):  # a load runs
        with output_lock(out, shared=True):  # and another
            pass
        with pytest.raises(OutputError, match="in use by another convert or load run"):
            with output_lock(out):
                pass


def test_a_read_only_out_without_a_lock_file_can_be_read(tmp_path, monkeypatch):
    """A reader (load, verify) of an OUT it may not write, with no lock file yet: no convert
    can be writing it either, so it reads without a lock (root writes anyway: the check is
    os.access, made to say no here)."""
    out = tmp_path / "out"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False
                        if Path(path) == out and mode == os.W_OK else real_access(path, mode))
    with output_lock(out, shared=True):
        assert not (out / LOCK_FILE).exists()
