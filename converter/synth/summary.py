"""Summary: what :func:`generate_release` wrote and where each planted erratum/defect ended up,
found in what was written rather than in the plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .records import ImageOut, StudyPlan


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_release` wrote, and where each planted erratum/defect is.

    ``errata`` keys in :data:`STUDY_ERRATA` list study ids, all others image ids.
    ``vendors`` maps a vendor key (siemens/planmed/ims) to its study ids;
    ``chest_wall_left`` tells, per image id, whether the chest wall is on the left edge.
    """

    studies: int
    images: int
    box_rows: int
    no_finding_rows: int
    errata: dict[str, list[str]] = field(default_factory=dict)
    vendors: dict[str, list[str]] = field(default_factory=dict)
    chest_wall_left: dict[str, bool] = field(default_factory=dict)


def summarize(
    plans: Sequence[StudyPlan],
    written: Sequence[ImageOut],
    box_rows: int,
    no_finding_rows: int,
) -> SynthSummary:
    """The summary of a release planned as ``plans`` and written as ``written``."""
    return SynthSummary(
        studies=len(plans),
        images=len(written),
        box_rows=box_rows,
        no_finding_rows=no_finding_rows,
        errata=_errata(written),
        vendors=_vendors(plans),
        chest_wall_left={o.image.image_id: o.chest_wall_left for o in written},
    )


def _vendors(plans: Sequence[StudyPlan]) -> dict[str, list[str]]:
    """Vendor key -> study ids."""
    vendors: dict[str, list[str]] = {}
    for plan in plans:
        vendors.setdefault(plan.profile.key, []).append(plan.study_id)
    return vendors


def _errata(written: Sequence[ImageOut]) -> dict[str, list[str]]:
    """Where each erratum/defect ended up, found in what was written (not in the plan)."""
    errata: dict[str, list[str]] = {}

    def add(key: str, value: str) -> None:
        ids = errata.setdefault(key, [])
        if value not in ids:
            ids.append(value)

    for study_id, images in _by_study(written).items():
        _study_errata(study_id, images, add)
    for o in written:
        _image_errata(o, add)
    return errata


def _by_study(written: Sequence[ImageOut]) -> dict[str, list[ImageOut]]:
    studies: dict[str, list[ImageOut]] = {}
    for o in written:
        studies.setdefault(o.study.study_id, []).append(o)
    return studies


def _study_errata(
    study_id: str, images: Sequence[ImageOut], add: Callable[[str, str], None]
) -> None:
    study = images[0].study
    views = Counter((o.image.laterality, o.image.view) for o in images)
    if views[("L", "CC")] == 2:
        add("two_lcc", study_id)
    series = len({o.image.series_id for o in images})
    if series in (2, 4):
        add({2: "two_series", 4: "four_series"}[series], study_id)
    if study.implicit_vr:
        add("implicit_vr", study_id)
    if study.age_mode != "present":
        add("missing_age", study_id)
        add(f"age_{study.age_mode}", study_id)
    if study.density["L"] != study.density["R"]:
        add("density_differs", study_id)


def _image_errata(o: ImageOut, add: Callable[[str, str], None]) -> None:
    image_id = o.image.image_id
    breast_birads = o.study.birads[o.image.laterality]
    boxes = Counter(row.coords for row in o.box_rows)
    for row in o.box_rows:
        values = [float(v) for v in row.coords]
        if values[0] < 0 or values[1] < 0 or values[2] > o.columns or values[3] > o.rows:
            add("box_outside", image_id)
        if min(values) < 0:
            add("negative_coordinate", image_id)
        if row.birads is None:
            add("empty_finding_birads", image_id)
        if breast_birads == 2:
            add("birads2_box", image_id)
        if boxes[row.coords] > 1:
            add("shared_box", image_id)
        if len(row.labels) > 1:
            add(f"multi_label_{len(row.labels)}", image_id)
    if not o.box_rows and breast_birads >= 3:
        add("nofinding_on_suspicious_breast", image_id)
    attributes = o.attributes
    if attributes["Laterality"] is not None:
        add("series_laterality", image_id)
    if attributes["PixelSpacing"] is not None:
        add("pixel_spacing", image_id)
    if attributes["PixelPaddingRangeLimit"] is not None:
        add("padding_range_limit", image_id)
    if isinstance(attributes["WindowCenter"], list):
        add("multi_window", image_id)
    if o.study.profile.burned_in_label:
        add("burned_in_label", image_id)
    if o.columns % 2:
        add("odd_width", image_id)
