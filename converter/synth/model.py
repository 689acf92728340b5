"""A simulated AI model with known behaviour, for the demo and the tests of ``evaluate``.

:func:`simulate_model` reads a release's CSVs and writes what a model would output, in the
formats ``vindr-convert predictions import`` reads:

- ``BOXES.csv`` (``study_id,image_id,xmin,ymin,xmax,ymax,score,label``): each reference
  lesion (a distinct box of an image, clipped to it; multi-label rows are one lesion) is found
  with probability ``sensitivity``, its box jittered by a few percent of its size, with a
  high score (``0.4 + 0.6 * u``); each image gets Poisson(``fp_per_image``) false positives
  anywhere in the image, with lower scores (``0.75 * u``). The label is the lesion's first.
- ``BREASTS.csv`` (``study_id,laterality,score,birads,density``): a suspicion score that
  grows with the breast's BI-RADS (a logistic of ``1.2 * (birads - 2.5)`` plus noise), the
  BI-RADS right 60 % of the time (else one off), the density right 70 % of the time (else
  a neighbour).

Everything is drawn from ``seed``: the same release and seed give the same bytes.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_write
from ..release import read_release

BOXES_HEADER = ("study_id", "image_id", "xmin", "ymin", "xmax", "ymax", "score", "label")
BREASTS_HEADER = ("study_id", "laterality", "score", "birads", "density")
DENSITIES = "ABCD"


@dataclass(frozen=True)
class SimulatedModel:
    """What :func:`simulate_model` wrote, and the behaviour it was drawn with."""

    boxes_csv: Path
    breasts_csv: Path
    boxes: int
    breasts: int
    lesions: int
    found: int  # lesions the model found (before the IoU test)


def simulate_model(
    release_dir: Path,
    dest: Path,
    seed: int = 0,
    sensitivity: float = 0.8,
    fp_per_image: float = 0.5,
    jitter: float = 0.05,
) -> SimulatedModel:
    """Write ``dest/BOXES.csv`` and ``dest/BREASTS.csv`` for the release at ``release_dir``."""
    if not 0 <= sensitivity <= 1:
        raise ValueError("sensitivity must be in [0, 1]")
    if fp_per_image < 0:
        raise ValueError("fp_per_image must be non-negative")
    release = read_release(release_dir)
    rng = np.random.default_rng([seed, 16])
    boxes: list[tuple[str, ...]] = []
    breasts: list[tuple[str, ...]] = []
    lesions = found = 0
    for study in sorted(release.studies, key=lambda s: s.study_id):
        images = sorted(study.images, key=lambda i: i.image_id)
        for image in images:
            seen: set[tuple[str, ...]] = set()
            for finding in image.findings:
                if finding.box.text in seen:
                    continue  # one box, several rows: one lesion
                seen.add(finding.box.text)
                lesions += 1
                draw = rng.random(6)
                if draw[0] >= sensitivity:
                    continue
                found += 1
                x0, y0, x1, y1 = finding.box.clipped(image.width, image.height)
                w, h = x1 - x0, y1 - y0
                shift = (draw[1:5] - 0.5) * 2 * jitter
                box = (x0 + shift[0] * w, y0 + shift[1] * h, x1 + shift[2] * w,
                       y1 + shift[3] * h)
                boxes.append(_box_row(image, box, 0.4 + 0.6 * draw[5],
                                      finding.categories[0]))
            for _ in range(int(rng.poisson(fp_per_image))):
                u = rng.random(5)
                w, h = image.width * (0.05 + 0.15 * u[0]), image.height * (0.05 + 0.15 * u[1])
                x0, y0 = (image.width - w) * u[2], (image.height - h) * u[3]
                boxes.append(_box_row(image, (x0, y0, x0 + w, y0 + h), 0.75 * u[4], None))
        for laterality in ("R", "L"):
            side = [i for i in images if i.laterality == laterality]
            if not side:
                continue
            birads, density = side[0].breast_birads, side[0].breast_density
            u = rng.random(3)
            score = 1 / (1 + math.exp(-(1.2 * (birads - 2.5) + rng.normal(0, 1.0))))
            predicted = birads if u[0] < 0.6 else int(np.clip(birads + (1 if u[1] < 0.5 else -1),
                                                            1, 5))
            d = DENSITIES.index(density)
            guess = d if u[2] < 0.7 else int(np.clip(d + (1 if u[1] < 0.5 else -1), 0, 3))
            breasts.append((study.study_id, laterality, f"{score:.4f}", str(predicted),
                            DENSITIES[guess]))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    boxes_csv = atomic_write(dest / "BOXES.csv", _csv(BOXES_HEADER, boxes))
    breasts_csv = atomic_write(dest / "BREASTS.csv", _csv(BREASTS_HEADER, breasts))
    return SimulatedModel(boxes_csv, breasts_csv, len(boxes), len(breasts), lesions, found)


def _box_row(image, box: tuple[float, float, float, float], score: float,
             label: str | None) -> tuple[str, ...]:
    """A BOXES.csv row, the box kept inside the image, two decimals."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[2], float(image.width)), min(box[3], float(image.height))
    return (image.study_id, image.image_id, f"{x0:.2f}", f"{y0:.2f}", f"{x1:.2f}", f"{y1:.2f}",
            f"{score:.4f}", label or "")


def _csv(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
