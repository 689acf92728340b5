"""Conversion throughput against a plain copy and against the floor, measured in the same run.

Usage::

    python benchmarks/convert_throughput.py [--studies 10 [50 200]] [--scale 1] [--workers 2]
                                            [--release-dir DIR] [--no-1-worker]

For each size: generates a synthetic release (scale 1 = real sizes, ~18 MB per image; kept
in ``--release-dir`` and reused when given), then, after one warm-up copy (page cache):

- **copy**: ``shutil.copyfile`` + fsync of every image, one process (what the disk and page
  cache allow; Linux copies in the kernel, no byte reaches Python);
- **floor**: what any verified header repair must do per image, nothing else: one read in
  1 MiB chunks, one write, two SHA-256 passes (the source check, the manifest digest) and
  an fsync; in 1 and in N processes;
- **convert**: images only, and with SR + SEG, with 1 and N workers.

The pool's fork server is started by the first run with N processes (about 0.25 s, once
per process, as in a real conversion) and then reused.

Prints a Markdown table: seconds, MB/s, x copy, x floor (against the floor with the same
number of processes), ms per image, and peak resident memory per worker process and of
the whole run (this process and every process below it, sampled every 50 ms; a
worker is a process the fork server forked, and with 1 worker this process itself). Each run's
output is removed, and every write flushed (``sync``), before the next. Asserts
only that every conversion succeeded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from converter.pipeline import ConvertOptions, convert_release
from converter.synth import generate_release
from converter.workers import pool_context

CHUNK = 1 << 20


def _images(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dicom"))


def _copy_images(src: Path, dest: Path) -> None:
    for path in _images(src):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        with target.open("rb+") as handle:
            os.fsync(handle.fileno())  # the converter fsyncs each file too


def floor_one(path: Path, target: Path) -> tuple[str, str]:
    """The floor of one image: read, write, SHA-256 of both, fsync."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source, written = hashlib.sha256(), hashlib.sha256()
    with path.open("rb") as src, target.open("wb") as out:
        while chunk := src.read(CHUNK):
            source.update(chunk)
            out.write(chunk)
            written.update(chunk)
        out.flush()
        os.fsync(out.fileno())
    return source.hexdigest(), written.hexdigest()


def _floor(src: Path, dest: Path, processes: int) -> None:
    pairs = [(path, dest / path.relative_to(src)) for path in _images(src)]
    if processes == 1:
        for path, target in pairs:
            floor_one(path, target)
        return
    with ProcessPoolExecutor(processes, mp_context=pool_context()) as pool:
        list(pool.map(floor_one, *zip(*pairs), chunksize=4))


class PeakMemory:
    """Samples the resident memory of this process and of every process below it
    (``/proc``) in a thread: ``total`` is the largest sum seen, ``per_process`` the largest
    of any one process other than this one (this one's when there is none), in MB."""

    def __init__(self) -> None:
        self.total = 0.0
        self.peaks: dict[int, float] = {}
        self.parents: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def per_process(self) -> float:
        """The largest worker (a process below one of our children: the pool's fork server
        forks them), or this process when the run had no worker of its own."""
        me = os.getpid()
        workers = [mb for pid, mb in self.peaks.items()
                   if pid != me and self.parents.get(pid) != me]
        return max(workers) if workers else self.peaks.get(me, 0.0)

    def _run(self) -> None:
        me, page = os.getpid(), os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.05):
            parents, rss = {}, {}
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    pid = int(stat.parent.name)
                    parents[pid], rss[pid] = int(fields[1]), int(fields[21]) * page / 1e6
                except (OSError, ValueError, IndexError):
                    continue
            tree, frontier = {me}, {me}
            while frontier:
                frontier = {pid for pid, parent in parents.items() if parent in frontier}
                tree |= frontier
            for pid in tree:
                self.parents[pid] = parents.get(pid, 0)
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), rss.get(pid, 0.0))
            self.total = max(self.total, sum(rss.get(pid, 0.0) for pid in tree))


