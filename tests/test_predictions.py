"""`predictions import`: checked rows into one SR per exam under OUT, listed in its manifest."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from typer.testing import CliRunner

from converter.annotations.model_sr import read_model_sr
from converter.evaluation.predictions import import_predictions, model_folder
from converter.manifest import read_manifest
from converter.pipeline import convert_release
from converter.synth import simulate_model
from converter.validate import annotation_issues, check_object
from vindr_convert.app import app


@pytest.fixture()
def out(small_converted, tmp_path):
    """A private copy of the small conversion (imports change its manifest)."""
    source, _ = small_converted
    copy = tmp_path / "out"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="module")
def model_csvs(release, tmp_path_factory):
    root, _ = release
    return simulate_model(root, tmp_path_factory.mktemp("model"), seed=5, fp_per_image=1.0)


def _exam_rows(model_csvs, out):
    """The simulated model's rows for the exams of ``out`` only (it covers all 50)."""
    studies = {r.study_id for r in read_manifest(out)}
    boxes = [line for line in model_csvs.boxes_csv.read_text().splitlines()[1:]
             if line.split(",")[0] in studies]
    breasts = [line for line in model_csvs.breasts_csv.read_text().splitlines()[1:]
               if line.split(",")[0] in studies]
    return boxes, breasts


def _write(path, header, lines):
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


BOX_HEADER = "study_id,image_id,xmin,ymin,xmax,ymax,score,label"
BREAST_HEADER = "study_id,laterality,score,birads,density"


def test_import_writes_one_sr_per_exam_listed_in_the_manifest(out, model_csvs, tmp_path):
    boxes, breasts = _exam_rows(model_csvs, out)
    boxes_csv = _write(tmp_path / "b.csv", BOX_HEADER, boxes)
    breasts_csv = _write(tmp_path / "r.csv", BREAST_HEADER, breasts)
    result = import_predictions(out, "sim", "1", boxes_csv, breasts_csv)
    assert result.ok, result.problems
    assert result.boxes == len(boxes) and result.breasts == len(breasts)
    rows = [r for r in read_manifest(out) if r.path.startswith(model_folder("sim", "1"))]
    assert len(rows) == result.studies == len({line.split(",")[0] for line in boxes + breasts})
    total = 0
    for row in rows:
        report = read_model_sr(pydicom.dcmread(row.file(out)))
        assert (report.name, report.version) == ("sim", "1") and not report.problems
        total += len(report.boxes)
        dciodvfy, checks = check_object(out, row)
        assert dciodvfy.errors == [] and checks == []
    assert total == len(boxes)
    assert annotation_issues(out, read_manifest(out)) == []


def test_reimport_is_idempotent_and_versions_coexist(out, model_csvs, tmp_path):
    boxes, breasts = _exam_rows(model_csvs, out)
    boxes_csv = _write(tmp_path / "b.csv", BOX_HEADER, boxes)
    import_predictions(out, "sim", "1", boxes_csv)
    manifest = (out / "manifest.csv").read_bytes()
    first = {p: p.read_bytes() for p in (out / model_folder("sim", "1")).glob("*.dcm")}
    import_predictions(out, "sim", "1", boxes_csv)
    assert (out / "manifest.csv").read_bytes() == manifest
    assert {p: p.read_bytes() for p in first} == first
    import_predictions(out, "sim", "2", boxes_csv)
    rows = read_manifest(out)
    one = {r.series_uid for r in rows if r.path.startswith(model_folder("sim", "1"))}
    two = {r.series_uid for r in rows if r.path.startswith(model_folder("sim", "2"))}
    assert one and two and not one & two
    # fewer exams in a re-import: the others' SRs go, from the folder and the manifest
    keep = boxes[0].split(",")[0]
    import_predictions(out, "sim", "1", _write(tmp_path / "one.csv", BOX_HEADER,
                                               [b for b in boxes if b.startswith(keep)]))
    rows = read_manifest(out)
    assert {r.study_id for r in rows if r.path.startswith(model_folder("sim", "1"))} == {keep}
    assert len(list((out / model_folder("sim", "1")).glob("*.dcm"))) == 1


