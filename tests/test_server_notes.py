"""What `serve` tells the user about the index of the Orthanc it runs."""

from __future__ import annotations

from server.pacs.settings import index_notes


def test_orthanc_without_extra_main_dicom_tags_says_what_it_costs() -> None:
    (note,) = index_notes("1.10.1")
    assert "ImageLaterality" in note and "ViewPosition" in note and "1.11" in note
    assert "ms an image" in note  # the measured cost, not just a warning


def test_orthanc_that_indexes_them_says_nothing() -> None:
    assert index_notes("1.11.0") == [] and index_notes("1.12.7") == []
