"""server.integrity without a server: digests in one read, the data set behind the file meta."""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from server.transfer.integrity import dataset_part, digest_file


def dicom_bytes(implementation_uid: str) -> bytes:
    ds = Dataset()
    ds.PatientID = "VINDR-1"
    ds.SOPInstanceUID = "1.2.3"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.ImplementationClassUID = implementation_uid
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dataset_part_ignores_the_file_meta() -> None:
    ours, theirs = dicom_bytes(generate_uid()), dicom_bytes("1.2.276.0.7230010.3.0.3.6.7.9")
    assert ours != theirs and dataset_part(ours) == dataset_part(theirs)
    flipped = ours[:-1] + bytes([ours[-1] ^ 0xFF])
    assert dataset_part(flipped) != dataset_part(ours)
    assert dataset_part(b"not dicom") == b"not dicom"


def test_digest_file_gives_sha256_md5_and_size(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"a" * 3_000_000)
    digest = digest_file(path)
    assert digest.sha256 == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert digest.md5 == hashlib.md5(b"a" * 3_000_000).hexdigest()
    assert digest.size == 3_000_000
