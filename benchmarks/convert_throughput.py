"""Conversion throughput against a plain file copy measured in the same run.

Usage: python benchmarks/convert_throughput.py [--studies 10] [--scale 1] [--workers 2]

Generates a synthetic release (scale 1 = real sizes, ~20 MB per Siemens image), copies its
images once with shutil (the baseline: what the disk and page cache allow), then converts it
with and without SR/SEG. Prints MB/s and the ratio to the baseline; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "release"
        generate_release(root, studies=args.studies, seed=1, scale=args.scale)
        megabytes = _size(root) / 1e6
        _copy_images(root, Path(tmp) / "warm")  # warm the page cache for every run
        shutil.rmtree(Path(tmp) / "warm")

        timings = {}
        start = time.perf_counter()
        _copy_images(root, Path(tmp) / "copy")
        timings["copy (baseline)"] = time.perf_counter() - start
        runs = {
            "convert images only, 1 worker": (1, ConvertOptions(write_sr=False, write_seg=False)),
            f"convert images only, {args.workers} workers":
                (args.workers, ConvertOptions(write_sr=False, write_seg=False)),
            f"convert + SR + SEG, {args.workers} workers": (args.workers, ConvertOptions()),
        }
        for n, (label, (workers, options)) in enumerate(runs.items()):
            start = time.perf_counter()
            result = convert_release(root, Path(tmp) / f"out{n}", workers=workers,
                                     options=options)
            timings[label] = time.perf_counter() - start
            assert result.ok, "conversion failed"

    base = timings["copy (baseline)"]
    print(f"{args.studies} exams, {args.studies * 4} images, {megabytes:.0f} MB "
          f"(scale {args.scale})")
    print(f"{'run':44s} {'seconds':>8s} {'MB/s':>8s} {'x copy':>8s}")
    for label, seconds in timings.items():
        print(f"{label:44s} {seconds:8.2f} {megabytes / seconds:8.0f} {base / seconds:8.2f}")


if __name__ == "__main__":
    main()