@dataclass
class Run:
    label: str
    seconds: float
    worker_mb: float
    total_mb: float
    floor: str | None = None  # label of the floor run it is compared with


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, nargs="+", default=[10])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--release-dir", type=Path, default=None,
                        help="keep the synthetic releases here (reused when present)")
    parser.add_argument("--no-1-worker", action="store_true",
                        help="skip the 1-worker conversions (saves time at large sizes)")
    args = parser.parse_args()
    if args.release_dir:
        args.release_dir.mkdir(parents=True, exist_ok=True)
    for studies in args.studies:
        _one_size(studies, args.scale, args.workers, args.release_dir, not args.no_1_worker)


def _release(studies: int, scale: float, keep: Path | None, tmp: Path) -> Path:
    root = (keep or tmp) / f"release-{studies}-scale{scale:g}"
    complete = root.with_name(root.name + ".complete")
    if not complete.exists():
        shutil.rmtree(root, ignore_errors=True)
        generate_release(root, studies=studies, seed=1, scale=scale)
        complete.touch()
    return root


def _timed(label: str, action, floor: str | None = None) -> Run:
    os.sync()  # the previous run's writes reach the disk before this one starts
    start = time.perf_counter()
    with PeakMemory() as memory:
        action()
    return Run(label, time.perf_counter() - start, memory.per_process, memory.total, floor)


def _one_size(studies: int, scale: float, workers: int, keep: Path | None,
              one_worker: bool) -> None:
    with tempfile.TemporaryDirectory(dir=keep) as name:
        tmp = Path(name)
        root = _release(studies, scale, keep, tmp)
        files = _images(root)
        megabytes, images = sum(p.stat().st_size for p in files) / 1e6, len(files)
        _copy_images(root, tmp / "warm")  # warm the page cache for every run
        shutil.rmtree(tmp / "warm")

        def done(path: Path) -> None:
            shutil.rmtree(path, ignore_errors=True)

        _print_header(studies, images, megabytes, scale)
        runs = [_timed("copy (baseline), 1 process", lambda: _copy_images(root, tmp / "copy"))]
        _print_row(runs, runs[-1], megabytes, images)
        done(tmp / "copy")
        counts = [1, workers] if one_worker and workers != 1 else [workers]
        for n in dict.fromkeys([1, workers]):
            runs.append(_timed(f"floor, {n} process(es)", lambda n=n: _floor(root, tmp / "fl", n)))
            _print_row(runs, runs[-1], megabytes, images)
            done(tmp / "fl")
        for sr_seg in (False, True):
            options = ConvertOptions(write_sr=sr_seg, write_seg=sr_seg)
            for n in counts:
                what = "convert + SR + SEG" if sr_seg else "convert images only"

                def convert(n=n, options=options) -> None:
                    result = convert_release(root, tmp / "out", workers=n, options=options)
                    assert result.ok, "conversion failed"

                runs.append(_timed(f"{what}, {n} worker(s)", convert,
                                   floor=f"floor, {n} process(es)"))
                _print_row(runs, runs[-1], megabytes, images)
                done(tmp / "out")


def _print_header(studies: int, images: int, megabytes: float, scale: float) -> None:
    print(f"\n{studies} exams, {images} images, {megabytes:,.0f} MB (scale {scale:g}), "
          f"{os.cpu_count()} cores\n")
    print("| run | seconds | MB/s | x copy | x floor | ms/image | peak MB per worker "
          "| peak MB total |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)


def _print_row(runs: list[Run], run: Run, megabytes: float, images: int) -> None:
    """One row, printed as soon as its run ends (``x floor``: against the floor with the
    same number of processes)."""
    floor = {r.label: r for r in runs}.get(run.floor or "")
    x_floor = f"{floor.seconds / run.seconds:.2f}" if floor else ""
    print(f"| {run.label} | {run.seconds:.1f} | {megabytes / run.seconds:,.0f} "
          f"| {runs[0].seconds / run.seconds:.2f} | {x_floor} "
          f"| {1000 * run.seconds / images:.1f} | {run.worker_mb:,.0f} "
          f"| {run.total_mb:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
