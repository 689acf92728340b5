"""Annotation statistics, skewed towards findings so that small releases show everything.

Weights of BI-RADS, density and labels, shares of the rarer properties, how far boxes may
overshoot the image and where each label's boxes sit.
"""

from __future__ import annotations

BIRADS_WEIGHTS: dict[int, float] = {1: 0.45, 2: 0.25, 3: 0.12, 4: 0.12, 5: 0.06}
DENSITY_WEIGHTS: dict[str, float] = {"A": 0.05, "B": 0.2, "C": 0.6, "D": 0.15}
LABEL_WEIGHTS: dict[str, float] = {
    "Mass": 0.34,
    "Suspicious Calcification": 0.22,
    "Focal Asymmetry": 0.1,
    "Architectural Distortion": 0.07,
    "Asymmetry": 0.05,
    "Skin Thickening": 0.05,
    "Suspicious Lymph Node": 0.06,
    "Nipple Retraction": 0.04,
    "Global Asymmetry": 0.03,
    "Skin Retraction": 0.04,
}
LABEL_COUNT_WEIGHTS: dict[int, float] = {1: 0.85, 2: 0.1, 3: 0.04, 4: 0.01}
# Labels whose box rows may carry an empty finding_birads (and the only ones a BI-RADS 2
# breast may have boxed).
NO_BIRADS_LABELS: tuple[str, ...] = (
    "Suspicious Lymph Node",
    "Skin Thickening",
    "Skin Retraction",
    "Nipple Retraction",
)
TEST_SHARE = 0.2
MISSING_AGE_SHARE = 0.11
IMPLICIT_VR_SHARE = 0.05
SERIES_LATERALITY_SHARE = 0.15
MULTI_SERIES_SHARE = 0.006
AGE_RANGE = (40, 75)
SECOND_LESION_SHARE = 0.2
ONE_VIEW_LESION_SHARE = 0.25  # boxed on one view only: the other is a No Finding image
SHARED_BOX_SHARE = 0.04
OUTSIDE_BOX_SHARE = 0.06
NO_BIRADS_EXTRA_SHARE = 0.15  # extra lymph node / skin / nipple finding on a BI-RADS 3-5 breast
NO_BIRADS_EMPTY_SHARE = 0.7
BIRADS2_BOX_SHARE = 0.05
DENSITY_SAME_SIDES_SHARE = 0.9

# Box overshoot past the image at scale 1 (divided by --scale).
OUTSIDE_NEGATIVE_PX = 27.0
OUTSIDE_POSITIVE_PX = 41.0
COORD_STYLES: dict[str, float] = {"float32": 0.5, "short": 0.25, "float64": 0.25}

# Where a box sits, by label: (radius range, angle range in degrees, half-size range),
# in units of the tissue half-ellipse (angle 0 = towards the nipple, negative = upwards).
DEFAULT_SITE = ((0.15, 0.75), (-60.0, 60.0), (0.04, 0.12))
LABEL_SITES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "Nipple Retraction": ((0.85, 0.93), (-8.0, 8.0), (0.03, 0.06)),
    "Skin Thickening": ((0.82, 0.92), (-60.0, 60.0), (0.03, 0.08)),
    "Skin Retraction": ((0.82, 0.92), (-60.0, 60.0), (0.03, 0.08)),
    "Suspicious Lymph Node": ((0.55, 0.8), (-75.0, -50.0), (0.03, 0.06)),
}
