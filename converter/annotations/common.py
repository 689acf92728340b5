"""What the SR and SEG writers and readers share: our fixed identity stamp and code keys."""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset, FileMetaDataset

from .. import codes

CodeKey = tuple[str, str]  # (scheme designator, code value)


def key_of(code: object) -> CodeKey | None:
    """(scheme, value) of a Code / CodedConcept / code item, None for None."""
    if code is None:
        return None
    return (str(code.scheme_designator), str(code.value))  # type: ignore[attr-defined]


def code_key(code: object) -> CodeKey:
    """(scheme, value) of a code that must be there."""
    key = key_of(code)
    assert key is not None
    return key


def fix_identity(ds: Dataset) -> None:
    """Overwrite what highdicom stamps with the current time, and set our file meta identity."""
    ds.InstanceCreationDate = codes.ANNOTATION_DATE
    ds.InstanceCreationTime = codes.ANNOTATION_TIME
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = codes.ANNOTATION_DATETIME
    ds.file_meta.ImplementationClassUID = codes.IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = codes.IMPLEMENTATION_VERSION_NAME


def with_transfer_syntax(ds: Dataset) -> Dataset:
    """``ds``, or a shallow copy with file meta when it has none (DICOMweb JSON objects).

    JSON metadata has no transfer syntax; highdicom then assumes little endian and logs a
    warning.  The values are already decoded, so explicit VR little endian is stated.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return ds
    result = copy.copy(ds)
    result.file_meta = FileMetaDataset()
    result.file_meta.TransferSyntaxUID = codes.EXPLICIT_VR_LITTLE_ENDIAN
    return result