def test_a_reconvert_keeps_the_model_srs(release, out, model_csvs, tmp_path):
    root, _ = release
    boxes, _ = _exam_rows(model_csvs, out)
    import_predictions(out, "sim", "1", _write(tmp_path / "b.csv", BOX_HEADER, boxes))
    before = {r.path for r in read_manifest(out)}
    convert_release(root, out, workers=1, limit=len({r.study_id for r in read_manifest(out)}))
    assert {r.path for r in read_manifest(out)} == before


def test_each_bad_row_named_by_file_and_line_the_rest_imported(out, model_csvs, tmp_path):
    boxes, breasts = _exam_rows(model_csvs, out)
    good = boxes[0].split(",")
    study, image = good[0], good[1]
    other_study = next(r.study_id for r in read_manifest(out) if r.study_id != study)
    bad_boxes = [
        boxes[0],
        f"{'0' * 32},{image},1,1,5,5,0.5,",                     # 3 unknown study
        f"{study},{'f' * 32},1,1,5,5,0.5,",                     # 4 unknown image
        f"{study},{image},1,1,99999,5,0.5,",                    # 5 outside the image
        f"{study},{image},-1,1,5,5,0.5,",                       # 6 outside (negative)
        f"{study},{image},1,1,5,5,1.5,",                        # 7 score above 1
        f"{study},{image},1,1,5,5,-0.1,",                       # 8 score below 0
        f"{study},{image},1,1,x,5,0.5,",                        # 9 not a number
        f"{study},{image},5,1,1,5,0.5,",                        # 10 no area
        f"{study},{image},1,1,5,5,0.5,Tumour",                  # 11 unknown label
        f"{study},{image},1,1,5,5,0.5",                         # 12 too few fields
        boxes[0],                                               # 13 duplicate of line 2
        f"{other_study},{image},1,1,5,5,0.5,",                  # 14 image of another study
    ]
    bad_breasts = [
        breasts[0],
        f"{study},X,0.5,,",                                     # 3 laterality
        f"{study},L,2,,",                                       # 4 score
        f"{study},L,0.5,6,",                                    # 5 birads
        f"{study},L,0.5,,E",                                    # 6 density
        breasts[0],                                             # 7 duplicate breast
    ]
    boxes_csv = _write(tmp_path / "BOXES.csv", BOX_HEADER, bad_boxes)
    breasts_csv = _write(tmp_path / "BREASTS.csv", BREAST_HEADER, bad_breasts)
    result = import_predictions(out, "sim", "1", boxes_csv, breasts_csv)
    by_file = {}
    for problem in result.problems:
        by_file.setdefault(problem.file, []).append(problem.row)
    assert sorted(by_file[str(boxes_csv)]) == list(range(3, 15))
    assert sorted(by_file[str(breasts_csv)]) == list(range(3, 8))
    assert result.boxes == 1 and result.breasts == 1
    messages = " | ".join(str(p) for p in result.problems)
    for text in ("unknown study", "is not an image of study", "outside the image",
                 "outside [0, 1]", "not a number", "no area", "not a finding category",
                 "fields", "duplicate of line 2", "not L or R", "not 1 to 5",
                 "not A, B, C or D", "already on line 2"):
        assert text in messages, text
    assert f"{boxes_csv} line 5:" in messages

    cli = CliRunner().invoke(app, ["predictions", "import", str(out), "--name", "sim",
                                   "--version", "1", "--boxes", str(boxes_csv),
                                   "--breasts", str(breasts_csv)])
    assert cli.exit_code == 1, cli.output
    assert "row(s) rejected" in cli.output and "line 4" in cli.output


@pytest.mark.parametrize("header", ["study_id,image_id,x0,y0,x1,y1,score",
                                    "study_id,image_id,xmin,ymin,xmax,ymax,score,label,extra"])
def test_a_wrong_header_is_unusable_input(out, tmp_path, header):
    path = _write(tmp_path / "b.csv", header, [])
    cli = CliRunner().invoke(app, ["predictions", "import", str(out), "--name", "m",
                                   "--version", "1", "--boxes", str(path)])
    assert cli.exit_code == 2
    assert "header" in cli.output


def test_a_bad_model_name_is_refused(out, tmp_path):
    path = _write(tmp_path / "b.csv", BOX_HEADER, [])
    cli = CliRunner().invoke(app, ["predictions", "import", str(out), "--name", "a\\b",
                                   "--version", "1", "--boxes", str(path)])
    assert cli.exit_code == 2 and "model name" in cli.output
