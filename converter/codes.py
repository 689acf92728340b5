"""Every DICOM code, code table and fixed constant the project uses, in one place.

The writers (repair, SR, SEG) and the readers (export, validate) use the same tables, so
the round trip reads with the tables it wrote with.  Code meanings are the DICOM ones
(PS3.16), not the full SNOMED names (several exceed the 64 characters of LO).
"""

from __future__ import annotations

import functools

from pydicom.sr.coding import Code

# --- SOP classes and transfer syntaxes -------------------------------------------------

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"

# Our implementation identity in the file meta (2.25 root: a UUID-derived UID of our own).
IMPLEMENTATION_CLASS_UID = "2.25.200766926329412436131390584425327496193"
IMPLEMENTATION_VERSION_NAME = "VINDR_DICOM_01"  # SH, at most 16 characters

# --- Dataset-level constants ------------------------------------------------------------

DATASET_NAME = "VinDr-Mammo"
DATASET_VERSION = "1.0.0"
MANUFACTURER = "vindr-dicom"
PATIENT_ID_PREFIX = "VINDR-"
STUDY_DESCRIPTION_PREFIX = "VinDr-Mammo-"  # + split: exact-matchable over QIDO (no spaces)
SPLITS = ("training", "test")

LATERALITIES = ("L", "R")
VIEWS = ("CC", "MLO")

# --- Finding categories (VinDr labels -> codes) -----------------------------------------

SCT = "SCT"
DCM = "DCM"

FINDING_CODES: dict[str, Code] = {
    "Mass": Code("129788004", SCT, "Mammographic breast mass"),
    "Suspicious Calcification": Code("129769006", SCT, "Calcification Cluster"),
    "Asymmetry": Code("129790003", SCT, "Asymmetric breast tissue"),
    "Focal Asymmetry": Code("129789007", SCT, "Focal asymmetric breast tissue"),
    "Global Asymmetry": Code("129790003", SCT, "Asymmetric breast tissue"),
    "Architectural Distortion": Code("129792006", SCT, "Architectural distortion of breast"),
    "Skin Thickening": Code("129797000", SCT, "Skin thickening of breast"),
    "Skin Retraction": Code("129796009", SCT, "Skin retraction of breast"),
    "Nipple Retraction": Code("271955004", SCT, "Nipple retraction"),
    "Suspicious Lymph Node": Code("127189005", SCT, "Axillary adenopathy"),
}
NO_FINDING = "No Finding"
FINDING_LABELS: tuple[str, ...] = tuple(FINDING_CODES)

# Context group each finding code is drawn from (membership checked by validate).
FINDING_CIDS: dict[str, int] = {
    "Mass": 6017,
    "Suspicious Calcification": 6015,
    "Asymmetry": 6017,
    "Focal Asymmetry": 6017,
    "Global Asymmetry": 6017,
    "Architectural Distortion": 6015,
    "Skin Thickening": 6015,
    "Skin Retraction": 6015,
    "Suspicious Lymph Node": 6015,
    "Nipple Retraction": 6056,
}

FINDING_CATEGORY = Code("49755003", SCT, "Morphologically Abnormal Structure")  # CID 7150

# --- Assessments --------------------------------------------------------------------------

ASSESSMENT_CATEGORY = Code("111005", DCM, "Assessment Category")  # TID 4203
BIRADS_CODES: dict[int, Code] = {  # CID 6027 (pydicom's codes.cid6027 is empty)
    0: Code("397138000", SCT, "0 - Incomplete - Need additional imaging evaluation +/- priors"),
    1: Code("397140005", SCT, "1 - Negative"),
    2: Code("397141009", SCT, "2 - Benign"),
    3: Code("397143007", SCT, "3 - Probably Benign"),
    4: Code("397144001", SCT, "4 - Suspicious"),
    5: Code("397145000", SCT, "5 - Highly suggestive of malignancy"),
}

