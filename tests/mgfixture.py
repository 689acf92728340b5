"""Test fixtures: small synthetic VinDr records and their repaired MG headers.

Headers come from the real :func:`converter.repair.repair_dataset` applied to a VinDr-like
source header (hex UIDs, keep-list attributes).  Images are small (tens of pixels) to keep
the tests fast; no Pixel Data is needed by the SR and SEG builders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydicom.dataset import Dataset, FileMetaDataset

from converter import codes
from converter.records import Box, Finding, ImageRecord, StudyRecord
from converter.repair import (
    lenient_reading,
    patient_orientation,
    repair_dataset,
    standard_chest_wall_left,
)


def hexid(*names: str) -> str:
    """A deterministic 32-digit lowercase hex id, like a VinDr MD5 digest."""
    return hashlib.md5("/".join(names).encode()).hexdigest()


def finding(
    labels: Sequence[str],
    box: Sequence[str],
    birads: int | None = 4,
    row: int = 0,
) -> Finding:
    """A :class:`Finding` from labels and the four coordinate strings."""
    return Finding(tuple(labels), birads, Box.from_text(*box), row)


def image_record(
    study_id: str,
    laterality: str,
    view: str,
    *,
    findings: Sequence[Finding] = (),
    birads: int = 1,
    density: str = "B",
    split: str = "training",
    rows: int = 40,
    columns: int = 32,
    series_id: str | None = None,
    image_id: str | None = None,
) -> ImageRecord:
    """One :class:`ImageRecord` with small dimensions."""
    return ImageRecord(
        study_id=study_id,
        series_id=series_id or hexid(study_id, "series"),
        image_id=image_id or hexid(study_id, laterality, view),
        laterality=laterality,
        view=view,
        height=rows,
        width=columns,
        breast_birads=birads,
        breast_density=density,
        split=split,
        findings=tuple(findings),
    )


def study_record(
    name: str,
    findings: dict[tuple[str, str], Sequence[Finding]] | None = None,
    *,
    birads: dict[str, int] | None = None,
    density: dict[str, str] | None = None,
    split: str = "training",
    rows: int = 40,
    columns: int = 32,
) -> StudyRecord:
    """A four-view exam; ``findings`` maps (laterality, view) to that image's findings."""
    study_id = hexid("study", name)
    findings = findings or {}
    birads = birads or {"L": 1, "R": 1}
    density = density or {"L": "B", "R": "B"}
    images = tuple(
        image_record(
            study_id,
            lat,
            view,
            findings=findings.get((lat, view), ()),
            birads=birads[lat],
            density=density[lat],
            split=split,
            rows=rows,
            columns=columns,
        )
        for lat, view in (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
    )
    return StudyRecord(study_id, split, images)


def orientation(record: ImageRecord) -> list[str]:
    """PatientOrientation of the usual display (as the pipeline derives it)."""
    return patient_orientation(
        record.laterality, record.view, standard_chest_wall_left(record.laterality)
    )


def synthetic_source(record: ImageRecord, *, pixel_spacing: bool = False) -> Dataset:
    """A VinDr-like broken source header (hex UIDs, keep-list attributes only)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = codes.EXPLICIT_VR_LITTLE_ENDIAN
    ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4"
    ds.file_meta.MediaStorageSOPInstanceUID = record.image_id
    ds.StudyInstanceUID = record.study_id
    ds.SeriesInstanceUID = record.series_id
    ds.SOPInstanceUID = record.image_id
    ds.Modality = "MG"
    ds.PatientSex = "F"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Mammomat Inspiration"
    ds.ImageLaterality = record.laterality
    ds.ViewPosition = record.view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = record.height
    ds.Columns = record.width
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [0.085, 0.085]
    if pixel_spacing:
        ds.PixelSpacing = [0.085, 0.085]
    ds.WindowCenter = 2047
    ds.WindowWidth = 4095
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    return ds


def mg_header(
    record: ImageRecord, number: int = 1, *, pixel_spacing: bool = False
) -> Dataset:
    """The repaired MG header of ``record`` made by the real :func:`repair_dataset`."""
    with lenient_reading():
        source = synthetic_source(record, pixel_spacing=pixel_spacing)
        return repair_dataset(source, record, orientation(record), 1, number)


def mg_headers(study: StudyRecord, *, pixel_spacing: bool = False) -> list[Dataset]:
    """Headers of all images of ``study``, in record order."""
    return [
        mg_header(image, number, pixel_spacing=pixel_spacing)
        for number, image in enumerate(study.images, start=1)
    ]


# --- a study exercising every encoder path ----------------------------------------------------

ALL_LABELS = tuple(codes.FINDING_CODES)


def rich_study(name: str = "rich", rows: int = 40, columns: int = 32) -> StudyRecord:
    """Every label first on some box, 1-4 labels per box, empty BI-RADS, boxes outside.

    Left and right breasts differ in BI-RADS and density.
    """
    lcc = [
        finding([label], [f"{1 + i}.5", "2.25", f"{10 + i}.123456789012345", "12"], 4)
        for i, label in enumerate(ALL_LABELS[:5])
    ]
    lmlo = [
        finding([label], ["3", "4", "20.5", "30.0000001"], 5) for label in ALL_LABELS[5:]
    ]
    rcc = [
        finding(["Mass", "Focal Asymmetry"], ["1234.5678710938", "-3.5", "1500.25", "8"], 3),
        finding(
            ["Nipple Retraction", "Suspicious Calcification", "Architectural Distortion",
             "Suspicious Lymph Node"],
            ["-27.25", "0", "5.000000000000001", "41.0"],
            None,
        ),
        finding(["Skin Thickening", "Skin Retraction", "Nipple Retraction"],
                ["30.2", "38.6", "30.4", "38.7"], None),  # thinner than a pixel: 1-pixel mask
        finding(["Global Asymmetry", "Asymmetry"], ["0", "0", f"{columns}", f"{rows}"], 3),
    ]
    return study_record(
        name,
        {("L", "CC"): lcc, ("L", "MLO"): lmlo, ("R", "CC"): rcc},
        birads={"L": 5, "R": 3},
        density={"L": "A", "R": "D"},
        rows=rows,
        columns=columns,
    )


# --- validators -------------------------------------------------------------------------------

PIXELMED_JARS = ("/usr/share/java/pixelmed.jar", "/usr/share/java/commons-codec.jar")
# The JDK's XSLT compiler (XSLTC) turns each XPath predicate into Java bytecode, whose
# constants are capped at 64 KiB: Debian 13's PixelMed (20250211) has a code-list predicate of
# 65,867 bytes, so its SR validator crashed after validating ("UTFDataFormatException: encoded
# string too long"). Debian's interpretive Xalan (libxalan2-java) compiles nothing.
XALAN_JARS = ("/usr/share/java/xalan2.jar", "/usr/share/java/serializer.jar")
XALAN_FACTORY = ("-Djavax.xml.transform.TransformerFactory="
                 "org.apache.xalan.processor.TransformerFactoryImpl")


def pixelmed_command(tool: str, path: str) -> list[str]:
    """java running PixelMed's ``tool`` on ``path``, with Xalan when it is installed."""
    import os

    jars, options = list(PIXELMED_JARS), list(JAVA_XPATH_UNLIMITED)
    if all(os.path.exists(jar) for jar in XALAN_JARS):
        jars += XALAN_JARS
        options.append(XALAN_FACTORY)
    return ["java", *options, "-cp", ":".join(jars), f"com.pixelmed.validate.{tool}", str(path)]
# Newer JDKs cap XPath complexity below what PixelMed's compiled SR templates need.
JAVA_XPATH_UNLIMITED = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


# dciodvfy warnings that follow from the release itself: it has no study date or time, and
# CC/MLO (what mammography systems put in ViewPosition) are not among the DX defined terms.
SMALL_STUDIES = 3  # exams in the session's small conversion (tests/conftest.py)

DICOMDIR_WARNINGS = (
    "</StudyDate(0008,0020)> - Missing attribute or value that would be needed to build DICOMDIR",
    "</StudyTime(0008,0030)> - Missing attribute or value that would be needed to build DICOMDIR",
)
VIEW_POSITION_WARNINGS = (
    "</ViewPosition(0018,5101)[1]> - Unrecognized defined term = <CC>",
    "</ViewPosition(0018,5101)[1]> - Unrecognized defined term = <MLO>",
)


def dciodvfy(path: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) reported by dicom3tools' dciodvfy for the file at ``path``."""
    from pathlib import Path

    from converter.validate import dciodvfy as run

    result = run(Path(path))
    return result.errors, result.warnings


def pixelmed_available() -> bool:
    import os
    import shutil

    return shutil.which("java") is not None and all(os.path.exists(j) for j in PIXELMED_JARS)


# PixelMed's DicomInstanceValidator on our SEG: three messages that are not ours to remove.
# PS3.3 C.7.6.1 gives PatientOrientation VM 2 (PixelMed's table says 1); the Derivation Image
# functional group may be shared or per frame (C.7.6.16): ours is per frame, each frame naming
# its source frame, which highdicom and OHIF read, while PixelMed looks in the shared group
# only; and General Series Laterality, which dciodvfy reports as an error when present on a
# Segmentation (the breast is said per segment instead: converter.annotations.seg).
PIXELMED_SEG_FALSE_POSITIVES = (
    "Error: GeneralSeriesModule/Laterality/: : Missing conditional attribute",
    "Error: GeneralImageModule/PatientOrientation/: PatientOrientation: Incorrect value "
    "multiplicity - got 2 but expected 1-1",
    "Error: DerivationImageMacro/DerivationImageSequence/: SharedFunctionalGroupsSequence/"
    "Item[1]/: Missing required sequence attribute (Type 2)",
)


def pixelmed_instance(path: str) -> tuple[list[str], str]:
    """(errors, full output) of PixelMed's DicomInstanceValidator (the IOD check) for ``path``."""
    import subprocess

    result = subprocess.run(pixelmed_command("DicomInstanceValidator", path),
                            capture_output=True, text=True, timeout=300, check=False)
    text = result.stdout + result.stderr
    errors = [line for line in text.splitlines()
              if line.startswith("Error") or "Exception" in line]
    return errors, text


def pixelmed_sr(path: str) -> tuple[list[str], list[str], str]:
    """(errors, warnings, full output) of PixelMed's DicomSRValidator for ``path``."""
    import subprocess

    result = subprocess.run(pixelmed_command("DicomSRValidator", path),
                            capture_output=True, text=True, timeout=300, check=False)
    text = result.stdout + result.stderr
    lines = text.splitlines()
    errors = [line for line in lines if line.startswith("Error") or "Exception" in line]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings, text
