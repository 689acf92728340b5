"""UID rules: the invertible mapping of VinDr hex digests and deterministic derived UIDs.

A VinDr id is the 32-digit hex MD5 digest of an original UID. ``2.25.`` followed by the
decimal value of those 128 bits is a valid UID (PS3.5 B.2) of at most 44 characters, and the
mapping inverts exactly, so a user can always find the source file of any object we write.
Objects we create (SR, SEG, their series) get UIDs derived by hashing a name, so re-runs give
the same UIDs.
"""

from __future__ import annotations

import hashlib
import re

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
