"""UID rules: invertible VinDr mapping and deterministic derived UIDs."""

import pytest

from converter.naming import derived_uid, hex_to_uid, is_valid_uid, uid_to_hex


@pytest.mark.parametrize("hex_id", ["0" * 32, "f" * 32, "0123456789abcdef0123456789abcdef",
                                    "00000000000000000000000000000001"])
def test_hex_uid_round_trip(hex_id):
    uid = hex_to_uid(hex_id)
    assert is_valid_uid(uid)
    assert len(uid) <= 44
    assert uid_to_hex(uid) == hex_id


@pytest.mark.parametrize("bad", ["", "ABCDEF0123456789abcdef0123456789", "abc", "g" * 32,
                                 "0123456789abcdef0123456789abcdef0"])
def test_hex_to_uid_rejects_non_ids(bad):
    with pytest.raises(ValueError):
        hex_to_uid(bad)


@pytest.mark.parametrize("bad", ["1.2.3", "2.25.01", f"2.25.{1 << 128}", "2.25."])
def test_uid_to_hex_rejects_foreign_uids(bad):
    with pytest.raises(ValueError):
        uid_to_hex(bad)


def test_derived_uids_are_stable_and_distinct():
    a = derived_uid("sr", "ab" * 16)
    assert a == derived_uid("sr", "ab" * 16)
    assert a != derived_uid("seg", "ab" * 16)
    assert derived_uid("a", "bc") != derived_uid("ab", "c")
    assert is_valid_uid(a) and a.startswith("2.25.")


@pytest.mark.parametrize("value,ok", [("1.2.840.10008.1.2.1", True), ("1.02.3", False),
                                      ("1..2", False), ("1.2.a", False), ("1." * 32 + "1", False)])
def test_is_valid_uid(value, ok):
    assert is_valid_uid(value) is ok
