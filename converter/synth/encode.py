"""DICOM: the kept attributes of an image and its Part-10 bytes, with the defects N1-N7."""

from __future__ import annotations

import functools
import io

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence

from converter.codes import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

from .records import ImagePlan, StudyPlan
from .vendors import VOI_LUT_EXPLANATIONS, VendorProfile, padding_value

DEFECT_CLASS_UID = "1.2.3.4"  # N3: MediaStorageSOPClassUID and ImplementationClassUID

# VRs that the data dictionary leaves ambiguous ("US or SS", "OB or OW", ...).
EXPLICIT_VRS: dict[str, str] = {
    "PixelPaddingValue": "US",
    "PixelPaddingRangeLimit": "US",
    "PixelData": "OW",
}


def _number(value: float) -> int | float:
    """An integral float as int, others rounded to 6 decimals (short DS strings)."""
    rounded = round(float(value), 6)
    return int(rounded) if rounded.is_integer() else rounded


def _windows(profile: VendorProfile, shift: float) -> tuple[list, list, list]:
    """Window centres, widths and explanations in stored-value units."""
    maxval = (1 << profile.bits_stored) - 1
    centres, widths, names = [], [], []
    for centre, width, name in profile.windows:
        if profile.photometric == "MONOCHROME1":
            centre = 1.0 - centre
        centres.append(round((centre + shift) * maxval))
        widths.append(round(width * maxval))
        names.append(name)
    return centres, widths, names


def _single(values: list) -> object:
    """A value list as DICOM holds it: the single value itself, or the list."""
    return values[0] if len(values) == 1 else values


def image_attributes(
    study: StudyPlan, image: ImagePlan, rows: int, columns: int, scale: float
) -> dict[str, object]:
    """The kept attributes of one image, keyword -> Python value (None = absent).

    PatientAge is "" when present but empty (N6).  Both the DICOM file and metadata.csv are
    made from this dict, so they agree.
    """
    profile = study.profile
    spacing = [_number(profile.spacing_mm * scale)] * 2
    centres, widths, names = _windows(profile, image.window_shift)
    return {
        "PatientSex": "F",
        "PatientAge": {"present": study.age, "empty": "", "absent": None}[study.age_mode],
        "Modality": "MG",
        "PresentationIntentType": "FOR PRESENTATION",
        "Manufacturer": profile.manufacturer,
        "ManufacturerModelName": profile.model,
        "BodyPartExamined": "BREAST",
        "ImagerPixelSpacing": spacing,
        "ViewPosition": image.view,
        "StudyInstanceUID": study.study_id,
        "SeriesInstanceUID": image.series_id,
        "SOPInstanceUID": image.image_id,
        "Laterality": image.laterality if image.series_laterality else None,
        "ImageLaterality": image.laterality,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": profile.photometric,
        "Rows": rows,
        "Columns": columns,
        "PixelSpacing": spacing if profile.pixel_spacing else None,
        "BitsAllocated": 16,
        "BitsStored": profile.bits_stored,
        "HighBit": profile.bits_stored - 1,
        "PixelRepresentation": 0,
        "PixelPaddingValue": padding_value(profile),
        "PixelPaddingRangeLimit": profile.padding_range_limit,
        "WindowCenter": _single(centres),
        "WindowWidth": _single(widths),
        "WindowCenterWidthExplanation": _single(names),
        "RescaleIntercept": 0,
        "RescaleSlope": 1,
        "RescaleType": "US",
        "LossyImageCompression": "00",
        "PresentationLUTShape": "INVERSE" if profile.photometric == "MONOCHROME1" else "IDENTITY",
    }


