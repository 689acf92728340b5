"""Is the PACS copy of an object exactly the manifest's file? Shared by ``load`` and ``verify``.

The manifest gives each object's SHA-256; Orthanc records the size and MD5 of every file it
stores (``StoreMD5ForAttachments``, on by default) and answers them at
``/instances/{id}/attachments/dicom/info``. So a local file is first checked against its
manifest SHA-256 (one read giving the SHA-256, the MD5 and the size), then its MD5 and size
are compared with the PACS copy's: no object is downloaded when they agree.

When they differ, or Orthanc recorded no MD5, the stored file is downloaded and its data set
(everything after the File Meta Information) compared with the local file's: an object
received over C-STORE is stored with a File Meta Information Orthanc writes itself (its own
implementation UID, the calling AE title), so only the data set can be the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from converter.fileio import hash_file
from converter.manifest import ManifestRow

from server.client import HeldInstance, OrthancClient

# VRs whose explicit-VR element header has a 2-byte reserved field and a 4-byte length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


@dataclass(frozen=True)
class LocalDigest:
    """SHA-256, MD5 and size of a local file, from one read."""

    sha256: str
    md5: str
    size: int


def digest_file(path: Path) -> LocalDigest:
    """Hash ``path`` in 1 MiB chunks (OSError when it cannot be read)."""
    digests, size = hash_file(path, ("sha256", "md5"))
    return LocalDigest(digests["sha256"], digests["md5"], size)


def manifest_mismatch(entry: ManifestRow, digest: LocalDigest) -> str | None:
    """Why a file's digest is not its manifest's (None when it is)."""
    if digest.sha256 == entry.sha256.lower():
        return None
    return (f"differs from its SHA-256 in the manifest (file {digest.sha256[:16]}..., "
            f"manifest {entry.sha256[:16]}...)")


def dataset_part(data: bytes) -> bytes:
    """The bytes after the preamble and File Meta Information (all of ``data`` without them)."""
    if data[128:132] != b"DICM":
        return data
    offset = 132
    while offset + 8 <= len(data):
        group, _element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            break
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, offset + 8)
            offset += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, offset + 6)
            offset += 8 + length
    return data[offset:]


@dataclass(frozen=True)
class Comparison:
    """A PACS copy compared with its local file: ``same``, and what Orthanc reported."""

    same: bool
    pacs_size: int
    pacs_md5: str | None

    def describe(self, local: LocalDigest) -> str:
        """The difference, for a user."""
        return (f"the PACS copy (size {self.pacs_size}, MD5 {self.pacs_md5 or 'not recorded'}) "
                f"differs from the manifest file (size {local.size}, MD5 {local.md5})")


def compare_copy(client: OrthancClient, held: HeldInstance, path: Path,
                 local: LocalDigest) -> Comparison:
    """Compare the PACS copy ``held`` with the local file ``path`` (already digested).

    Raises
    ------
    OrthancError
        When Orthanc cannot be asked.
    """
    info = client.attachment_info(held.orthanc_id)
    if info.md5 == local.md5 and info.size == local.size:
        return Comparison(True, info.size, info.md5)
    served = client.instance_file(held.orthanc_id)
    same = dataset_part(served) == dataset_part(path.read_bytes())
    return Comparison(same, info.size, info.md5)
