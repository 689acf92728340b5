"""Synthetic VinDr-Mammo 1.0.0 release: the layout, CSVs, defects and errata of the real one.

The real release cannot be used on our machines, so :func:`generate_release` writes a small
stand-in that reproduces everything ``shared/reference/vindr-release.md`` describes: the file
tree, the three CSVs with their quirks, the DICOM defects N1-N8 and the CSV errata.  Pixel
data are drawn breasts (a half-ellipse of textured tissue on the chest-wall edge), so that
orientation detection, windowing and box overlays can be tested on something breast-like.

Everything is derived from ``(studies, seed)``: the same arguments give byte-identical files.
``scale`` only divides the image sizes (and so the box coordinates); the studies, labels and
defects stay the same at every scale.

Modules, each depending only on those above it:

- :mod:`.vendors`: vendor profiles, their shares, chest-wall side and scaled image sizes;
- :mod:`.stats`: annotation statistics (weights, shares, box sites and overshoot);
- :mod:`.errata`: the planted errata (study roles, forced breasts, study-level errata keys);
- :mod:`.records`: the plan's records and what was written per image;
- :mod:`.plan`: planning of studies, images and boxes from ``(studies, seed)``, no I/O;
- :mod:`.boxes`: box sites in pixels and their CSV numbers;
- :mod:`.pixels`: the drawn breast and its burned-in label;
- :mod:`.encode`: DICOM attributes, dataset and Part-10 bytes;
- :mod:`.files`: writing images, CSVs, licence and checksums;
- :mod:`.summary`: :class:`SynthSummary` and where the errata ended up;
- :mod:`.generate`: :func:`generate_release`, the driver;
- :mod:`.model`: :func:`simulate_model`, a simulated AI model's predictions (for ``evaluate``).
"""

from __future__ import annotations

from .errata import STUDY_ERRATA, STUDY_ROLES
from .generate import generate_release
from .model import SimulatedModel, simulate_model
from .plan import hex_id, plan_studies
from .records import StudyPlan
from .summary import SynthSummary
from .vendors import CHEST_WALL_LEFT, chest_wall_on_left, scaled_size

__all__ = [
    "CHEST_WALL_LEFT",
    "STUDY_ERRATA",
    "STUDY_ROLES",
    "SimulatedModel",
    "StudyPlan",
    "SynthSummary",
    "chest_wall_on_left",
    "generate_release",
    "hex_id",
    "plan_studies",
    "scaled_size",
    "simulate_model",
]
