"""Planning: every study, image and box of a release, drawn from ``(studies, seed)``.

Pure (no I/O) and scale-independent: random study-level drafts, the planted errata of
:mod:`.errata` forced onto them, then the four images of each study with ids, tissue geometry
and box sites.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from converter.codes import FINDING_LABELS

from .errata import FORCED_BREASTS, STUDY_ROLES, Lesion
from .records import BoxPlan, Geometry, ImagePlan, Site, StudyPlan
from .stats import (
    AGE_RANGE,
    BIRADS2_BOX_SHARE,
    BIRADS_WEIGHTS,
    COORD_STYLES,
    DEFAULT_SITE,
    DENSITY_SAME_SIDES_SHARE,
    DENSITY_WEIGHTS,
    IMPLICIT_VR_SHARE,
    LABEL_COUNT_WEIGHTS,
    LABEL_SITES,
    LABEL_WEIGHTS,
    MISSING_AGE_SHARE,
    MULTI_SERIES_SHARE,
    NO_BIRADS_EMPTY_SHARE,
    NO_BIRADS_EXTRA_SHARE,
    NO_BIRADS_LABELS,
    ONE_VIEW_LESION_SHARE,
    OUTSIDE_BOX_SHARE,
    SECOND_LESION_SHARE,
    SERIES_LATERALITY_SHARE,
    SHARED_BOX_SHARE,
    TEST_SHARE,
)
from .vendors import (
    ODD_WIDTH_IMS,
    PLANMED,
    SIEMENS,
    VENDOR_PROFILES,
    VENDOR_SHARES,
    VendorProfile,
)

ORIGINAL_UID_ROOT = "1.2.826.0.1.3680043.9999"  # fake "original" UIDs the hex ids digest


@dataclass
class _StudyDraft:
    """Study-level choices before the images are laid out (mutable while errata are forced)."""

    index: int
    profile: VendorProfile
    split: str
    age: str | None
    age_mode: str
    implicit_vr: bool
    series_laterality: bool
    series_count: int
    two_lcc: bool
    birads: dict[str, int]
    density: dict[str, str]
    lesions: dict[str, tuple[Lesion, ...]]


def hex_id(*parts: object) -> str:
    """The 32-hex id of a fake original UID ``ORIGINAL_UID_ROOT.<parts>``."""
    uid = ".".join((ORIGINAL_UID_ROOT, *(str(p) for p in parts)))
    return hashlib.md5(uid.encode("ascii")).hexdigest()


def plan_studies(studies: int, seed: int) -> list[StudyPlan]:
    """The scale-independent plan of every study, in generation (not CSV) order."""
    rng = np.random.default_rng([seed, 0])
    drafts = [_draft_study(rng, index) for index in range(studies)]
    for index, role in STUDY_ROLES:
        if index < studies:
            _force_role(drafts[index], role)
    for forced in FORCED_BREASTS:
        if forced.study < studies:
            draft = drafts[forced.study]
            draft.birads[forced.laterality] = forced.birads
            draft.density[forced.laterality] = forced.density
            draft.lesions[forced.laterality] = forced.lesions
    return [_finish_study(rng, seed, draft) for draft in drafts]


def _choice(rng: np.random.Generator, weights: dict) -> object:
    """One key of ``weights`` drawn with probability proportional to its value."""
    keys = list(weights)
    p = np.array(list(weights.values()), dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _draft_study(rng: np.random.Generator, index: int) -> _StudyDraft:
    """Random study-level choices, before any erratum is forced."""
    profiles = VENDOR_PROFILES[str(_choice(rng, VENDOR_SHARES))]
    profile = profiles[int(rng.integers(len(profiles)))]
    age_mode = "present"
    if rng.random() < MISSING_AGE_SHARE:
        age_mode = "absent" if rng.random() < 0.5 else "empty"
    series_count = 1
    if rng.random() < MULTI_SERIES_SHARE:
        series_count = 2 if rng.random() < 0.5 else 4
    birads = {side: int(_choice(rng, BIRADS_WEIGHTS)) for side in ("L", "R")}
    density_l = str(_choice(rng, DENSITY_WEIGHTS))
    density_r = (
        density_l if rng.random() < DENSITY_SAME_SIDES_SHARE else str(_choice(rng, DENSITY_WEIGHTS))
    )
    age = int(rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1))
    return _StudyDraft(
        index=index,
        profile=profile,
        split="test" if rng.random() < TEST_SHARE else "training",
        age=f"{age:03d}Y",
        age_mode=age_mode,
        implicit_vr=bool(rng.random() < IMPLICIT_VR_SHARE),
        series_laterality=bool(rng.random() < SERIES_LATERALITY_SHARE),
        series_count=series_count,
        two_lcc=False,
        birads=birads,
        density={"L": density_l, "R": density_r},
        lesions={side: _random_lesions(rng, birads[side]) for side in ("L", "R")},
    )


def _force_role(draft: _StudyDraft, role: str) -> None:
    """Make ``draft`` carry the study-level erratum or property ``role``."""
    match role:
        case "explicit_vr" | "implicit_vr":
            draft.implicit_vr = role == "implicit_vr"
        case "training" | "test":
            draft.split = role
        case "two_series" | "four_series":
            draft.series_count = 2 if role == "two_series" else 4
        case "age_absent" | "age_empty":
            draft.age_mode = role.removeprefix("age_")
        case "two_lcc":
            draft.two_lcc = True
        case "series_laterality":
            draft.series_laterality = True
        case "siemens":
            draft.profile = SIEMENS
        case "planmed":
            draft.profile = PLANMED
        case "ims_odd_width":
            draft.profile = ODD_WIDTH_IMS
        case _:
            raise ValueError(f"unknown study role {role!r}")


def _draw_labels(rng: np.random.Generator) -> tuple[str, ...]:
    """1 to 4 distinct labels in random (not canonical) order."""
    count = int(_choice(rng, LABEL_COUNT_WEIGHTS))
    p = np.array([LABEL_WEIGHTS[label] for label in FINDING_LABELS])
    picks = rng.choice(len(FINDING_LABELS), size=count, replace=False, p=p / p.sum())
    return tuple(FINDING_LABELS[int(i)] for i in picks)


def _no_birads_lesion(rng: np.random.Generator, birads: int | None) -> Lesion:
    """A lymph node / skin / nipple finding, boxed on both views."""
    label = NO_BIRADS_LABELS[int(rng.integers(len(NO_BIRADS_LABELS)))]
    return Lesion((label,), birads)


def _random_lesions(rng: np.random.Generator, breast_birads: int) -> tuple[Lesion, ...]:
    """The findings of a breast of BI-RADS ``breast_birads`` (none for 1, rare for 2)."""
    if breast_birads == 2:
        return (_no_birads_lesion(rng, None),) if rng.random() < BIRADS2_BOX_SHARE else ()
    if breast_birads < 3:
        return ()
    lesions = []
    for _ in range(2 if rng.random() < SECOND_LESION_SHARE else 1):
        views = ("CC", "MLO")
        if rng.random() < ONE_VIEW_LESION_SHARE:
            views = (("CC",), ("MLO",))[int(rng.integers(2))]
        labels = _draw_labels(rng)
        also = ()
        if rng.random() < SHARED_BOX_SHARE:
            others = [label for label in FINDING_LABELS if label not in labels]
            also = ((others[int(rng.integers(len(others)))],),)
        outside = ""
        if rng.random() < OUTSIDE_BOX_SHARE:
            outside = "edge+bottom" if rng.random() < 0.5 else "edge"
        birads = int(rng.integers(3, breast_birads + 1))
        lesions.append(Lesion(labels, birads, views, also, outside))
    if rng.random() < NO_BIRADS_EXTRA_SHARE:
        empty = rng.random() < NO_BIRADS_EMPTY_SHARE
        lesions.append(
            _no_birads_lesion(rng, None if empty else int(rng.integers(3, breast_birads + 1)))
        )
    return tuple(lesions)


def _study_views(two_lcc: bool) -> list[tuple[str, str]]:
    """(laterality, view) of the four images in canonical order."""
    if two_lcc:
        return [("L", "CC"), ("L", "CC"), ("R", "CC"), ("R", "MLO")]
    return [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]


def _series_number(series_count: int, position: int, laterality: str) -> int:
    """1-based series of the image at canonical ``position`` (one, one per side, one each)."""
    if series_count == 4:
        return position + 1
    if series_count == 2:
        return 1 if laterality == "L" else 2
    return 1


def _finish_study(rng: np.random.Generator, seed: int, draft: _StudyDraft) -> StudyPlan:
    """Lay out the four images of ``draft`` with their ids, geometry and boxes."""
    k = draft.index
    images = []
    for position, (laterality, view) in enumerate(_study_views(draft.two_lcc)):
        series = _series_number(draft.series_count, position, laterality)
        boxes = tuple(
            BoxPlan((lesion.labels, *lesion.also), lesion.birads, _draw_site(rng, lesion, view))
            for lesion in draft.lesions[laterality]
            if view in lesion.views
        )
        images.append(
            ImagePlan(
                index=position,
                image_id=hex_id(seed, k, series, position + 1),
                series_id=hex_id(seed, k, series),
                laterality=laterality,
                view=view,
                geometry=_draw_geometry(rng, view),
                boxes=boxes,
                series_laterality=draft.series_laterality,
                window_shift=float(rng.uniform(-0.02, 0.02)),
            )
        )
    order = rng.permutation(len(images))
    return StudyPlan(
        index=k,
        study_id=hex_id(seed, k),
        profile=draft.profile,
        split=draft.split,
        age=draft.age if draft.age_mode == "present" else None,
        age_mode=draft.age_mode,
        implicit_vr=draft.implicit_vr,
        birads=dict(draft.birads),
        density=dict(draft.density),
        images=tuple(images[int(i)] for i in order),
    )


def _draw_geometry(rng: np.random.Generator, view: str) -> Geometry:
    """A random tissue ellipse; MLO ones are lower, reach the bottom edge and show a muscle."""
    depth = float(rng.uniform(0.55, 0.85))
    if view == "CC":
        return Geometry(depth, float(rng.uniform(0.42, 0.48)), float(rng.uniform(0.48, 0.52)), None)
    pectoral = (float(rng.uniform(0.25, 0.4)), float(rng.uniform(0.3, 0.45)))
    return Geometry(depth, float(rng.uniform(0.5, 0.55)), float(rng.uniform(0.55, 0.6)), pectoral)


def _draw_site(rng: np.random.Generator, lesion: Lesion, view: str) -> Site:
    """Where the box of ``lesion`` lies on a ``view`` image, and how its numbers are written."""
    site_label = next((label for label in lesion.labels if label in LABEL_SITES), None)
    (r0, r1), (t0, t1), (s0, s1) = LABEL_SITES.get(site_label, DEFAULT_SITE)
    radius = float(rng.uniform(r0, r1))
    angle = math.radians(float(rng.uniform(t0, t1)))
    outside = ""
    if lesion.outside:
        outside = "bottom" if view == "MLO" and "bottom" in lesion.outside else "edge"
    u = radius * math.cos(angle)
    if outside == "bottom":
        u = float(rng.uniform(0.1, 0.35))
    return Site(
        u=u,
        v=radius * math.sin(angle),
        half_w=float(rng.uniform(s0, s1)),
        half_h=float(rng.uniform(s0, s1)),
        outside=outside,
        overshoot=float(rng.uniform(0.15, 1.0)),
        style=str(_choice(rng, COORD_STYLES)),
    )