@functools.lru_cache(maxsize=8)
def _voi_luts(bits_stored: int, count: int) -> tuple[tuple[str, int, bytes], ...]:
    """``count`` sigmoid VOI LUTs over the whole stored range: (explanation, entries, data).

    The data are little-endian 16-bit words, written as OW (a VR LUT Data allows): a list of
    4,096 US values costs pydicom a per-value validation on every image.
    """
    entries = 1 << bits_stored
    grid = np.arange(entries, dtype=np.float64) / (entries - 1)
    luts = []
    for i in range(count):
        centre, slope = 0.5 + 0.04 * (i - count // 2), 8.0 + 3.0 * i
        data = (entries - 1) / (1.0 + np.exp(-slope * (grid - centre)))
        words = np.rint(data).astype("<u2").tobytes()
        luts.append((VOI_LUT_EXPLANATIONS[i % len(VOI_LUT_EXPLANATIONS)], entries, words))
    return tuple(luts)


def _voi_lut_sequence(profile: VendorProfile) -> DicomSequence:
    """The Siemens-style VOI LUT Sequence: several full-range LUTs (~40 KB at 12 bits)."""
    items = []
    for explanation, entries, data in _voi_luts(profile.bits_stored, profile.voi_luts):
        item = Dataset()
        item.add_new("LUTDescriptor", "US", [entries, 0, profile.bits_stored])
        item.add_new("LUTExplanation", "LO", explanation)
        item.add_new("LUTData", "OW", data)
        items.append(item)
    return DicomSequence(items)


def build_dataset(
    attributes: dict[str, object], profile: VendorProfile, pixels: np.ndarray, implicit_vr: bool
) -> Dataset:
    """The de-identified dataset: kept attributes only, with the N1-N7 defects."""
    ds = Dataset()
    for keyword, value in attributes.items():
        if value is not None:
            vr = EXPLICIT_VRS.get(keyword) or dictionary_VR(keyword)
            ds.add_new(keyword, vr, _ds_strings(value) if vr == "DS" else value)
    if profile.voi_luts:
        ds.add_new("VOILUTSequence", "SQ", _voi_lut_sequence(profile))
    ds.add_new("PixelData", EXPLICIT_VRS["PixelData"], pixels.astype("<u2").tobytes())
    meta = FileMetaDataset()
    meta.add_new("FileMetaInformationGroupLength", "UL", 0)  # set by the writer
    meta.add_new("FileMetaInformationVersion", "OB", b"\x00\x01")
    meta.add_new("MediaStorageSOPClassUID", "UI", DEFECT_CLASS_UID)
    meta.add_new("MediaStorageSOPInstanceUID", "UI", attributes["SOPInstanceUID"])
    meta.add_new(
        "TransferSyntaxUID",
        "UI",
        IMPLICIT_VR_LITTLE_ENDIAN if implicit_vr else EXPLICIT_VR_LITTLE_ENDIAN,
    )
    meta.add_new("ImplementationClassUID", "UI", DEFECT_CLASS_UID)
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    return ds


def encode_dataset(ds: Dataset) -> bytes:
    """Part-10 bytes (preamble, DICM, file meta) of ``ds``, invalid UIDs and all.

    The file meta is written as given: pydicom's enforced format would add an
    ImplementationVersionName naming its own version, making the bytes depend on it.
    """
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


def encode_image(
    attributes: dict[str, object], profile: VendorProfile, pixels: np.ndarray, implicit_vr: bool
) -> bytes:
    """Part-10 bytes of one image, built and written with pydicom's validation off (N1)."""
    with pydicom_config.disable_value_validation():  # hex digests in UI elements (N1)
        return encode_dataset(build_dataset(attributes, profile, pixels, implicit_vr))


def number_text(value: float) -> str:
    """A number as both the DS strings and metadata.csv write it: ``2047``, ``0.085``."""
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def _ds_strings(value: object) -> str | list[str]:
    """DS value(s) as exact strings, so the file says ``2047`` rather than ``2047.0``."""
    if isinstance(value, (list, tuple)):
        return [number_text(v) for v in value]
    return number_text(value)  # type: ignore[arg-type]
