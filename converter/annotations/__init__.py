"""The annotation objects: each writer beside its reader, and the checks between them.

- :mod:`.sr`: one Comprehensive SR (TID 1500) per exam: :func:`build_sr` / :func:`read_sr`.
- :mod:`.seg`: one BINARY Segmentation per annotated image: :func:`build_seg` / :func:`read_seg`.
- :mod:`.masks`: the box geometry both share (SCOORD polyline, pixel-centre mask rule).
- :mod:`.checks`: :func:`check_sr_seg`, the SR/SEG/image/context-group cross-checks.
- :mod:`.common`: our fixed identity stamp and code keys.
"""

from .checks import check_sr_seg
from .seg import build_seg, read_seg
from .sr import SrBreast, SrFinding, SrReport, build_sr, read_sr

__all__ = [
    "SrBreast",
    "SrFinding",
    "SrReport",
    "build_seg",
    "build_sr",
    "check_sr_seg",
    "read_seg",
    "read_sr",
]
