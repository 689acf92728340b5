"""Boxes in pixels: a planned box site placed on an image of a given size, the numbers the
CSV writes for it and the lesion blob drawn under it.
"""

from __future__ import annotations

import math

import numpy as np

from .records import Geometry, Site
from .stats import OUTSIDE_NEGATIVE_PX, OUTSIDE_POSITIVE_PX


def box_pixels(
    site: Site, geometry: Geometry, chest_left: bool, rows: int, columns: int, scale: float
) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a box in the pixel space of a ``rows`` x ``columns`` image."""
    a = geometry.depth * columns
    b = geometry.half_height * rows
    cy = geometry.center_y * rows
    hw = min(max(site.half_w * a, 1.5), columns / 4)
    hh = min(max(site.half_h * b, 1.5), rows / 4)
    yc = _clamp(cy + site.v * b, hh + 1, rows - hh - 1)
    uc = _clamp(site.u * a, hw + 1, columns - hw - 1)
    if site.outside == "edge":
        limit = OUTSIDE_NEGATIVE_PX if chest_left else OUTSIDE_POSITIVE_PX
        uc = hw - site.overshoot * limit / scale  # the box starts past the chest-wall edge
    elif site.outside == "bottom":
        yc = rows + site.overshoot * OUTSIDE_POSITIVE_PX / scale - hh
    u0, u1 = uc - hw, uc + hw
    x0, x1 = (u0, u1) if chest_left else (columns - u1, columns - u0)
    return x0, yc - hh, x1, yc + hh


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def format_coords(box: tuple[float, float, float, float], style: str) -> tuple[str, str, str, str]:
    """The four numbers as the CSV writes them in ``style`` (mins rounded down, maxes up)."""
    xmin, ymin, xmax, ymax = box
    return (
        _format_number(xmin, style, upper=False),
        _format_number(ymin, style, upper=False),
        _format_number(xmax, style, upper=True),
        _format_number(ymax, style, upper=True),
    )


def _format_number(value: float, style: str, upper: bool) -> str:
    """``1234.5678710938`` (float32, 14 digits), ``1500.25`` (quarters) or a float64 repr."""
    if style == "float32":
        text = format(float(np.float32(value)), ".14g")
    elif style == "short":
        quarters = math.ceil(value * 4) if upper else math.floor(value * 4)
        text = repr(quarters / 4)
    else:
        text = repr(float(value))
    return f"{value:.4f}" if "e" in text else text


def lesion_blob(
    coords: tuple[float, float, float, float], rows: int, columns: int
) -> tuple[float, float, float, float]:
    """A lesion blob centred in the visible part of a box."""
    x0, y0 = max(coords[0], 0.0), max(coords[1], 0.0)
    x1, y1 = min(coords[2], float(columns)), min(coords[3], float(rows))
    return (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 4, 0.7), max((y1 - y0) / 4, 0.7)
