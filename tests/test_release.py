"""The release reader: exact CSV parsing, joins, and per-row problems."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from converter.errors import ReleaseError
from converter.naming import format_categories, parse_birads, parse_categories, parse_density
from converter.release import BREAST_CSV, FINDING_CSV, read_release

from badinput import resum


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def _codes(release, severity=None):
    return {(p.code, p.image_id or p.study_id) for p in release.problems
            if severity is None or p.severity == severity}


def test_reads_every_study_and_image(release):
    root, summary = release
    parsed = read_release(root)
    assert len(parsed.studies) == summary.studies
    assert len(parsed.images) == summary.images
    assert all(len(study.images) == 4 for study in parsed.studies)
    assert not [p for p in parsed.problems if p.severity == "error"]
    assert len(parsed.checksums) == summary.images + 4  # 3 CSVs + LICENSE
    boxes = sum(len(image.findings) for image in parsed.images)
    assert boxes == summary.box_rows
    assert sum(not image.findings for image in parsed.images) == summary.no_finding_rows


def test_metadata_duplicated_header_is_kept(release):
    root, _ = release
    image = read_release(root).images[0]
    assert image.metadata["SOP Instance UID"] == image.image_id
    assert image.metadata["SOP Instance UID.1"] == image.image_id
    assert image.metadata["Rows"] == str(image.height)


def test_errata_are_reported_with_their_rows(release):
    root, summary = release
    parsed = read_release(root)
    found = _codes(parsed)
    for image_id in summary.errata["box_outside"]:
        assert ("box-outside-image", image_id) in found
    for study_id in summary.errata["two_lcc"]:
        assert ("repeated-view", study_id) in found
    for study_id in summary.errata["two_series"] + summary.errata["four_series"]:
        assert ("several-series", study_id) in found
    for image_id in summary.errata["empty_finding_birads"]:
        assert ("empty-finding-birads", image_id) in found
    outside = [p for p in parsed.problems if p.code == "box-outside-image"]
    assert all(p.file == FINDING_CSV and p.row and p.row > 1 for p in outside)


def test_box_text_is_kept_verbatim(release):
    root, _ = release
    parsed = {image.image_id: image for image in read_release(root).images}
    rows = _rows(root / FINDING_CSV)
    checked = 0
    for line, row in enumerate(rows[1:], start=2):
        if row[11]:
            finding = next(f for f in parsed[row[2]].findings if f.row == line)
            assert finding.box.text == tuple(row[11:15])
            assert finding.categories == parse_categories(row[9])
            assert format_categories(finding.categories) == row[9]
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("text,labels", [
    ("['Mass']", ("Mass",)),
    ("['Nipple Retraction', 'Mass']", ("Nipple Retraction", "Mass")),
    ("['No Finding']", ("No Finding",)),
])
def test_parse_categories(text, labels):
    assert parse_categories(text) == labels
    assert format_categories(labels) == text


@pytest.mark.parametrize("text", ["Mass", "['Tumour']", "[]", "['No Finding', 'Mass']",
                                  "__import__('os')", "[1]"])
def test_parse_categories_rejects(text):
    with pytest.raises(ValueError):
        parse_categories(text)


def test_value_parsers():
    assert parse_birads("BI-RADS 4") == 4
    assert parse_density("DENSITY C") == "C"
    for bad in ("BI-RADS", "BIRADS 4", "BI-RADS 6", "BI-RADS 7", "BI-RADS 10"):
        with pytest.raises(ValueError):
            parse_birads(bad)
    with pytest.raises(ValueError):
        parse_density("DENSITY E")


def test_bad_rows_are_reported_and_the_rest_is_read(release_copy):
    breast = _rows(release_copy / BREAST_CSV)
    findings = _rows(release_copy / FINDING_CSV)
    line = next(n for n, row in enumerate(breast[1:], start=2)
                if row[2] not in (findings[1][2], findings[2][2]))
    breast[line - 1][3] = "X"  # an invalid laterality
    bad_image = breast[line - 1][2]
    _write_rows(release_copy / BREAST_CSV, breast)
    findings[1][9] = "['Tumour']"  # line 2
    findings[2][5] = "999"  # line 3: height disagrees
    findings.append(findings[-1][:2] + ["f" * 32] + findings[-1][3:])  # unknown image
    _write_rows(release_copy / FINDING_CSV, findings)
    resum(release_copy, BREAST_CSV, FINDING_CSV)

    parsed = read_release(release_copy)
    errors = {(p.code, p.file, p.row) for p in parsed.problems if p.severity == "error"}
    assert ("bad-breast-row", BREAST_CSV, line) in errors
    assert ("bad-finding-row", FINDING_CSV, 2) in errors
    assert ("bad-finding-row", FINDING_CSV, 3) in errors
    assert ("unknown-image", FINDING_CSV, len(findings)) in errors
    assert bad_image not in {image.image_id for image in parsed.images}
    assert len(parsed.images) == len(breast) - 2


def test_missing_file_and_missing_checksum_list(release_copy):
    image = read_release(release_copy).images[5]
    (release_copy / image.relpath).unlink()
    (release_copy / "SHA256SUMS.txt").unlink()
    parsed = read_release(release_copy)
    found = {(p.code, p.file) for p in parsed.problems}
    assert ("missing-file", image.relpath) in found
    assert ("no-checksums", "SHA256SUMS.txt") in found


def test_not_a_release(tmp_path):
    with pytest.raises(ReleaseError, match="breast-level_annotations.csv"):
        read_release(tmp_path)
    (tmp_path / BREAST_CSV).write_text("a,b,c\n")
    with pytest.raises(ReleaseError, match="unexpected header"):
        read_release(tmp_path)


def test_a_lone_carriage_return_is_refused_with_its_line(tmp_path: Path) -> None:
    """csv reads a CR without LF as a line break: a value starting with one would lose it
    silently (found by test_properties), so the file is refused, naming the line."""
    from converter.release import ReleaseError, read_csv_rows

    path = tmp_path / "finding_annotations.csv"
    path.write_bytes(b"a,b\nx,y\n\rz,w\n")
    with pytest.raises(ReleaseError, match="finding_annotations.csv line 3: a carriage return"):
        read_csv_rows(path, ("a", "b"))
    path.write_bytes(b"a,b\r\nx,y\r\n")  # CRLF line ends are fine
    assert read_csv_rows(path, ("a", "b")) == [(2, ["x", "y"])]
