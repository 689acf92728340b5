"""Naming rules, in one place: UIDs, patient and study identity, the split, tracking
identifiers and the CSV value formats.

Writers and readers both use these functions, so the export round trip reads with the same
rules it wrote with.

UIDs
    A VinDr id is the 32-digit hex MD5 digest of an original UID. ``2.25.`` followed by the
    decimal value of those 128 bits is a valid UID (PS3.5 B.2) of at most 44 characters, and
    the mapping inverts exactly (:func:`hex_to_uid`, :func:`uid_to_hex`). Objects we create
    (SR, SEG, their series, tracking UIDs) get UIDs derived by hashing a name
    (:func:`derived_uid`), so re-runs give the same UIDs.
Patient and study
    One patient per exam, ``VINDR-<study_id>`` (:func:`patient_id`); the split is the study
    description ``VinDr-Mammo-<split>`` (:func:`study_description`, :func:`split_of`).
Tracking identifiers
    ``VinDr finding <labels> [BI-RADS <n>] box <xmin> <ymin> <xmax> <ymax>`` for a finding box row
    (:func:`format_finding_identifier`, :func:`parse_finding_identifier`).
CSV values
    ``BI-RADS 4``, ``DENSITY C`` and the Python-list literal of ``finding_categories``, parsed
    and written exactly as the release does.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import codes
from .records import Box

# --- UIDs -------------------------------------------------------------------------------------

_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_UUID_UID = re.compile(r"^2\.25\.(0|[1-9][0-9]{0,38})$")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_hex_id(value: str) -> bool:
    """True for a VinDr id: 32 lowercase hex digits."""
    return bool(_HEX_ID.match(value))


def is_valid_uid(value: str) -> bool:
    """True when ``value`` is a syntactically valid UID (PS3.5 9.1)."""
    return 0 < len(value) <= 64 and bool(_UID.match(value))


def hex_to_uid(hex_id: str) -> str:
    """``2.25.<decimal>`` for a VinDr hex id; raises ValueError on anything else."""
    if not is_hex_id(hex_id):
        raise ValueError(f"not a VinDr hex id (32 lowercase hex digits): {hex_id!r}")
    return f"2.25.{int(hex_id, 16)}"


def uid_to_hex(uid: str) -> str:
    """Inverse of :func:`hex_to_uid`; raises ValueError for a UID not made by it."""
    match = _UUID_UID.match(uid)
    if not match or int(match.group(1)) >= 1 << 128:
        raise ValueError(f"not a 2.25 UID derived from a VinDr id: {uid!r}")
    return format(int(match.group(1)), "032x")


def derived_uid(*names: str) -> str:
    """A deterministic ``2.25`` UID for an object we create, named by ``names``.

    The 128 bits are the first half of SHA-256 over the names with a project-specific
    prefix, so they never coincide with a VinDr digest mapped by :func:`hex_to_uid`.
    """
    digest = hashlib.sha256("\x1f".join(("vindr-dicom", *names)).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def sr_uids(study_id: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the exam's SR."""
    return derived_uid("sr-series", study_id), derived_uid("sr", study_id)


def model_sr_uids(name: str, version: str, study_id: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of model ``name`` ``version``'s SR of an exam.

    A series of its own per model and version (in each exam): two models, or two versions
    of one, coexist; a re-import gives the same UIDs.
    """
    return (derived_uid("model-sr-series", name, version, study_id),
            derived_uid("model-sr", name, version, study_id))


def model_tracking_uid(name: str, version: str, study_id: str, image_id: str, index: int) -> str:
    """Tracking UID of the ``index``-th (0-based, CSV order) box of a model on an image."""
    return derived_uid("model-finding", name, version, study_id, image_id, str(index))


def is_ground_truth_sr(sop_instance_uid: str, study_uid: str) -> bool:
    """True for the converter's own SR of the exam (the radiologists' annotations)."""
    try:
        study_id = uid_to_hex(study_uid)
    except ValueError:
        return False
    return sop_instance_uid == sr_uids(study_id)[1]


def finding_tracking_uid(study_id: str, image_id: str, index: int) -> str:
    """Tracking UID of the ``index``-th (0-based, CSV order) finding of an image.

    Shared by the SR group and the SEG segment of the same box row.
    """
    return derived_uid("finding", study_id, image_id, str(index))


# --- patient, study, split ---------------------------------------------------------------------


def patient_id(study_id: str) -> str:
    """One patient per exam: the data set links no two exams to one person."""
    return f"{codes.PATIENT_ID_PREFIX}{study_id}"


def patient_name(study_id: str) -> str:
    """PatientName of an exam's patient (no PHI: built from the study id)."""
    return f"VINDR^{study_id}"


def study_description(split: str) -> str:
    """StudyDescription carrying the split: ``VinDr-Mammo-training`` / ``VinDr-Mammo-test``."""
    return f"{codes.STUDY_DESCRIPTION_PREFIX}{split}"


