"""The converter's real output (tests/conftest.py's synthetic release) through the PACS."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs_tools import Pacs
from server.transfer.load import load
from server.transfer.verify import describe, verify

pytestmark = pytest.mark.integration


def test_converted_release_loads_once_and_verifies(pacs: Pacs, release, converted_release) -> None:
    root, _ = release
    out, conversion = converted_release
    first = load(out, pacs.connection, workers=2)
    assert first.ok, first.errors
    assert first.sent + first.already_present == first.total > 0
    again = load(out, pacs.connection, workers=2)
    assert (again.sent, again.already_present) == (0, first.total)
    result = verify(Path(root), out, pacs.connection)
    assert result.ok, [describe(p) for p in result.problems]
    assert result.studies == conversion.studies
