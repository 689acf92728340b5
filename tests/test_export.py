"""Lossless export: release CSVs -> MG + SR -> CSV rows equal to the source text."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from mgfixture import hexid, mg_header

from converter.errors import ExportError
from converter.export import (
    compare_with_release,
    csv_text,
    export_folder,
    rows_from_datasets,
    write_csvs,
)
from converter.release import BREAST_CSV, BREAST_HEADER, FINDING_CSV, FINDING_HEADER, read_release
from converter.annotations.seg import build_seg
from converter.annotations.sr import build_sr

A, B = hexid("export", "A"), hexid("export", "B")
SA1, SA2, SB = hexid("export", "A", "s1"), hexid("export", "A", "s2"), hexid("export", "B", "s")
IMG = {key: hexid("export", *key) for key in
       [("A", "R", "MLO"), ("A", "L", "CC"), ("A", "R", "CC"), ("A", "L", "MLO"),
        ("B", "L", "CC"), ("B", "L", "MLO"), ("B", "R", "MLO"), ("B", "R", "CC")]}


def _breast(study, lat, view):
    if study == "A":
        series = SA1 if lat == "R" else SA2
        rest = "40,32,BI-RADS 2,DENSITY B" if lat == "R" else "40,32,BI-RADS 4,DENSITY C"
        return f"{A},{series},{IMG[('A', lat, view)]},{lat},{view},{rest}"
    rest = "48,36,BI-RADS 1,DENSITY D" if lat == "L" else "48,36,BI-RADS 1,DENSITY A"
    return f"{B},{SB},{IMG[('B', lat, view)]},{lat},{view},{rest}"


# Written by hand in the release's exact format (quoting, empty fields, number styles).
BREAST_TEXT = "".join(
    [",".join(BREAST_HEADER) + "\n"]
    + [f"{_breast('A', lat, view)},training\n" for _, lat, view in list(IMG)[:4]]
    + [f"{_breast('B', lat, view)},test\n" for _, lat, view in list(IMG)[4:]]
)
FINDING_TEXT = "".join([
    ",".join(FINDING_HEADER) + "\n",
    (f"{_breast('A', 'L', 'CC')},\"['Mass', 'Focal Asymmetry']\",BI-RADS 4,"
     "12.5678710938,3.25,20.123456789012345,15,training\n"),
    (f"{_breast('A', 'L', 'CC')},['Suspicious Calcification'],BI-RADS 4,"
     "12.5678710938,3.25,20.123456789012345,15,training\n"),
    f"{_breast('A', 'R', 'CC')},['Skin Thickening'],,1.0,2.0,3.0,4.0,training\n",
    (f"{_breast('A', 'L', 'MLO')},"
     "\"['Nipple Retraction', 'Mass', 'Skin Retraction', 'Suspicious Lymph Node']\",BI-RADS 4,"
     "-27.123,-0.5,35.75,41.000000000000004,training\n"),
    f"{_breast('A', 'L', 'MLO')},['Global Asymmetry'],BI-RADS 3,0,0,32,40,training\n",
    f"{_breast('A', 'R', 'MLO')},['No Finding'],,,,,,training\n",
] + [
    f"{_breast('B', lat, view)},['No Finding'],,,,,,test\n" for _, lat, view in list(IMG)[4:]
])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(release dir, output dir, MG headers in release order, SRs) of the hand-made release."""
    root = tmp_path_factory.mktemp("release")
    (root / BREAST_CSV).write_bytes(BREAST_TEXT.encode())
    (root / FINDING_CSV).write_bytes(FINDING_TEXT.encode())
    release = read_release(root)
    assert [p for p in release.problems if p.code not in ("missing-file", "no-checksums")
            and p.severity == "error"] == []
    out = tmp_path_factory.mktemp("out")
    headers, srs = [], []
    for study in release.studies:
        study_headers = [mg_header(image, n) for n, image in enumerate(study.images, 1)]
        for image, header in zip(study.images, study_headers):
            path = out / "images" / study.study_id / f"{image.image_id}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            header.save_as(path, enforce_file_format=True)
            seg = build_seg(image, header)
            if seg is not None:  # present in a real output folder; the export ignores it
                (out / "seg").mkdir(exist_ok=True)
                seg.save_as(out / "seg" / f"{image.image_id}.dcm", enforce_file_format=True)
        sr = build_sr(study, study_headers)
        (out / "sr").mkdir(exist_ok=True)
        sr.save_as(out / "sr" / f"{study.study_id}.dcm", enforce_file_format=True)
        headers += study_headers
        srs.append(sr)
    return root, out, headers, srs


def test_round_trip_is_byte_identical(converted):
    _, _, headers, srs = converted
    breast_rows, finding_rows = rows_from_datasets(headers, srs)
    assert csv_text(BREAST_HEADER, breast_rows) == BREAST_TEXT
    assert csv_text(FINDING_HEADER, finding_rows) == FINDING_TEXT


def test_row_values(converted):
    _, _, headers, srs = converted
    _, finding_rows = rows_from_datasets(headers, srs)
    outside = next(r for r in finding_rows if r["xmin"] == "-27.123")
    assert outside["finding_categories"] == (
        "['Nipple Retraction', 'Mass', 'Skin Retraction', 'Suspicious Lymph Node']"
    )
    assert outside["ymax"] == "41.000000000000004"
    skin = next(r for r in finding_rows if r["finding_categories"] == "['Skin Thickening']")
    assert (skin["finding_birads"], skin["xmin"], skin["breast_birads"]) == ("", "1.0", "BI-RADS 2")
    assert {r["split"] for r in finding_rows} == {"training", "test"}


