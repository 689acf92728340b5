"""Vendors: what each detector model writes, how often it occurs, where it puts the chest wall.

Sizes are given at scale 1; :func:`scaled_size` divides them for a release of smaller images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class VendorProfile:
    """What one detector model writes: sizes at scale 1, pixel encoding, optional attributes."""

    key: str  # "siemens" / "planmed" / "ims"
    manufacturer: str
    model: str
    rows: int
    columns: int
    photometric: str
    bits_stored: int
    spacing_mm: float  # ImagerPixelSpacing at scale 1
    pixel_spacing: bool  # also writes PixelSpacing (likely why only ~19 % of rows have it)
    burned_in_label: bool  # N8
    padding_range_limit: int | None  # PixelPaddingRangeLimit; background noise up to it
    # (centre, width, explanation) as fractions of the signal range; 2+ make multi-values
    windows: tuple[tuple[float, float, str], ...]
    voi_luts: int  # items in VOILUTSequence


SIEMENS = VendorProfile(
    key="siemens",
    manufacturer="SIEMENS",
    model="Mammomat Inspiration",
    rows=3518,
    columns=2800,
    photometric="MONOCHROME2",
    bits_stored=12,
    spacing_mm=0.085,
    pixel_spacing=False,
    burned_in_label=True,
    padding_range_limit=None,
    windows=((0.56, 0.72, "NORMAL"),),
    voi_luts=5,
)
PLANMED = VendorProfile(
    key="planmed",
    manufacturer="Planmed",
    model="Planmed Nuance",
    rows=2812,
    columns=2012,
    photometric="MONOCHROME1",
    bits_stored=14,
    spacing_mm=0.1,
    pixel_spacing=True,
    burned_in_label=False,
    padding_range_limit=None,
    windows=((0.56, 0.75, "DEFAULT"),),
    voi_luts=0,
)
IMS_3DL = VendorProfile(
    key="ims",
    manufacturer="IMS s.r.l.",
    model="GIOTTO IMAGE 3DL",
    rows=3580,
    columns=2812,
    photometric="MONOCHROME2",
    bits_stored=13,
    spacing_mm=0.085,
    pixel_spacing=False,
    burned_in_label=False,
    padding_range_limit=24,
    windows=((0.55, 0.7, "NORMAL"), (0.5, 1.0, "FULL")),
    voi_luts=0,
)
IMS_PROFILES: tuple[VendorProfile, ...] = (
    IMS_3DL,
    replace(IMS_3DL, manufacturer="IMS GIOTTO S.p.A.", model="GIOTTO CLASS", columns=2531),
    replace(IMS_3DL, manufacturer="IMS GIOTTO S.p.A.", model="GIOTTO CLASS", columns=2647),
)
ODD_WIDTH_IMS = IMS_PROFILES[1]
VENDOR_PROFILES: dict[str, tuple[VendorProfile, ...]] = {
    "siemens": (SIEMENS,),
    "planmed": (PLANMED,),
    "ims": IMS_PROFILES,
}
VENDOR_SHARES: dict[str, float] = {"siemens": 0.76, "planmed": 0.19, "ims": 0.05}

# Which image edge holds the chest wall, by Manufacturer and ImageLaterality: SIEMENS and IMS
# store the standard display (left breast: chest wall on the left edge; right breast: on the
# right edge); Planmed stores every image with the chest wall on the left edge.
CHEST_WALL_LEFT: dict[str, dict[str, bool]] = {
    "SIEMENS": {"L": True, "R": False},
    "IMS s.r.l.": {"L": True, "R": False},
    "IMS GIOTTO S.p.A.": {"L": True, "R": False},
    "Planmed": {"L": True, "R": True},
}

VOI_LUT_EXPLANATIONS = ("NORMAL", "HARDER", "SOFTER", "HIGH CONTRAST", "LOW CONTRAST")


def scaled_size(profile: VendorProfile, scale: float) -> tuple[int, int]:
    """(Rows, Columns) at ``scale``: scale-1 sizes divided and rounded; odd widths stay odd."""
    rows = max(8, math.floor(profile.rows / scale + 0.5))
    columns = max(8, math.floor(profile.columns / scale + 0.5))
    if profile.columns % 2 and columns % 2 == 0:
        columns += 1
    return rows, columns


def chest_wall_on_left(manufacturer: str, laterality: str) -> bool:
    """True when ``manufacturer`` stores ``laterality`` images with the chest wall on the left."""
    return CHEST_WALL_LEFT[manufacturer][laterality]


def padding_value(profile: VendorProfile) -> int:
    """PixelPaddingValue: the background value (maximum for MONOCHROME1)."""
    return (1 << profile.bits_stored) - 1 if profile.photometric == "MONOCHROME1" else 0
