"""The one rule that turns a finding box into pixels, shared by the SEG writer and the validator.

Coordinates are image coordinates: x = column, y = row, origin at the top-left corner of the
top-left pixel, so pixel ``(r, c)`` covers ``[c, c+1] x [r, r+1]`` and its centre is
``(c + 0.5, r + 0.5)``.

- The SR stores a box as a closed 5-point SCOORD POLYLINE, clipped to ``0..Columns`` /
  ``0..Rows`` and rounded to float32 (Graphic Data is FL).  :func:`scoord_box` gives exactly
  those four values, so a mask computed from the record and a mask computed from the SR read
  back are the same.
- Pixel ``(r, c)`` belongs to the box iff its centre lies in the closed box.  If no pixel
  qualifies (a box thinner than a pixel between two centres), the mask is the single pixel
  containing the box centre, clamped to the image: every box gets at least one pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..records import Box

BoxValues = tuple[float, float, float, float]


def _f32(value: float) -> float:
    return float(np.float32(value))


def scoord_box(box: Box | Sequence[float], rows: int, columns: int) -> BoxValues:
    """``(xmin, ymin, xmax, ymax)`` clipped to the image and rounded to float32.

    Parameters
    ----------
    box: converter.records.Box | Sequence[float]
        A record box, or four values (e.g. read back from an SR).
    rows, columns: int
        Image size.

    Returns
    -------
    tuple[float, float, float, float]
        The values the SR SCOORD holds; idempotent.
    """
    if isinstance(box, Box):
        values: Sequence[float] = box.clipped(columns, rows)
    else:
        xmin, ymin, xmax, ymax = (float(v) for v in box)
        values = (
            min(max(xmin, 0.0), float(columns)),
            min(max(ymin, 0.0), float(rows)),
            min(max(xmax, 0.0), float(columns)),
            min(max(ymax, 0.0), float(rows)),
        )
    xmin, ymin, xmax, ymax = (_f32(v) for v in values)
    return xmin, ymin, xmax, ymax


def box_to_polyline(box: Sequence[float]) -> np.ndarray:
    """The closed 5-point polyline ``(xmin,ymin) (xmax,ymin) (xmax,ymax) (xmin,ymax) (xmin,ymin)``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (5, 2), (column, row) pairs.
    """
    xmin, ymin, xmax, ymax = box
    return np.array(
        [[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax], [xmin, ymin]],
        dtype=np.float32,
    )


def polyline_to_box(points: Sequence[float] | np.ndarray) -> BoxValues:
    """Inverse of :func:`box_to_polyline`.

    Parameters
    ----------
    points: Sequence[float] | numpy.ndarray
        Flat Graphic Data ``x0, y0, x1, y1, ...`` or an (N, 2) array.

    Returns
    -------
    tuple[float, float, float, float]
        ``(xmin, ymin, xmax, ymax)``.

    Raises
    ------
    ValueError
        Unless the points are a closed, axis-aligned 5-point rectangle in the order above.
    """
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if array.shape != (5, 2):
        raise ValueError(f"a box polyline has 5 points, got {array.shape[0]}")
    xmin, ymin = array[0]
    xmax, ymax = array[2]
    expected = box_to_polyline((xmin, ymin, xmax, ymax)).astype(np.float64)
    if not np.array_equal(array, expected):
        raise ValueError(f"not a closed axis-aligned box polyline: {array.tolist()}")
    if not (xmin <= xmax and ymin <= ymax):
        raise ValueError(f"box polyline with min above max: {array.tolist()}")
    return float(xmin), float(ymin), float(xmax), float(ymax)


def _centre_range(low: float, high: float, size: int) -> tuple[int, int]:
    """First and last index i in 0..size-1 with low <= i + 0.5 <= high (first > last if none)."""
    first = max(math.ceil(low - 0.5), 0)
    last = min(math.floor(high - 0.5), size - 1)
    return first, last


def box_window(box: Box | Sequence[float], rows: int, columns: int) -> tuple[slice, slice]:
    """The (row, column) slices of the pixels whose centre lies in the box.

    The mask of a box is a rectangle, so these two ranges are all of it: :func:`box_mask`
    fills them in a full image, the SEG writer in its own frame array, and no full-size
    boolean array is needed to know which pixels a box covers.

    Parameters
    ----------
    box: converter.records.Box | Sequence[float]
        The box; clipped and float32-rounded first (:func:`scoord_box`).
    rows, columns: int
        Image size.

    Returns
    -------
    tuple[slice, slice]
        Non-empty slices (at least one pixel, see the module docstring).
    """
    xmin, ymin, xmax, ymax = scoord_box(box, rows, columns)
    c0, c1 = _centre_range(xmin, xmax, columns)
    r0, r1 = _centre_range(ymin, ymax, rows)
    if c0 <= c1 and r0 <= r1:
        return slice(r0, r1 + 1), slice(c0, c1 + 1)
    c = min(max(math.floor((xmin + xmax) / 2.0), 0), columns - 1)
    r = min(max(math.floor((ymin + ymax) / 2.0), 0), rows - 1)
    return slice(r, r + 1), slice(c, c + 1)


def box_mask(box: Box | Sequence[float], rows: int, columns: int) -> np.ndarray:
    """Boolean mask (rows, columns) of the pixels whose centre lies in the box.

    Parameters
    ----------
    box: converter.records.Box | Sequence[float]
        The box; clipped and float32-rounded first (:func:`scoord_box`).
    rows, columns: int
        Image size.

    Returns
    -------
    numpy.ndarray
        dtype bool, at least one True pixel (the rectangle of :func:`box_window`).
    """
    mask = np.zeros((rows, columns), dtype=bool)
    mask[box_window(box, rows, columns)] = True
    return mask