def test_export_folder_matches_release(converted, tmp_path):
    root, out, _, _ = converted
    breast_rows, finding_rows = export_folder(out, tmp_path)
    assert len(breast_rows) == 8 and len(finding_rows) == 10
    assert compare_with_release(root, breast_rows, finding_rows) == []
    # Written files hold the same rows (in the folder's order).
    written = (tmp_path / FINDING_CSV).read_text()
    assert sorted(written.splitlines()) == sorted(FINDING_TEXT.splitlines())
    assert sorted((tmp_path / BREAST_CSV).read_text().splitlines()) == sorted(
        BREAST_TEXT.splitlines()
    )


def test_compare_finds_changed_text(converted):
    root, _, headers, srs = converted
    breast_rows, finding_rows = rows_from_datasets(headers, srs)
    changed = [dict(r) for r in finding_rows]
    row = next(r for r in changed if r["xmin"] == "12.5678710938")
    row["xmin"] = "12.567871093800"  # same number, different text
    problems = compare_with_release(root, breast_rows, changed)
    assert sorted(p.code for p in problems) == ["export-row-extra", "export-row-missing"]
    missing = next(p for p in problems if p.code == "export-row-missing")
    assert missing.file == FINDING_CSV and missing.row in (2, 3)
    assert missing.image_id == row["image_id"]


def test_compare_detects_missing_rows_and_unknown_images(converted):
    root, _, headers, srs = converted
    breast_rows, finding_rows = rows_from_datasets(headers, srs)
    problems = compare_with_release(root, breast_rows[1:], finding_rows,
                                    image_ids=[r["image_id"] for r in breast_rows])
    assert [p.code for p in problems] == ["export-row-missing"]
    assert problems[0].row == 2
    problems = compare_with_release(root, breast_rows, finding_rows,
                                    image_ids=[hexid("nowhere")])
    assert [p.code for p in problems] == ["export-unknown-image"]


def test_compare_subset_of_images(converted):
    root, _, headers, srs = converted
    study_b = [ds for ds in headers if ds.StudyDescription.endswith("test")]
    breast_rows, finding_rows = rows_from_datasets(study_b, srs)
    assert len(breast_rows) == len(finding_rows) == 4
    assert compare_with_release(root, breast_rows, finding_rows) == []
    left_cc = [ds for ds in headers if ds.StudyDescription.endswith("training")][1]
    assert left_cc.ImageLaterality == "L" and left_cc.ViewPosition == "CC"
    with pytest.raises(ExportError, match="not among the images"):
        rows_from_datasets([left_cc], srs)  # the other images of study A are missing
    breast_rows, finding_rows = rows_from_datasets([left_cc], srs, strict=False)
    assert len(breast_rows) == 1 and len(finding_rows) == 2
    assert compare_with_release(root, breast_rows, finding_rows) == []


def test_dicomweb_json_objects(converted):
    """Objects fetched over DICOMweb arrive as JSON without file meta: same rows."""
    _, _, headers, srs = converted
    from_json = pydicom.Dataset.from_json
    images = [from_json(ds.to_json_dict()) for ds in headers]
    reports = [from_json(ds.to_json_dict()) for ds in srs]
    assert rows_from_datasets(images, reports) == rows_from_datasets(headers, srs)


def test_missing_sr_is_an_error(converted):
    _, _, headers, srs = converted
    with pytest.raises(ExportError, match="no SR for study"):
        rows_from_datasets(headers, srs[:1])


def test_write_csvs_line_endings(converted, tmp_path):
    _, _, headers, srs = converted
    breast_path, finding_path = write_csvs(tmp_path, *rows_from_datasets(headers, srs))
    data = finding_path.read_bytes()
    assert b"\r" not in data and not data.startswith(b"\xef\xbb\xbf")
    assert data.decode() == FINDING_TEXT
    assert Path(breast_path).read_bytes().decode() == BREAST_TEXT


# --- end to end on the synthetic release ----------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(release, converted_release):
    """The session's 50-exam synthetic release (every erratum planted), converted."""
    (src, summary), (out, result) = release, converted_release
    assert result.ok, [p for p in result.problems if p.severity == "error"]
    return src, out, summary


def test_synthetic_release_round_trip(synthetic, tmp_path):
    src, out, summary = synthetic
    breast_rows, finding_rows = export_folder(out, tmp_path)
    release = read_release(src)
    ids = [image.image_id for image in release.images]
    assert len(breast_rows) == len(ids)
    assert len(finding_rows) == summary.box_rows + summary.no_finding_rows
    assert compare_with_release(src, breast_rows, finding_rows, image_ids=ids) == []
    source_lines = sorted((src / FINDING_CSV).read_text().splitlines())
    assert sorted((tmp_path / FINDING_CSV).read_text().splitlines()) == source_lines


def test_synthetic_release_objects_are_valid(synthetic, validated_release):
    """SR and SEG agree per exam (dciodvfy on them: test_convert, through validated_release)."""
    from converter.annotations import check_sr_seg

    _, out, _ = synthetic
    files = 0
    for sr_path in sorted((out / "sr").glob("*.dcm")):
        study_id = sr_path.stem
        images = [pydicom.dcmread(p, stop_before_pixels=True)
                  for p in sorted((out / "images" / study_id).glob("*.dcm"))]
        segs = sorted((out / "seg" / study_id).glob("*.dcm"))
        assert check_sr_seg(sr_path, segs, images) == []
        for path in [sr_path, *segs]:
            result, checks = validated_release[path.relative_to(out).as_posix()]
            assert result.errors == [] and checks == [], (path, result.errors, checks)
            files += 1
    assert files > 20
