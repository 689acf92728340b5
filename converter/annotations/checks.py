"""Cross-checks of one exam's SR and SEGs: against each other, the images and the context groups.

Used by ``vindr-convert validate`` on the files written and by ``vindr-convert verify`` on the
objects as the PACS serves them. Each SR finding must name its image, carry codes of the
right context groups (checked against pydicom's copy of PS3.16, :func:`converter.codes.in_cid`),
and have exactly one SEG segment with the same tracking UID whose mask is the SR box.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .. import codes
from ..codes import in_cid
from .common import code_key, key_of
from .masks import box_window, scoord_box
from .seg import read_seg
from .sr import SrBreast, SrFinding, read_sr


def _check_finding(item: SrFinding, image: Dataset | None) -> list[str]:
    where = f"SR finding {item.tracking_identifier!r}"
    out = []
    if image is None:
        return [f"{where}: references image {item.image_uid}, not among the exam's images"]
    unknown = [label for label in item.labels if label not in codes.FINDING_CODES]
    if unknown:
        out.append(f"{where}: unknown label(s) {unknown}")
    else:
        first = item.labels[0]
        if item.finding_type != code_key(codes.FINDING_CODES[first]):
            out.append(f"{where}: finding type {item.finding_type} is not the code of {first!r}")
        if not in_cid(item.finding_type, codes.FINDING_CIDS[first]):
            out.append(f"{where}: finding type {item.finding_type} not in CID "
                       f"{codes.FINDING_CIDS[first]}")
    if item.finding_category != code_key(codes.FINDING_CATEGORY) or not in_cid(
        item.finding_category, 7150
    ):
        out.append(f"{where}: finding category {item.finding_category} is not "
                   f"{code_key(codes.FINDING_CATEGORY)} (CID 7150)")
    if item.birads_code is not None and not in_cid(item.birads_code, 6027):
        out.append(f"{where}: BI-RADS {item.birads_code} not in CID 6027")
    if item.geometric_purpose != code_key(codes.BOUNDED_BY) or not in_cid(
        item.geometric_purpose, 219
    ):
        out.append(f"{where}: geometric purpose {item.geometric_purpose} is not 'Bounded by'")
    if item.site != code_key(codes.BREAST):
        out.append(f"{where}: finding site {item.site} is not Breast")
    if not in_cid(item.laterality_code, 244) or item.laterality != image.get("ImageLaterality"):
        out.append(f"{where}: laterality {item.laterality_code} disagrees with the image "
                   f"({image.get('ImageLaterality')})")
    rows, columns = int(image.Rows), int(image.Columns)
    expected = scoord_box(item.box, rows, columns)
    if item.scoord != expected:
        out.append(f"{where}: SCOORD {item.scoord} is not the clipped box {expected}")
    return out


def _check_breast(item: SrBreast, images: dict[str, Dataset]) -> list[str]:
    where = f"SR assessment of {item.label}"
    out = []
    if not in_cid(item.birads_code, 6027):
        out.append(f"{where}: BI-RADS {item.birads_code} not in CID 6027")
    if not in_cid(item.density_code, 6000):
        out.append(f"{where}: density {item.density_code} not in CID 6000")
    if not in_cid(item.laterality_code, 244):
        out.append(f"{where}: laterality {item.laterality_code} not in CID 244")
    for uid in item.image_uids:
        image = images.get(uid)
        if image is None:
            out.append(f"{where}: source image {uid} not among the exam's images")
        elif image.get("ImageLaterality") != item.laterality:
            out.append(f"{where}: source image {uid} has laterality "
                       f"{image.get('ImageLaterality')}, assessment {item.laterality}")
    return out


def _pixels_off_box(mask: np.ndarray, window: tuple[slice, slice]) -> int:
    """Pixels in which ``mask`` differs from the box rectangle ``window`` (no full-size
    expected mask is built: the set pixels inside the window and in all are counted)."""
    box = mask[window]
    inside = int(np.count_nonzero(box))
    return (box.size - inside) + (int(np.count_nonzero(mask)) - inside)


def _check_seg(
    seg: hd.seg.Segmentation, by_uid: dict[str, SrFinding], images: dict[str, Dataset]
) -> tuple[list[str], set[str]]:
    """Problems of one SEG and the tracking UIDs it covers."""
    where = f"SEG {seg.SOPInstanceUID}"
    out: list[str] = []
    covered: set[str] = set()
    sources = [str(item.ReferencedSOPInstanceUID) for item in seg.get("SourceImageSequence", [])]
    if len(sources) != 1 or sources[0] not in images:
        return [f"{where}: source image(s) {sources} not one of the exam's images"], covered
    image = images[sources[0]]
    if seg.file_meta.TransferSyntaxUID not in (
        codes.EXPLICIT_VR_LITTLE_ENDIAN, codes.IMPLICIT_VR_LITTLE_ENDIAN
    ):
        out.append(f"{where}: transfer syntax {seg.file_meta.TransferSyntaxUID} is not native")
    if seg.get("SegmentationType") != "BINARY":
        out.append(f"{where}: segmentation type {seg.get('SegmentationType')} is not BINARY")
    if "PatientOrientation" not in seg:
        out.append(f"{where}: PatientOrientation missing")
    if seg.StudyInstanceUID != image.StudyInstanceUID:
        out.append(f"{where}: study differs from its source image")
    rows, columns = int(image.Rows), int(image.Columns)
    numbers = list(seg.segment_numbers)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[sources[0]], segment_numbers=numbers
    )
    for position, number in enumerate(numbers):
        desc = seg.get_segment_description(number)
        label = f"{where} segment {number}"
        uid = str(desc.tracking_uid) if desc.tracking_uid else ""
        finding = by_uid.get(uid)
        if finding is None:
            out.append(f"{label}: tracking UID {uid!r} matches no SR finding")
            continue
        covered.add(uid)
        if finding.image_uid != sources[0]:
            out.append(f"{label}: SR finding is on image {finding.image_uid}, SEG on {sources[0]}")
        if desc.tracking_id != finding.tracking_identifier:
            out.append(f"{label}: tracking ID {desc.tracking_id!r} differs from the SR's")
        ptype = key_of(desc.segmented_property_type)
        if ptype != finding.finding_type:
            out.append(f"{label}: property type {ptype} differs from SR finding type")
        if finding.labels and finding.labels[0] in codes.FINDING_CIDS and not in_cid(
            ptype, codes.FINDING_CIDS[finding.labels[0]]
        ):
            out.append(f"{label}: property type {ptype} not in CID "
                       f"{codes.FINDING_CIDS[finding.labels[0]]}")
        category = key_of(desc.segmented_property_category)
        if category != code_key(codes.FINDING_CATEGORY) or not in_cid(category, 7150):
            out.append(f"{label}: property category {category} is not "
                       "Morphologically Abnormal Structure (CID 7150)")
        mask = pixels[0, :, :, position]
        if mask.shape != (rows, columns):
            out.append(f"{label}: mask shape {mask.shape}, image {(rows, columns)}")
            continue
        diff = _pixels_off_box(mask, box_window(finding.scoord, rows, columns))
        if diff:
            out.append(f"{label}: mask differs from the SR box in {diff} pixel(s)")
    return out, covered


def check_sr_seg(
    sr: Dataset | Path | str,
    segs: Sequence[Dataset | Path | str],
    images: Sequence[Dataset],
) -> list[str]:
    """Check one exam's SR and SEGs against each other, the images and the context groups.

    Parameters
    ----------
    sr: pydicom.Dataset | Path
        The exam's SR (read back with highdicom).
    segs: Sequence[pydicom.Dataset | Path]
        The exam's SEGs (read back with highdicom, ``segread`` for paths).
    images: Sequence[pydicom.Dataset]
        The exam's MG headers.

    Returns
    -------
    list[str]
        One message per problem; empty when consistent.
    """
    by_image = {str(ds.SOPInstanceUID): ds for ds in images}
    out: list[str] = []
    try:
        sr_ds = sr if isinstance(sr, Dataset) else pydicom.dcmread(sr)
        report = read_sr(sr_ds)
    except Exception as exc:  # noqa: BLE001 - any read failure is a finding
        return [f"SR cannot be read back: {type(exc).__name__}: {exc}"]
    out += report.problems
    missing = sorted(set(by_image) - set(report.library))
    if missing:
        out.append(f"SR image library lacks {missing}")
    covered_images: Counter[str] = Counter()
    for breast in report.breasts:
        out += _check_breast(breast, by_image)
        covered_images.update(breast.image_uids)
    for uid in by_image:
        if covered_images[uid] != 1:
            out.append(f"image {uid} is in {covered_images[uid]} breast assessments (expected 1)")
    by_uid: dict[str, SrFinding] = {}
    for item in report.findings:
        out += _check_finding(item, by_image.get(item.image_uid))
        if item.tracking_uid in by_uid:
            out.append(f"tracking UID {item.tracking_uid} used by two SR findings")
        by_uid[item.tracking_uid] = item
    covered: set[str] = set()
    for seg in segs:
        try:
            segmentation = read_seg(seg)
        except Exception as exc:  # noqa: BLE001
            out.append(f"SEG {seg if not isinstance(seg, Dataset) else seg.get('SOPInstanceUID')}"
                       f" cannot be read back: {type(exc).__name__}: {exc}")
            continue
        problems, uids = _check_seg(segmentation, by_uid, by_image)
        out += problems
        duplicate = covered & uids
        if duplicate:
            out.append(f"tracking UID(s) {sorted(duplicate)} segmented twice")
        covered |= uids
    for uid in sorted(set(by_uid) - covered):
        out.append(f"SR finding {by_uid[uid].tracking_identifier!r} has no SEG segment")
    return out


__all__ = ["check_sr_seg"]