BREAST_COMPOSITION = Code("129715009", SCT, "Breast composition")  # TID 4205
# TID 1500 row 12: the report-level container of the breast-level assessments.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
IMAGING_MEASUREMENTS = Code("126010", DCM, "Imaging Measurements")  # TID 1500 row 6
SOURCE = Code("260753009", SCT, "Source")  # an image an assessment comes from (as in TID 1501)
DENSITY_CODES: dict[str, Code] = {  # CID 6000
    "A": Code("129716005", SCT, "Almost entirely fat"),
    "B": Code("129717001", SCT, "Scattered fibroglandular densities"),
    "C": Code("129718006", SCT, "Heterogeneously dense"),
    "D": Code("129719003", SCT, "Extremely dense"),
}

# --- Views, laterality, anatomy --------------------------------------------------------------

VIEW_CODES: dict[str, Code] = {  # CID 4014
    "CC": Code("399162004", SCT, "cranio-caudal"),
    "MLO": Code("399368009", SCT, "medio-lateral oblique"),
}

LATERALITY_CODES: dict[str, Code] = {  # CID 244
    "L": Code("7771000", SCT, "Left"),
    "R": Code("24028007", SCT, "Right"),
}
BREAST_SIDE_CODES: dict[str, Code] = {
    "L": Code("80248007", SCT, "Left breast"),
    "R": Code("73056007", SCT, "Right breast"),
}

BREAST = Code("76752008", SCT, "Breast")  # CID 4013 (anatomic region), finding site

GEOMETRIC_PURPOSE = Code("130400", DCM, "Geometric purpose of region")
# --- AI results (converter.annotations.model_sr) ------------------------------------------------
# A model's box or breast score: DCM 111047 "Probability of cancer" (CID 6048 "CAD Operating
# Point Axis Label"; the concept orthanc-mammography writes), a ratio in [0, 1] with UCUM "1"
# "no units" (CID 7181); a reader also accepts UCUM "%", orthanc-mammography's unit.
PROBABILITY_OF_CANCER = Code("111047", DCM, "Probability of cancer")
CERTAINTY_OF_FINDING = Code("111012", DCM, "Certainty of Finding")  # TID 4000 (CAD SR) score
NO_UNITS = Code("1", "UCUM", "no units")
PERCENT = Code("%", "UCUM", "Percent")
# TID 4019 Algorithm Identification rows, and the device observer (TID 1004) of a model SR.
ALGORITHM_NAME = Code("111001", DCM, "Algorithm Name")
ALGORITHM_VERSION = Code("111003", DCM, "Algorithm Version")
MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
MODEL_SR_SERIES_NUMBER = 950
MODEL_SR_DIR = "predictions"  # OUT/predictions/<name>-<version>/<study_id>.dcm
BOUNDED_BY = Code("75958009", SCT, "Bounded by")  # CID 219
IMAGING_PROCEDURE = Code("363679005", SCT, "Imaging procedure")
MODIFYING_EQUIPMENT = Code("109103", DCM, "Modifying Equipment")  # CID 7005

# De-identification method codes (CID 7050).
DEID_METHOD_CODES: tuple[Code, ...] = (
    Code("113100", DCM, "Basic Application Confidentiality Profile"),
    Code("113108", DCM, "Retain Patient Characteristics Option"),
)
DEID_METHOD_TEXT = "VinDr-Mammo keep-list; identifiers rebuilt by vindr-dicom"  # LO <= 64

