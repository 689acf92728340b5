"""``evaluate`` at size: N exams, 10 predicted boxes per image, scored over DICOMweb.

Usage: python benchmarks/evaluate_throughput.py [--studies 1000] [--boxes-per-image 10]
           [--workers 2] [--workdir DIR]

Synthesizes N exams (scale 64: tiny pixels, the real object count), converts them (no SEG:
``evaluate`` does not read them), writes a model's BOXES.csv with exactly
``--boxes-per-image`` boxes per image (the simulated model's, topped up with random false
positives) and BREASTS.csv, imports them (one model SR per exam), starts the PACS as
``serve`` does and loads everything; then times, through the front door with the admin's
account:

- **baseline**: the PACS serving what ``evaluate`` asks for, read raw: the same WADO-RS
  study metadata requests (each exam's DICOM JSON) sent with ``requests`` from
  ``--workers`` threads, the answers not decoded;
- **evaluate**: the whole ``evaluate`` (the same fetch, then reading the SRs, matching,
  FROC, AP, the breast AUC with its 2,000-sample bootstrap, kappa);
- **scoring**: ``evaluate`` on exams already fetched (no network).

Prints seconds and the ratios evaluate / baseline and scoring / evaluate; the issue's target
is evaluate < 60 s for 1,000 exams (40,000 boxes) on 2 cores. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converter.evaluation.evaluate import evaluate_exams  # noqa: E402
from converter.evaluation.predictions import import_predictions  # noqa: E402
from converter.pipeline import ConvertOptions, convert_release  # noqa: E402
from converter.release import read_release  # noqa: E402
from converter.synth import generate_release, simulate_model  # noqa: E402
from server.client import Connection  # noqa: E402
from server.pacs import engine  # noqa: E402
from server.pacs.processes import free_port  # noqa: E402
from server.pacs.settings import Credentials, ServerSettings  # noqa: E402
from server.transfer.evaluate import evaluate_pacs, fetch_exams, split_studies  # noqa: E402
from server.transfer.load import load  # noqa: E402

NAME, VERSION = "bench-model", "1"


def _boxes_csv(release: Path, model_csv: Path, per_image: int, seed: int) -> tuple[Path, int]:
    """The simulated model's rows, each image topped up with random boxes to ``per_image``."""
    images = {i.image_id: i for i in read_release(release).images}
    lines = model_csv.read_text().splitlines()
    by_image: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_image.setdefault(line.split(",")[1], []).append(line)
    rng = np.random.default_rng(seed)
    out = [lines[0]]
    for image_id, image in sorted(images.items()):
        rows = by_image.get(image_id, [])[:per_image]
        while len(rows) < per_image:
            w, h = image.width * rng.uniform(0.05, 0.2), image.height * rng.uniform(0.05, 0.2)
            x, y = rng.uniform(0, image.width - w), rng.uniform(0, image.height - h)
            rows.append(f"{image.study_id},{image_id},{x:.2f},{y:.2f},{x + w:.2f},{y + h:.2f},"
                        f"{rng.uniform(0, 0.75):.4f},")
        out += rows
    model_csv.write_text("\n".join(out) + "\n")
    return model_csv, len(out) - 1


def _raw_fetch(front: Connection, studies: list[tuple[str, str]], workers: int) -> int:
    """The requests ``fetch_exams`` sends, answers read as bytes only; returns bytes read."""
    root = front.url.rstrip("/") + "/dicom-web"
    local = threading.local()

    def one(study: tuple[str, str]) -> int:
        if not hasattr(local, "session"):
            local.session = front.session()
        answer = local.session.get(f"{root}/studies/{study[0]}/metadata",
                                   headers={"Accept": "application/dicom+json"})
        answer.raise_for_status()
        return len(answer.content)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(one, studies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--boxes-per-image", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="vindr-bench-eval-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711)  # the PACS's service account reaches its data folder inside
    release, out, model, data = base / "release", base / "out", base / "model", base / "pacs"
    print(f"# evaluate throughput: {args.studies} exams, {args.boxes_per_image} boxes per "
          f"image; {platform.node()}, {os.cpu_count()} cores, workdir {base}")
    start = time.perf_counter()
    if not (release / "SHA256SUMS.txt").exists():  # none, or an interrupted one
        shutil.rmtree(release, ignore_errors=True)
        generate_release(release, studies=args.studies, seed=11, scale=64)
    convert_release(release, out, workers=args.workers, options=ConvertOptions(write_seg=False))
    simulated = simulate_model(release, model, seed=11)
    boxes, count = _boxes_csv(release, simulated.boxes_csv, args.boxes_per_image, 11)
    imported = import_predictions(out, NAME, VERSION, boxes, simulated.breasts_csv)
    assert imported.ok, imported.problems[:5]
    print(f"prepared in {time.perf_counter() - start:.0f} s: {count} boxes in "
          f"{imported.studies} model SRs")

    data.mkdir(exist_ok=True)
    settings = ServerSettings(data_dir=data, credentials=Credentials("bench", "bench-password-1"),
                              http_port=free_port(), dicom_port=free_port(), web_port=free_port())
    engine.start_background(settings)
    try:
        admin = Connection(settings.url, "bench", "bench-password-1")
        loaded = load(out, admin, workers=args.workers)
        assert loaded.ok, loaded.errors[:5]
        front = Connection(settings.web_url, "bench", "bench-password-1")

        studies = split_studies(front, "all")
        t0 = time.perf_counter()
        _raw_fetch(front, studies, args.workers)
        baseline = time.perf_counter() - t0
        exams = fetch_exams(front, studies, args.workers)
        t0 = time.perf_counter()
        result = evaluate_pacs(front, NAME, VERSION, split="all", workers=args.workers)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_exams(exams, NAME, VERSION, split="all")
        scoring = time.perf_counter() - t0
    finally:
        engine.stop(data)
    metrics = result.metrics()
    print(f"exams {metrics['exams']}, images {metrics['images']}, detections "
          f"{metrics['lesion']['detections']}")
    print(f"baseline (fetch only)  {baseline:7.1f} s")
    print(f"evaluate               {full:7.1f} s   evaluate / baseline = {full / baseline:.2f}")
    print(f"scoring (no network)   {scoring:7.1f} s   scoring / evaluate  = {scoring / full:.2f}")
    met = "met" if full < 60 * args.studies / 1000 else "missed"
    print(f"target: evaluate < 60 s for 1,000 exams: {met} (scaled to {args.studies} exams)")
    if args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
