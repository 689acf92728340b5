"""Repair one VinDr image into a Digital Mammography X-Ray Image - For Presentation.

The header is rebuilt with pydicom; the pixel data is never decoded: it is copied from the
source file to the output in chunks while both files are hashed, so memory stays flat and a
truncated or corrupted download is caught on the way (see :func:`write_image`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import struct
import warnings
from collections.abc import Iterator
from typing import BinaryIO
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from . import __version__, codes
from .records import ImageRecord
from .errors import RepairError
from .fileio import atomic_write, atomic_writer
from .naming import hex_to_uid, patient_id, patient_name, study_description

PIXEL_DATA_TAG = 0x7FE00010
CHUNK = 1 << 20
# Rows sampled to find the chest-wall edge; away from the top and bottom, where labels sit.
SAMPLE_ROWS = 24
EDGE_FRACTION = 0.1
# Minimum contrast between the two edges, as a fraction of the sampled value range.
MIN_EDGE_CONTRAST = 0.05

# Attributes of the source we drop or replace (everything else of the keep-list is kept).
_MAPPED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_DROPPED = (
    "Laterality",  # series-level laterality is not allowed beside ImageLaterality (N7)
    *_MAPPED_UIDS,
)


@dataclass(frozen=True)
class SourceImage:
    """A parsed source file: its header and where its native pixel data lies."""

    header: Dataset
    pixel_value_offset: int  # byte offset of the first pixel byte
    pixel_length: int  # declared length of Pixel Data
    file_size: int

    @property
    def photometric(self) -> str:
        return str(self.header.get("PhotometricInterpretation", ""))

    @property
    def trailing_bytes(self) -> int:
        """Bytes after the Pixel Data value (not copied; the caller reports them)."""
        return self.file_size - self.pixel_value_offset - self.pixel_length


@contextlib.contextmanager
def lenient_reading() -> Iterator[None]:
    """Read VinDr headers without pydicom's warnings about hex digests in UI fields.

    pydicom's own switch (:func:`pydicom.config.disable_value_validation`); the values that
    break the standard are replaced by the repair and every output is checked by dciodvfy.
    """
    with pydicom_config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_source(path: Path) -> SourceImage:
    """Parse the header of ``path`` and locate its pixel data without reading it."""
    size = path.stat().st_size
    with path.open("rb") as handle, lenient_reading():
        header = _read_header(handle)
        element_offset = handle.tell()
        lead = handle.read(12)
    syntax = header.file_meta.get("TransferSyntaxUID", codes.EXPLICIT_VR_LITTLE_ENDIAN)
    if syntax not in (codes.EXPLICIT_VR_LITTLE_ENDIAN, codes.IMPLICIT_VR_LITTLE_ENDIAN):
        raise RepairError(f"transfer syntax {syntax} is not native little endian")
    if len(lead) < 8 or struct.unpack("<HH", lead[:4]) != (0x7FE0, 0x0010):
        raise RepairError("no Pixel Data element (file truncated before the pixels?)")
    if syntax == codes.IMPLICIT_VR_LITTLE_ENDIAN:
        (length,) = struct.unpack("<I", lead[4:8])
        value_offset = element_offset + 8
    else:
        if len(lead) < 12:
            raise RepairError("file truncated inside the Pixel Data element header")
        (length,) = struct.unpack("<I", lead[8:12])
        value_offset = element_offset + 12
    if length == 0xFFFFFFFF:
        raise RepairError("encapsulated (compressed) pixel data: expected native pixels")
    _check_pixel_length(header, length)
    available = size - value_offset
    if available < length:
        raise RepairError(
            f"truncated: Pixel Data declares {length} bytes, the file holds {available}"
        )
    return SourceImage(header, value_offset, length, size)


def _read_header(handle: BinaryIO) -> Dataset:
    """The data set before Pixel Data; RepairError in plain words when it is not DICOM."""
    try:
        return pydicom.dcmread(handle, stop_before_pixels=True)
    except InvalidDicomError:
        raise RepairError("not a DICOM file (no 'DICM' prefix after the 128-byte "
                          "preamble)") from None
    except Exception as exc:  # pydicom raises many kinds on a broken file
        text = str(exc).split(" Use force=True")[0]
        raise RepairError(f"not a readable DICOM file ({type(exc).__name__}: {text})") from None


def _check_pixel_length(header: Dataset, length: int) -> None:
    """Pixel Data must hold exactly Rows x Columns x samples x bytes (no more, no less)."""
    try:
        expected = int(header.Rows) * int(header.Columns) * int(header.BitsAllocated) // 8 * int(
            header.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError) as exc:
        raise RepairError(f"pixel module incomplete or malformed ({exc})") from None
    if length < expected:
        raise RepairError(f"Pixel Data holds {length} bytes, Rows x Columns needs {expected}")
    if length > expected:
        raise RepairError(f"Pixel Data holds {length} bytes, {length - expected} more than "
                          f"the {expected} Rows x Columns x bits need (wrong Rows/Columns, or "
                          "a damaged file)")


def sample_rows(path: Path, source: SourceImage, count: int = SAMPLE_ROWS) -> np.ndarray:
    """A few evenly spaced rows (from 20 % to 80 % of the height) as a 2-D array."""
    rows, columns = int(source.header.Rows), int(source.header.Columns)
    signed = int(source.header.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype("<i2" if signed else "<u2")
    picks = np.linspace(0.2 * rows, 0.8 * rows, num=min(count, rows)).astype(int)
    out = np.empty((len(picks), columns), dtype=dtype)
    with path.open("rb") as handle:
        for i, row in enumerate(picks):
            handle.seek(source.pixel_value_offset + int(row) * columns * 2)
            out[i] = np.frombuffer(handle.read(columns * 2), dtype=dtype)
    return out


def chest_wall_on_left(samples: np.ndarray, photometric: str) -> bool | None:
    """Which vertical edge holds the breast: True = left, False = right, None = unclear.

    Tissue is brighter than the background when displayed; under MONOCHROME1 that means
    lower stored values.
    """
    width = samples.shape[1]
    edge = max(1, int(width * EDGE_FRACTION))
    values = samples.astype(np.float64)
    if photometric == "MONOCHROME1":
        values = -values
    left, right = values[:, :edge].mean(), values[:, -edge:].mean()
    spread = values.max() - values.min()
    if spread <= 0 or abs(left - right) < MIN_EDGE_CONTRAST * spread:
        return None
    return bool(left > right)


def patient_orientation(laterality: str, view: str, chest_wall_left: bool) -> list[str]:
    """PatientOrientation (row direction, column direction) for a mammogram.

    The column direction (down the image) follows laterality and view for an image that
    is not flipped vertically; the row direction points to the nipple (A) when the chest
    wall is on the left edge and to the chest wall (P) otherwise.
    """
    return ["A" if chest_wall_left else "P", codes.COLUMN_DIRECTION[(laterality, view)]]


def standard_chest_wall_left(laterality: str) -> bool:
    """The usual display: left breasts against the left edge, right against the right."""
    return laterality == "L"


def _code_item(code: codes.Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def set_patient_and_study(ds: Dataset, study_id: str, split: str) -> None:
    """Patient and study attributes shared by every object of an exam (MG, SR, SEG)."""
    ds.PatientName = patient_name(study_id)
    ds.PatientID = patient_id(study_id)
    ds.IssuerOfPatientID = codes.DATASET_NAME
    ds.PatientBirthDate = ""
    if "PatientSex" not in ds:
        ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = codes.DEID_METHOD_TEXT
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code_item(code) for code in codes.DEID_METHOD_CODES]
    )
    ds.StudyInstanceUID = hex_to_uid(study_id)
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = study_id[:16]
    ds.AccessionNumber = ""
    ds.StudyDescription = study_description(split)


def repair_dataset(
    source: Dataset,
    record: ImageRecord,
    orientation: list[str],
    series_number: int = 1,
    instance_number: int = 1,
) -> Dataset:
    """The repaired MG header (with file meta, without Pixel Data) for one image.

    Raises :class:`RepairError` when the header contradicts the CSV or lacks what no
    repair can supply (pixel module, imager pixel spacing).
    """
    try:
        return _repair(source, record, orientation, series_number, instance_number)
    except RepairError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError, KeyError) as exc:
        raise RepairError(f"header cannot be repaired ({type(exc).__name__}: {exc})") from None


def _repair(source: Dataset, record: ImageRecord, orientation: list[str],
            series_number: int, instance_number: int) -> Dataset:
    _check_header(source, record)
    ds = kept_copy(source)
    ds.SpecificCharacterSet = _character_set(ds)
    ds.SOPClassUID = codes.MG_FOR_PRESENTATION
    ds.SOPInstanceUID = hex_to_uid(record.image_id)
    set_patient_and_study(ds, record.study_id, record.split)
    age = str(ds.get("PatientAge", "") or "")
    if not age and "PatientAge" in ds:
        del ds.PatientAge  # present but empty: Type 3, nothing to keep
    ds.SeriesInstanceUID = hex_to_uid(record.series_id)
    ds.SeriesNumber = series_number
    # Type 3, but what viewers' series-level queries ask for (dcmjs-dimse's and OHIF's
    # defaults): present, so Orthanc answers them from its index instead of reading a file
    # of every series. The release has no dates, so SeriesDate is empty.
    ds.SeriesDescription = f"{record.laterality} {record.view}"
    ds.SeriesDate = ""
    ds.InstanceNumber = instance_number
    ds.Modality = "MG"
    ds.Manufacturer = str(source.get("Manufacturer", "") or "")
    ds.BodyPartExamined = "BREAST"
    ds.PresentationIntentType = "FOR PRESENTATION"

    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PatientOrientation = orientation
    ds.ImageLaterality = record.laterality
    ds.ViewPosition = record.view
    view = _code_item(codes.VIEW_CODES[record.view])
    view.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view])
    ds.AnatomicRegionSequence = Sequence([_code_item(codes.BREAST)])
    ds.OrganExposed = "BREAST"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = ""  # Type 2: the release does not say, and we do not guess
    ds.AcquisitionContextSequence = Sequence()
    ds.BurnedInAnnotation = (
        "YES" if ds.Manufacturer.upper() in codes.BURNED_IN_LABEL_MANUFACTURERS else "NO"
    )

    monochrome1 = ds.PhotometricInterpretation == "MONOCHROME1"
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower values = less X-ray intensity (dense tissue dark in stored values).
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    if "RescaleIntercept" not in ds or "RescaleSlope" not in ds:
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    if not ds.get("RescaleType"):
        ds.RescaleType = "US"
    if not ds.get("LossyImageCompression"):
        ds.LossyImageCompression = "00"

    ds.ContributingEquipmentSequence = Sequence([modifying_equipment(record)])
    ds.file_meta = file_meta(ds)
    return ds


def _kept(tag: BaseTag, allowed: frozenset[str]) -> bool:
    """True for a public attribute on ``allowed`` (private elements and creators never)."""
    return not tag.is_private and keyword_for_tag(tag) in allowed


def _skipped(element: DataElement) -> bool:
    """File meta and Pixel Data: rebuilt and streamed by the writer, not filtered here."""
    return element.tag.group == 0x0002 or element.tag == PIXEL_DATA_TAG


def kept_copy(source: Dataset) -> Dataset:
    """A deep copy of the source elements on :data:`codes.SOURCE_KEEP_LIST` (items of kept
    sequences filtered by :data:`codes.SOURCE_ITEM_KEEP_LIST`), minus those the repair
    removes or maps (series Laterality, UIDs)."""
    ds = Dataset()
    for element in source:
        if _skipped(element) or element.keyword in _DROPPED:
            continue
        if not _kept(element.tag, codes.SOURCE_KEEP_LIST):
            continue
        element = copy.deepcopy(element)  # never alias: the source must stay as read
        if element.VR == "SQ":
            allowed = codes.SOURCE_ITEM_KEEP_LIST.get(element.keyword, frozenset())
            for item in element.value:
                for tag in [t for t in item.keys() if not _kept(t, allowed)]:
                    del item[tag]
        ds.add(element)
    return ds


_TEXT_VRS = ("SH", "LO", "ST", "LT", "UT", "UC", "PN", "CS", "AS", "DS", "IS")


def _character_set(ds: Dataset) -> str:
    """``ISO_IR 100`` (Latin-1), or ``ISO_IR 192`` (UTF-8) when a kept text value needs
    it: pydicom would otherwise write such a character as ``?``, silently."""
    for element in ds:
        if element.VR not in _TEXT_VRS or element.value is None:
            continue
        values = element.value if isinstance(element.value, (list, MultiValue)) else [
            element.value]
        try:
            for value in values:
                str(value).encode("latin-1")
        except UnicodeEncodeError:
            return "ISO_IR 192"
    return "ISO_IR 100"


def _element_name(element: DataElement) -> str:
    if element.tag.is_private_creator:
        return f"private creator {element.tag}"
    if element.tag.is_private:
        return f"private element {element.tag}"
    return f"{element.keyword} {element.tag}" if element.keyword else f"element {element.tag}"


def _has_value(element: DataElement) -> bool:
    value = element.value
    return not (value is None or value == "" or value == b"" or (
        isinstance(value, (list, Sequence)) and len(value) == 0))


def dropped_attributes(source: Dataset) -> list[tuple[str, bool]]:
    """What :func:`kept_copy` leaves out, as (name with tag, carried a value), in file order.

    Names only: the values may be identifying and are never repeated in a report.
    """
    dropped = []
    for element in source:
        if _skipped(element):
            continue
        if not _kept(element.tag, codes.SOURCE_KEEP_LIST):
            dropped.append((_element_name(element), _has_value(element)))
        elif element.VR == "SQ":
            allowed = codes.SOURCE_ITEM_KEEP_LIST.get(element.keyword, frozenset())
            for number, item in enumerate(element.value, 1):
                dropped += [(f"{element.keyword} item {number}: {_element_name(inner)}",
                             _has_value(inner)) for inner in item if not _kept(inner.tag, allowed)]
    return dropped


def modifying_equipment(record: ImageRecord) -> Dataset:
    """A Contributing Equipment item naming us as the modifier and the source file.

    It keeps the VinDr ids readable in the object itself (the UIDs also map back to them).
    """
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([_code_item(codes.MODIFYING_EQUIPMENT)])
    item.Manufacturer = codes.MANUFACTURER
    item.SoftwareVersions = __version__
    item.ContributionDescription = (
        f"Repaired from {codes.DATASET_NAME} {codes.DATASET_VERSION} {record.relpath}"
    )
    return item


def changed_attributes(source: Dataset, repaired: Dataset) -> list[tuple[str, str]]:
    """Source values the repair removed or replaced, as (keyword, description).

    The UIDs are left out (mapped invertibly, see :mod:`converter.naming`), and so are empty
    values; everything else the release published and the output no longer says is listed,
    so the pipeline can report it.
    """
    changes = []
    for element in source:
        if element.tag.group == 0x0002 or element.tag == PIXEL_DATA_TAG:
            continue
        if element.keyword in _MAPPED_UIDS or element.value in (None, "", b""):
            continue
        if not _kept(element.tag, codes.SOURCE_KEEP_LIST) or element.VR == "SQ":
            continue  # dropped by the keep-list (items too): see dropped_attributes
        if element.tag not in repaired:
            changes.append((element.keyword, f"{element.keyword} {element.value!r} removed"))
        elif repaired[element.tag].value != element.value:
            changes.append((element.keyword, f"{element.keyword} {element.value!r} replaced by "
                            f"{repaired[element.tag].value!r}"))
    return changes


def file_meta(ds: Dataset) -> FileMetaDataset:
    """A fresh Part-10 file meta group for ``ds`` (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = codes.EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = codes.IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = codes.IMPLEMENTATION_VERSION_NAME
    return meta


def _check_header(source: Dataset, record: ImageRecord) -> None:
    found = {
        "SOPInstanceUID": (str(source.get("SOPInstanceUID", "")), record.image_id),
        "Rows": (source.get("Rows"), record.height),
        "Columns": (source.get("Columns"), record.width),
        "ImageLaterality": (source.get("ImageLaterality"), record.laterality),
        "ViewPosition": (source.get("ViewPosition"), record.view),
    }
    for keyword, (value, expected) in found.items():
        if value != expected:
            raise RepairError(f"{keyword} {value!r} in the file disagrees with the CSV "
                              f"({expected!r})")
    if int(source.get("BitsAllocated", 0)) != 16 or int(source.get("SamplesPerPixel", 1)) != 1:
        raise RepairError("expected 16-bit single-sample pixels")
    if source.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        raise RepairError(f"photometric {source.get('PhotometricInterpretation')!r} "
                          "is not MONOCHROME1/2")
    if "ImagerPixelSpacing" not in source:
        raise RepairError("ImagerPixelSpacing missing (Type 1 for MG, cannot be invented)")


def dataset_bytes(ds: Dataset) -> bytes:
    """Part-10 encoding of ``ds`` (preamble, file meta, data set)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def header_bytes(header: Dataset) -> bytes:
    """:func:`dataset_bytes` of a repaired header; RepairError when a kept value cannot be
    encoded in its VR (e.g. a US value above 65535)."""
    try:
        return dataset_bytes(header)
    except (AttributeError, TypeError, ValueError, OverflowError, struct.error, OSError) as exc:
        raise RepairError(f"header cannot be written ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class Written:
    """What :func:`write_image` wrote: the output digest and the source digest."""

    sha256: str
    source_sha256: str


def write_image(
    path: Path, source: SourceImage, header: Dataset, dest: Path,
    expected_sha256: str | None = None,
) -> Written:
    """Write ``header`` + the source's pixel data to ``dest`` atomically.

    The source is read once, front to back, in 1 MiB chunks: every byte goes into its
    SHA-256 and the pixel bytes also go to the output. ``dest`` only appears (by rename)
    when the copy is complete and the source digest equals ``expected_sha256`` (when
    given); otherwise :class:`RepairError` is raised and nothing is left behind.
    """
    head = header_bytes(header)
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, source.pixel_length)
    out_hash = hashlib.sha256(head + element)
    src_hash = hashlib.sha256()
    with path.open("rb") as src, atomic_writer(dest) as out:
        out.write(head)
        out.write(element)
        position = 0
        start, end = source.pixel_value_offset, source.pixel_value_offset + source.pixel_length
        while chunk := src.read(CHUNK):
            src_hash.update(chunk)
            lo, hi = max(start - position, 0), min(end - position, len(chunk))
            if lo < hi:
                piece = chunk[lo:hi]
                out.write(piece)
                out_hash.update(piece)
            position += len(chunk)
        if position < end:
            raise RepairError(f"truncated: file ended at byte {position}, pixel data "
                              f"runs to byte {end}")
        if expected_sha256 and src_hash.hexdigest() != expected_sha256:
            raise RepairError(f"checksum mismatch: SHA-256 {src_hash.hexdigest()}, "
                              f"SHA256SUMS.txt says {expected_sha256} (incomplete or "
                              "corrupted download?)")
    return Written(out_hash.hexdigest(), src_hash.hexdigest())


def write_dataset(ds: Dataset, dest: Path) -> str:
    """Write a whole data set (SR, SEG) atomically; returns the file's SHA-256."""
    data = dataset_bytes(ds)
    atomic_write(dest, data)
    return hashlib.sha256(data).hexdigest()
