"""Records: the scale-independent plan of a release (studies, images, tissue, box sites) and
what was written for each image.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vendors import VendorProfile


@dataclass(frozen=True)
class Geometry:
    """The tissue half-ellipse, as fractions of the image size (scale-independent)."""

    depth: float  # ellipse semi-axis away from the chest wall, fraction of Columns
    half_height: float  # vertical semi-axis, fraction of Rows
    center_y: float  # ellipse centre row, fraction of Rows
    pectoral: tuple[float, float] | None  # MLO muscle triangle (width, height fractions)


@dataclass(frozen=True)
class Site:
    """Where one box lies, in units of the tissue ellipse (scale-independent)."""

    u: float  # distance from the chest wall, fraction of the ellipse depth
    v: float  # offset from the ellipse centre row, fraction of its half-height
    half_w: float
    half_h: float
    outside: str  # "", "edge" or "bottom"
    overshoot: float  # 0..1 of the maximum overshoot past the image
    style: str  # coordinate text style, a key of COORD_STYLES


@dataclass(frozen=True)
class BoxPlan:
    """One box: the label lists of its rows (2+ = a shared box), its BI-RADS and site."""

    label_rows: tuple[tuple[str, ...], ...]
    birads: int | None
    site: Site


@dataclass(frozen=True)
class ImagePlan:
    """One image of a study: ids, view, tissue geometry and boxes (scale-independent)."""

    index: int  # position in the canonical L-CC, L-MLO, R-CC, R-MLO order
    image_id: str
    series_id: str
    laterality: str
    view: str
    geometry: Geometry
    boxes: tuple[BoxPlan, ...]
    series_laterality: bool  # N7
    window_shift: float


@dataclass(frozen=True)
class StudyPlan:
    """One study: vendor, split, age, encoding, per-breast assessments and its images."""

    index: int
    study_id: str
    profile: VendorProfile
    split: str
    age: str | None  # "053Y"; None when absent or empty
    age_mode: str  # "present" / "absent" / "empty"
    implicit_vr: bool
    birads: dict[str, int]
    density: dict[str, str]
    images: tuple[ImagePlan, ...]  # in CSV order


@dataclass(frozen=True)
class BoxRow:
    """One finding_annotations.csv row of a box: its labels, finding BI-RADS and the
    coordinates as written."""

    labels: tuple[str, ...]
    birads: int | None
    coords: tuple[str, str, str, str]


@dataclass(frozen=True)
class ImageOut:
    """One written image: its plan, size, box rows and DICOM attributes."""

    study: StudyPlan
    image: ImagePlan
    rows: int
    columns: int
    box_rows: tuple[BoxRow, ...]
    attributes: dict[str, object]
    chest_wall_left: bool