def split_of(description: str) -> str:
    """Inverse of :func:`study_description`; ``''`` for a description not made by it."""
    prefix = codes.STUDY_DESCRIPTION_PREFIX
    return description[len(prefix):] if description.startswith(prefix) else ""


# --- CSV values ------------------------------------------------------------------------------

_BIRADS = re.compile(r"^BI-RADS ([0-9])$")
_DENSITY = re.compile(r"^DENSITY ([A-D])$")


def parse_birads(text: str) -> int:
    """``'BI-RADS 4'`` -> 4; raises ValueError otherwise, and for a category outside the
    scale that can be encoded (:data:`codes.BIRADS_CODES`, 0..5: BI-RADS 6 is not used)."""
    match = _BIRADS.match(text)
    if not match:
        raise ValueError(f"not a BI-RADS value: {text!r}")
    value = int(match.group(1))
    if value not in codes.BIRADS_CODES:
        raise ValueError(f"{text!r} is outside the BI-RADS scale of the release "
                         f"({min(codes.BIRADS_CODES)} to {max(codes.BIRADS_CODES)})")
    return value


def format_birads(value: int | None) -> str:
    """4 -> ``'BI-RADS 4'``; None -> ``''`` (the CSV's empty finding_birads)."""
    return "" if value is None else f"BI-RADS {value}"


def parse_density(text: str) -> str:
    """``'DENSITY C'`` -> ``'C'``; raises ValueError otherwise."""
    match = _DENSITY.match(text)
    if not match:
        raise ValueError(f"not a density value: {text!r}")
    return match.group(1)


def format_density(value: str) -> str:
    """``'C'`` -> ``'DENSITY C'``."""
    return f"DENSITY {value}"


def parse_categories(text: str) -> tuple[str, ...]:
    """Parse the Python-list literal of finding_categories, keeping label order."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"finding_categories is not a list literal: {text!r}") from exc
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"finding_categories is not a non-empty list of labels: {text!r}")
    unknown = [v for v in value if v not in codes.FINDING_LABELS and v != codes.NO_FINDING]
    if unknown:
        raise ValueError(f"unknown finding label(s) {unknown} in {text!r}")
    if codes.NO_FINDING in value and len(value) > 1:
        raise ValueError(f"'No Finding' combined with other labels: {text!r}")
    if format_categories(value) != text:  # e.g. double quotes: would not export as written
        raise ValueError(f"finding_categories {text!r} is not written as the release writes "
                         f"it ({format_categories(value)!r})")
    return tuple(value)


def format_categories(labels: Sequence[str]) -> str:
    """Labels -> the release's list literal, e.g. ``['Nipple Retraction', 'Mass']``."""
    return "[" + ", ".join(f"'{label}'" for label in labels) + "]"


# --- tracking identifiers --------------------------------------------------------------------

_FINDING_ID = re.compile(
    rf"^{re.escape(codes.FINDING_TRACKING_PREFIX)} (\[.*\])(?: BI-RADS ([0-6]))? "
    r"box (\S+) (\S+) (\S+) (\S+)$"
)


@dataclass(frozen=True)
class FindingIdentifier:
    """Parsed tracking identifier of a finding group: labels in order, BI-RADS, exact box text."""

    labels: tuple[str, ...]
    box: Box
    birads: int | None = None


def format_finding_identifier(labels: Sequence[str], box: Box, birads: int | None = None) -> str:
    """The tracking identifier of a finding box row.

    For example ``VinDr finding ['Mass', 'Focal Asymmetry'] BI-RADS 4 box 1234.5678710938
    412.34 1500.25 -3.5``.

    The labels are the CSV's ``finding_categories`` literal (order kept), the coordinates
    the CSV's text verbatim, so the identifier is lossless; the finding BI-RADS, when the
    CSV gives one, is there for readers (a viewer's box label), its coded value is the SR's
    qualitative evaluation.
    """
    if not labels:
        raise ValueError("a finding needs at least one label")
    for value in box.text:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError(f"coordinate text with whitespace cannot be encoded: {value!r}")
    assessment = "" if birads is None else f" {format_birads(birads)}"
    return (f"{codes.FINDING_TRACKING_PREFIX} {format_categories(labels)}{assessment} "
            f"box {' '.join(box.text)}")


def parse_finding_identifier(text: str) -> FindingIdentifier:
    """Inverse of :func:`format_finding_identifier`; raises ValueError if malformed."""
    match = _FINDING_ID.match(text)
    if not match:
        raise ValueError(f"not a VinDr finding tracking identifier: {text!r}")
    try:
        labels = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"bad label list in tracking identifier: {text!r}") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        raise ValueError(f"bad label list in tracking identifier: {text!r}")
    birads = int(match.group(2)) if match.group(2) else None
    return FindingIdentifier(tuple(labels), Box.from_text(*match.group(3, 4, 5, 6)), birads)