# --- De-identification keep-list (converter.repair) -----------------------------------------
# The only source attributes an image carries over: those the VinDr-Mammo release is known to
# keep (its own de-identification kept 46 top-level attributes; vindr-release.md lists the
# known ones and converter.synth writes them). Everything else, every private element and
# private creator included, is dropped and reported (``attribute-dropped``); the repair then
# sets the attributes of REPAIR_ATTRIBUTES.
SOURCE_KEEP_LIST: frozenset[str] = frozenset({
    # patient characteristics (Retain Patient Characteristics Option)
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    # identity: the hex digests, mapped to 2.25 UIDs by the repair
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    # series and equipment
    "Modality", "BodyPartExamined", "Laterality", "Manufacturer", "ManufacturerModelName",
    # mammography image
    "PresentationIntentType", "ImageLaterality", "ViewPosition", "ImagerPixelSpacing",
    "PixelSpacing",
    # image pixel module
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    # presentation: windows, VOI LUTs, rescale, presentation LUT
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTSequence",
    "RescaleIntercept", "RescaleSlope", "RescaleType", "PresentationLUTShape",
    # lossy compression flags
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
})
# Inside the items of a kept sequence, only these attributes are kept.
SOURCE_ITEM_KEEP_LIST: dict[str, frozenset[str]] = {
    "VOILUTSequence": frozenset({"LUTDescriptor", "LUTExplanation", "LUTData"}),
}
# What converter.repair.repair_dataset sets on every image (added or replaced).
REPAIR_ATTRIBUTES: frozenset[str] = frozenset({
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientIdentityRemoved",
    "DeidentificationMethod", "DeidentificationMethodCodeSequence", "StudyInstanceUID",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "InstanceNumber", "Modality",
    "Manufacturer", "BodyPartExamined", "PresentationIntentType", "ImageType",
    "PatientOrientation", "ImageLaterality", "ViewPosition", "ViewCodeSequence",
    "AnatomicRegionSequence", "OrganExposed", "PositionerType", "DetectorType",
    "AcquisitionContextSequence", "BurnedInAnnotation", "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign", "PresentationLUTShape", "RescaleIntercept",
    "RescaleSlope", "RescaleType", "LossyImageCompression", "ContributingEquipmentSequence",
})

# --- PatientOrientation (PS3.3 C.8.11.7 / PS3.17 mammography orientation) -------------------
# The column direction (top -> bottom) for a non-flipped image; the row direction is A when
# the chest wall lies on the left image edge (nipple towards the right), P otherwise.
COLUMN_DIRECTION: dict[tuple[str, str], str] = {
    ("L", "CC"): "R",
    ("R", "CC"): "L",
    ("L", "MLO"): "FR",
    ("R", "MLO"): "FL",
}

# --- Vendors -------------------------------------------------------------------------------

# Vendors whose detectors burn the view label into the pixels (defect N8).
BURNED_IN_LABEL_MANUFACTURERS = ("SIEMENS",)


@functools.cache
def cid_values(cid: int) -> frozenset[tuple[str, str]]:
    """(scheme, value) pairs of context group ``cid``.

    Taken from pydicom's copy of PS3.16, independent of the tables above, so that a wrong
    entry in this module is caught; CID 6027 (BI-RADS), which pydicom leaves empty, comes
    from :data:`BIRADS_CODES`.
    """
    if cid == 6027:
        return frozenset((c.scheme_designator, c.value) for c in BIRADS_CODES.values())
    from pydicom.sr.codedict import codes

    collection = getattr(codes, f"cid{cid}")
    return frozenset(
        (getattr(collection, name).scheme_designator, getattr(collection, name).value)
        for name in collection.dir()
    )


def in_cid(key: tuple[str, str] | None, cid: int) -> bool:
    """True when the (scheme, value) pair ``key`` belongs to context group ``cid``."""
    return key is not None and key in cid_values(cid)


# --- Annotation objects (SR, SEG): converter.annotations.sr / converter.annotations.seg ------
# Fixed values so that the same input gives the same bytes.  The date is the publication date
# of VinDr-Mammo 1.0.0 on PhysioNet (March 21, 2022), when the annotations were released.

ANNOTATION_DATE = "20220321"  # ContentDate / InstanceCreationDate / SeriesDate of SR and SEG
ANNOTATION_TIME = "000000"  # ContentTime / InstanceCreationTime / SeriesTime
ANNOTATION_DATETIME = ANNOTATION_DATE + ANNOTATION_TIME  # ContributionDateTime (DT)

SR_SERIES_NUMBER = 901
SEG_SERIES_NUMBER = 1000  # + the MG's place in the exam: one series per SEG
SR_INSTANCE_NUMBER = 1
SR_SERIES_DESCRIPTION = "VinDr-Mammo annotations (TID 1500)"
SEG_SERIES_DESCRIPTION = "finding boxes"  # after "R-CC " etc.
SEG_CONTENT_LABEL = "FINDING_BOXES"  # CS, at most 16 characters
SEG_CONTENT_DESCRIPTION = "VinDr-Mammo finding boxes, one segment per box row"
DEVICE_SERIAL_NUMBER = "1"  # Type 1 in the SEG's Enhanced General Equipment module

# Text of the tracking identifiers (format in converter.naming).
FINDING_TRACKING_PREFIX = "VinDr finding"
