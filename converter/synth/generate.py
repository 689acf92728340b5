"""The driver: plan the studies, then draw, encode and write every image, the CSVs, the
licence and the checksums, and report where the errata went.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import ProgressCallback
from .boxes import box_pixels, format_coords, lesion_blob
from .encode import encode_image, image_attributes
from .files import write_checksums, write_csvs, write_image, write_license
from .pixels import render_pixels
from .plan import plan_studies
from .records import BoxRow, ImageOut, ImagePlan, StudyPlan
from .summary import SynthSummary, summarize
from .vendors import chest_wall_on_left, scaled_size


def generate_release(
    out: Path,
    studies: int,
    seed: int = 0,
    scale: float = 8.0,
    progress: ProgressCallback | None = None,
) -> SynthSummary:
    """Write a synthetic VinDr-Mammo release of ``studies`` exams into ``out``.

    ``out`` must be missing or empty.  ``scale`` divides the scale-1 image sizes (8 makes
    a Siemens image 440 x 350).  ``progress(done, total)`` is called with the number of
    images written so far.  Returns the counts and where each erratum/defect was planted.
    """
    if studies < 1:
        raise ValueError("studies must be at least 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if not scale > 0:
        raise ValueError("scale must be positive")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")

    plans = plan_studies(studies, seed)
    order = np.random.default_rng([seed, 2]).permutation(studies)
    checksums: dict[str, str] = {}
    written: list[ImageOut] = []
    total = sum(len(plan.images) for plan in plans)
    for position in order:
        study = plans[int(position)]
        outputs = [
            _write_image(out, study, image, seed, scale, checksums) for image in study.images
        ]
        written.extend(outputs)
        if progress is not None:
            progress(len(written), total)

    box_count, no_finding_count = write_csvs(out, written, checksums)
    write_license(out, studies, seed, scale, checksums)
    write_checksums(out, checksums)
    return summarize(plans, written, box_count, no_finding_count)


def _write_image(
    out: Path,
    study: StudyPlan,
    image: ImagePlan,
    seed: int,
    scale: float,
    checksums: dict[str, str],
) -> ImageOut:
    """Draw, encode and write one image; return what the CSVs need about it."""
    profile = study.profile
    rows, columns = scaled_size(profile, scale)
    chest_left = chest_wall_on_left(profile.manufacturer, image.laterality)
    box_rows, blobs = [], []
    for box in image.boxes:
        coords = box_pixels(box.site, image.geometry, chest_left, rows, columns, scale)
        text = format_coords(coords, box.site.style)
        box_rows.extend(BoxRow(labels, box.birads, text) for labels in box.label_rows)
        blobs.append(lesion_blob(coords, rows, columns))
    rng = np.random.default_rng([seed, 1, study.index, image.index])
    label = f"{image.laterality}-{image.view}" if profile.burned_in_label else None
    pixels = render_pixels(
        profile,
        image.geometry,
        chest_left,
        study.density[image.laterality],
        blobs,
        label,
        (rows, columns),
        rng,
    )
    attributes = image_attributes(study, image, rows, columns, scale)
    data = encode_image(attributes, profile, pixels, study.implicit_vr)
    write_image(out, study.study_id, image.image_id, data, checksums)
    return ImageOut(study, image, rows, columns, tuple(box_rows), attributes, chest_left)
