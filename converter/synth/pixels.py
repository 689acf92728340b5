"""Pixels: a drawn breast in stored values (a textured half-ellipse of tissue on the chest-wall
edge, the MLO pectoral muscle, brighter lesion blobs) and the burned-in view label (N8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .records import Geometry
from .vendors import VendorProfile, padding_value

# Texture amplitude of the tissue, by breast density.
DENSITY_TEXTURE: dict[str, float] = {"A": 0.04, "B": 0.08, "C": 0.12, "D": 0.16}

# 5x7 bitmap font for the burned-in view label (N8).
GLYPHS: dict[str, tuple[str, ...]] = {
    "C": ("01111", "10000", "10000", "10000", "10000", "10000", "01111"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "M": ("10001", "11011", "10101", "10101", "10001", "10001", "10001"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
}


def _interp_weights(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower node index and weight of the upper node, for n samples over k grid nodes."""
    positions = np.linspace(0.0, k - 1.0, n, dtype=np.float32)
    lower = np.minimum(positions.astype(np.intp), k - 2)
    return lower, positions - lower


def _smooth_noise(
    rng: np.random.Generator, rows: int, columns: int, grid: tuple[int, int]
) -> np.ndarray:
    """Low-frequency noise: a random grid bilinearly upsampled to rows x columns.

    Done with gathers, not matrix products: small BLAS calls cost more in thread start-up
    than in arithmetic.
    """
    nodes = rng.standard_normal(grid, dtype=np.float32)
    r, tr = _interp_weights(rows, grid[0])
    c, tc = _interp_weights(columns, grid[1])
    by_row = nodes[r] * (1 - tr)[:, None] + nodes[r + 1] * tr[:, None]
    return by_row[:, c] * (1 - tc) + by_row[:, c + 1] * tc


def _label_bitmap(text: str, rows: int) -> np.ndarray:
    """Boolean bitmap of ``text`` in the 5x7 font, glyphs about 1.6 % of the image height."""
    cells = [np.array([[c == "1" for c in line] for line in GLYPHS[ch]]) for ch in text]
    spaced = [np.pad(cell, ((0, 0), (0, 1))) for cell in cells]
    bitmap = np.hstack(spaced)[:, :-1]
    k = max(1, math.floor(rows * 8 / 3518 + 0.5))
    return np.kron(bitmap, np.ones((k, k), dtype=bool)).astype(bool)


def _burn_label(pixels: np.ndarray, text: str, chest_left: bool, value: int) -> None:
    """Burn ``text`` near the top edge, on the side away from the chest wall (N8)."""
    rows, columns = pixels.shape
    bitmap = _label_bitmap(text, rows)
    height, width = bitmap.shape
    top = max(1, round(0.02 * rows))
    margin = max(1, round(0.04 * columns))
    if top + height > rows or margin + width > columns:
        return
    left = columns - margin - width if chest_left else margin
    region = pixels[top : top + height, left : left + width]
    region[bitmap] = value


def render_pixels(
    profile: VendorProfile,
    geometry: Geometry,
    chest_left: bool,
    density: str,
    blobs: Sequence[tuple[float, float, float, float]],
    label: str | None,
    shape: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Stored pixel values (uint16) of a drawn breast.

    ``blobs`` are (x, y, sigma_x, sigma_y) of brighter lesions; ``label`` is burned in when
    given.  Background is the padding value (0 for MONOCHROME2, the maximum for MONOCHROME1,
    noise within the padding range where the vendor declares one).
    """
    rows, columns = shape
    maxval = (1 << profile.bits_stored) - 1
    y = np.arange(rows, dtype=np.float32)[:, None] + 0.5
    x = np.arange(columns, dtype=np.float32)[None, :] + 0.5
    u = x if chest_left else columns - x
    a, b = geometry.depth * columns, geometry.half_height * rows
    r2 = (u / a) ** 2 + ((y - geometry.center_y * rows) / b) ** 2
    inside = r2 < 1.0
    thickness = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    texture = 0.7 * _smooth_noise(rng, rows, columns, (8, 6)) + 0.5 * _smooth_noise(
        rng, rows, columns, (40, 30)
    )
    signal = 0.3 + 0.3 * np.sqrt(thickness) + DENSITY_TEXTURE[density] * texture * thickness
    signal += 0.015 * rng.standard_normal((rows, columns), dtype=np.float32)
    if geometry.pectoral is not None:
        muscle = u / (geometry.pectoral[0] * columns) + y / (geometry.pectoral[1] * rows) < 1.0
        signal = np.where(muscle, 0.78 + 0.03 * texture, signal)
        inside |= muscle
    for bx, by, sx, sy in blobs:
        _add_blob(signal, bx, by, sx, sy)
    tissue = np.clip(signal, 0.05, 0.97) * maxval
    floor = (profile.padding_range_limit or 0) + 1
    values = np.maximum(np.rint(tissue), floor).astype(np.uint16)
    if profile.photometric == "MONOCHROME1":
        values = (maxval - values).astype(np.uint16)
    pixels = np.where(inside, values, np.uint16(padding_value(profile)))
    if profile.padding_range_limit:
        noise = rng.integers(0, profile.padding_range_limit + 1, size=pixels.shape, dtype=np.uint16)
        pixels = np.where(inside, pixels, noise)
    if label:
        _burn_label(pixels, label, chest_left, maxval)
    return pixels.astype(np.uint16)


def _add_blob(signal: np.ndarray, x: float, y: float, sx: float, sy: float) -> None:
    """Brighten a Gaussian blob, computed on its 3-sigma neighbourhood only."""
    rows, columns = signal.shape
    r0, r1 = max(0, int(y - 3 * sy)), min(rows, int(y + 3 * sy) + 1)
    c0, c1 = max(0, int(x - 3 * sx)), min(columns, int(x + 3 * sx) + 1)
    if r0 >= r1 or c0 >= c1:
        return
    yy = (np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - y) / sy
    xx = (np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - x) / sx
    signal[r0:r1, c0:c1] += 0.18 * np.exp(-0.5 * (xx * xx + yy * yy))
