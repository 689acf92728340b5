"""The output folder OUT: where each object goes, its lock, its state files and its pruning.

Layout (all paths relative to OUT)::

    images/<study_id>/<image_id>.dcm   repaired MG For Presentation
    sr/<study_id>.dcm                  Comprehensive SR (TID 1500), one per exam
    seg/<study_id>/<image_id>.dcm      Segmentation, one per image with boxes
    manifest.csv                       one row per object written
    report.json                        summary and every problem found
    .state/<study_id>.json             resume bookkeeping: an exam is complete
    .lock                              held by a run for its whole length

OUT holds credentialed data, so it is private like the PACS's data folder: OUT and every
folder in it 0700, every file 0600, whatever the umask (:data:`DIR_MODE`, :data:`FILE_MODE`).
Every file is written through :func:`converter.fileio.atomic_writer`.

:func:`output_lock` is the one lock on OUT: ``convert`` holds it exclusively, a reader of
the folder that must not see it change (``load``) holds it shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from .errors import OutputError
from .fileio import PRIVATE_DIR, PRIVATE_FILE, atomic_write, partial_path
from .manifest import ManifestRow
from .naming import is_hex_id
from .records import ImageRecord, Problem

REPORT = "report.json"
STATE_DIR = ".state"
LOCK_FILE = ".lock"
FOLDERS = ("images", "sr", "seg", STATE_DIR)
FILE_MODE = PRIVATE_FILE
DIR_MODE = PRIVATE_DIR

log = logging.getLogger(__name__)


# --- where each object goes ------------------------------------------------------------------


def image_path(out: Path, image: ImageRecord) -> Path:
    return out / "images" / image.study_id / f"{image.image_id}.dcm"


def sr_path(out: Path, study_id: str) -> Path:
    return out / "sr" / f"{study_id}.dcm"


def seg_path(out: Path, image: ImageRecord) -> Path:
    return out / "seg" / image.study_id / f"{image.image_id}.dcm"


def state_path(out: Path, study_id: str) -> Path:
    return out / STATE_DIR / f"{study_id}.json"


def write_object(data: bytes, dest: Path) -> str:
    """Write an encoded object (SR, SEG) to ``dest`` atomically and privately; its SHA-256."""
    atomic_write(dest, data, mode=FILE_MODE)
    return hashlib.sha256(data).hexdigest()


# --- the lock -----------------------------------------------------------------------------


@contextlib.contextmanager
def output_lock(out: Path, shared: bool = False) -> Iterator[None]:
    """Hold the lock on OUT (``OUT/.lock``, :func:`fcntl.flock`) for the block.

    Parameters
    ----------
    out: Path
        The output folder. Exclusive: created when missing and made private (0700).
    shared: bool
        False (``convert``): no other run may hold the lock. True (a reader such as
        ``load``): several readers at once, but no ``convert`` meanwhile.

    Raises
    ------
    converter.errors.OutputError
        At once (never waits) when the lock is taken in a conflicting way, or when OUT
        cannot be created or written (exclusive) or is not there (shared).
    """
    out = Path(out)
    fd = _open_lock(out, shared)
    if fd < 0:  # a reader of an OUT it may not write, with no lock file: no convert can
        yield  # be writing it either
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            if shared:
                raise OutputError(f"{out} is being written by a convert run (it holds "
                                  f"{out / LOCK_FILE}): wait for it to end") from None
            raise OutputError(f"{out} is in use by another convert or load run (it holds "
                              f"{out / LOCK_FILE}): wait for it to end, or choose another "
                              "output folder") from None
        yield
    finally:
        os.close(fd)


def _open_lock(out: Path, shared: bool) -> int:
    lock = out / LOCK_FILE
    if shared:
        if not out.is_dir():
            raise OutputError(f"{out}: no such output folder")
        with contextlib.suppress(FileNotFoundError):
            return os.open(lock, os.O_RDONLY)
        if not os.access(out, os.W_OK):
            return -1
    try:
        if not shared:
            make_private(out)
        return os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the output folder ({exc.strerror})") from None


def make_private(out: Path) -> None:
    """Create OUT and its top folders, owner-only (an older run's 0755 OUT is narrowed)."""
    for folder in (out, *(out / name for name in FOLDERS)):
        folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)


# --- state files: which exams are complete ---------------------------------------------------


def write_state(out: Path, study_id: str, fingerprint: str, rows: list[ManifestRow],
                problems: list[Problem]) -> None:
    """Mark the exam complete: its input fingerprint, objects (with sizes) and problems."""
    state = {
        "fingerprint": fingerprint,
        "rows": [asdict(row) for row in rows],
        "sizes": {row.path: (out / row.path).stat().st_size for row in rows},
        "problems": [asdict(p) for p in problems],
    }
    atomic_write(state_path(out, study_id), json.dumps(state, indent=1, sort_keys=True),
                 mode=FILE_MODE, fsync=False)


def read_state(out: Path, study_id: str,
               fingerprint: str) -> tuple[list[ManifestRow], list[Problem]] | None:
    """The rows and problems of an earlier run of the exam when its fingerprint is the same
    and every object it lists is in place with its size; None otherwise."""
    try:
        state = json.loads(state_path(out, study_id).read_text())
        if state.get("fingerprint") != fingerprint:
            return None
        for rel, size in state["sizes"].items():
            if (out / rel).stat().st_size != size:
                return None
        rows = [ManifestRow(**row) for row in state["rows"]]
        problems = [Problem(**p) for p in state["problems"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return rows, problems


def clear_state(out: Path, study_id: str) -> None:
    """The exam is being redone: not complete until its state is written again."""
    state_path(out, study_id).unlink(missing_ok=True)


# --- pruning: what OUT holds that this run does not produce ------------------------------


def _study_files(out: Path, study_id: str) -> list[Path]:
    """Every file of OUT that belongs to exam ``study_id`` (temporary files included)."""
    files = [p for folder in ("images", "seg") for p in (out / folder / study_id).glob("*")]
    files += [sr_path(out, study_id), partial_path(sr_path(out, study_id))]
    return [p for p in files if p.is_file()]


def _remove_study_files(out: Path, study_id: str, keep: set[Path]) -> None:
    """Remove the exam's files not in ``keep``, and its folders left empty."""
    for path in _study_files(out, study_id):
        if path not in keep:
            path.unlink()
    for folder in ("images", "seg"):
        with contextlib.suppress(OSError):
            (out / folder / study_id).rmdir()  # only when empty


def prune_study(out: Path, study_id: str, rows: Iterable[ManifestRow]) -> None:
    """Remove the exam's files that ``rows`` do not list, and its folders left empty."""
    _remove_study_files(out, study_id, {out / row.path for row in rows})


def prune_gone(out: Path, study_ids: set[str]) -> None:
    """Remove the files and state of exams OUT holds but the release no longer has."""
    found = {p.name for folder in ("images", "seg") for p in (out / folder).glob("*")
             if p.is_dir()}
    found |= {p.stem for folder in ("sr", STATE_DIR) for p in (out / folder).glob("*.*")}
    for study_id in sorted(i for i in found - study_ids if is_hex_id(i)):
        log.info("removing the output of exam %s, no longer in the release", study_id)
        _remove_study_files(out, study_id, set())
        clear_state(out, study_id)


def remove_partials(out: Path) -> None:
    """Temporary files of an interrupted run (only called while holding the lock)."""
    for path in out.rglob(".*.partial"):
        path.unlink(missing_ok=True)
