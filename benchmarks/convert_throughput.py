"""Conversion throughput against a plain file copy measured in the same run.

Usage: python benchmarks/convert_throughput.py [--studies 10 [50 200]] [--scale 1] [--workers 2]

For each size: generates a synthetic release (scale 1 = real sizes, ~20 MB per Siemens
image), copies its images once with shutil (the baseline: what the disk and page cache
allow), then converts it with and without SR/SEG. Prints seconds, MB/s, the ratio to the
baseline, the cost per image and the peak memory of the run (the resident memory of this
process and its workers together, sampled every 50 ms); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from converter.pipeline import ConvertOptions, convert_release
from converter.synth import generate_release


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.dicom"))


def _copy_images(src: Path, dest: Path) -> None:
    for path in src.rglob("*.dicom"):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        with target.open("rb+") as handle:
            os.fsync(handle.fileno())  # the converter fsyncs each file too


class PeakMemory:
    """Samples the resident memory of this process and its children (``/proc``) in a
    thread; ``peak`` is the largest sum seen, in MB."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.05):
            total = 0
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    pid, ppid, rss_pages = int(stat.parent.name), int(fields[1]), int(fields[21])
                except (OSError, ValueError, IndexError):
                    continue
                if pid == me or ppid == me:
                    total += rss_pages * os.sysconf("SC_PAGE_SIZE")
            self.peak = max(self.peak, total / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, nargs="+", default=[10])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    for studies in args.studies:
        _one_size(studies, args.scale, args.workers)


def _one_size(studies: int, scale: float, workers_max: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "release"
        generate_release(root, studies=studies, seed=1, scale=scale)
        megabytes = _size(root) / 1e6
        images = sum(1 for _ in root.rglob("*.dicom"))
        _copy_images(root, Path(tmp) / "warm")  # warm the page cache for every run
        shutil.rmtree(Path(tmp) / "warm")

        timings: dict[str, tuple[float, float]] = {}
        start = time.perf_counter()
        with PeakMemory() as memory:
            _copy_images(root, Path(tmp) / "copy")
        timings["copy (baseline)"] = (time.perf_counter() - start, memory.peak)
        runs = {
            "convert images only, 1 worker": (1, ConvertOptions(write_sr=False, write_seg=False)),
            f"convert images only, {workers_max} workers":
                (workers_max, ConvertOptions(write_sr=False, write_seg=False)),
            f"convert + SR + SEG, {workers_max} workers": (workers_max, ConvertOptions()),
        }
        for n, (label, (workers, options)) in enumerate(runs.items()):
            start = time.perf_counter()
            with PeakMemory() as memory:
                result = convert_release(root, Path(tmp) / f"out{n}", workers=workers,
                                         options=options)
            timings[label] = (time.perf_counter() - start, memory.peak)
            assert result.ok, "conversion failed"

    base = timings["copy (baseline)"][0]
    print(f"{studies} exams, {images} images, {megabytes:.0f} MB (scale {scale})")
    print(f"{'run':44s} {'seconds':>8s} {'MB/s':>8s} {'x copy':>8s} {'ms/image':>9s} "
          f"{'peak MB':>8s}")
    for label, (seconds, peak) in timings.items():
        print(f"{label:44s} {seconds:8.2f} {megabytes / seconds:8.0f} {base / seconds:8.2f} "
              f"{1000 * seconds / images:9.1f} {peak:8.0f}")


if __name__ == "__main__":
    main()
