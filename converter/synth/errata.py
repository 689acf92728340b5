"""Planted errata: the study roles and forced breasts that put every defect and erratum of the
real release into even a small synthetic one, and which errata keys hold study ids.
"""

from __future__ import annotations

from dataclasses import dataclass

# (study index, role): applied when the release has more studies than the index.
STUDY_ROLES: tuple[tuple[int, str], ...] = (
    (0, "explicit_vr"),
    (0, "siemens"),
    (0, "training"),
    (1, "implicit_vr"),
    (1, "test"),
    (2, "two_series"),
    (3, "four_series"),
    (4, "age_absent"),
    (5, "age_empty"),
    (6, "two_lcc"),
    (7, "series_laterality"),
    (8, "planmed"),
    (9, "ims_odd_width"),
)


@dataclass(frozen=True)
class Lesion:
    """One finding of a breast: its labels, BI-RADS and the views that box it.

    ``also`` are further label lists written as extra rows with the same box; ``outside`` is
    "" or "edge" (past the chest-wall edge) or "edge+bottom" (MLO boxes past the bottom edge).
    """

    labels: tuple[str, ...]
    birads: int | None
    views: tuple[str, ...] = ("CC", "MLO")
    also: tuple[tuple[str, ...], ...] = ()
    outside: str = ""


@dataclass(frozen=True)
class ForcedBreast:
    """A breast whose BI-RADS, density and findings are planted rather than drawn."""

    study: int  # study index; skipped when the release is smaller
    laterality: str
    birads: int
    density: str
    lesions: tuple[Lesion, ...]


# Together these use all ten labels, 2/3/4-label boxes, a shared box, boxes outside the
# image (one with x < 0), empty finding_birads on BI-RADS 2 and 3-5 breasts, No Finding views
# of BI-RADS 3-5 breasts and a study whose sides differ in density.
# fmt: off
FORCED_BREASTS: tuple[ForcedBreast, ...] = (
    ForcedBreast(0, "L", 4, "C", (
        Lesion(("Nipple Retraction", "Mass"), 4, also=(("Suspicious Calcification",),)),
    )),
    ForcedBreast(0, "R", 2, "B", (Lesion(("Skin Thickening",), None, ("CC",)),)),
    ForcedBreast(1, "L", 3, "B", (Lesion(("Asymmetry",), 3, outside="edge+bottom"),)),
    ForcedBreast(1, "R", 5, "D", (
        Lesion(("Architectural Distortion", "Suspicious Calcification", "Focal Asymmetry"), 5,
               ("MLO",)),
    )),
    ForcedBreast(2, "L", 4, "C", (
        Lesion(("Global Asymmetry", "Mass", "Suspicious Lymph Node", "Skin Retraction"), 4),
        Lesion(("Suspicious Lymph Node",), None, ("MLO",)),
    )),
    ForcedBreast(2, "R", 3, "C", (Lesion(("Focal Asymmetry",), 3, ("CC",)),)),
)
# fmt: on

# errata keys holding study ids; every other key holds image ids.
STUDY_ERRATA: tuple[str, ...] = (
    "two_lcc",
    "two_series",
    "four_series",
    "implicit_vr",
    "missing_age",
    "age_absent",
    "age_empty",
    "density_differs",
)
