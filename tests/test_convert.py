"""Image repair and the conversion pipeline on a synthetic release."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from typer.testing import CliRunner

from converter import codes
from vindr_convert.app import app
from converter.manifest import read_manifest
from converter.pipeline import convert_release
from converter.release import read_release
from converter.repair import lenient_reading
from converter.naming import uid_to_hex

from mgfixture import DICOMDIR_WARNINGS, SMALL_STUDIES, VIEW_POSITION_WARNINGS

def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".state" not in p.parts}


def test_every_input_converted(release, converted_release):
    _, summary = release
    out, result = converted_release
    assert result.ok, [p for p in result.problems if p.severity == "error"]
    assert result.images == summary.images and result.failed_images == 0
    assert result.objects["MG"] == summary.images
    assert result.objects["SR"] == summary.studies
    annotated = len({image.image_id for image in read_release(release[0]).images
                     if image.findings})
    assert result.objects["SEG"] == annotated
    assert (out / "report.json").is_file()
    assert len(read_manifest(out)) == sum(result.objects.values())


def test_dciodvfy_reports_no_error_on_any_object(converted_release, validated_release):
    out, _ = converted_release
    rows = read_manifest(out)
    assert {row.kind for row in rows} == {"MG", "SR", "SEG"}
    assert set(validated_release) == {row.path for row in rows}
    for row in rows:
        result, checks = validated_release[row.path]
        assert result.errors == [], (row.path, result.errors)
        accepted = DICOMDIR_WARNINGS + (VIEW_POSITION_WARNINGS if row.kind == "MG" else ())
        assert set(result.warnings) <= set(accepted), (row.path, result.warnings)
        assert checks == [], (row.path, checks)


def test_all_vendor_profiles_and_both_vrs_were_converted(release, converted_release):
    root, summary = release
    out, _ = converted_release
    vendors, syntaxes = set(), set()
    implicit = set(summary.errata["implicit_vr"])
    assert implicit
    for image in read_release(root).images:
        with lenient_reading():
            source = pydicom.dcmread(image.path, stop_before_pixels=True)
        syntaxes.add(source.file_meta.TransferSyntaxUID)
        repaired = pydicom.dcmread(out / "images" / image.study_id / f"{image.image_id}.dcm",
                                   stop_before_pixels=True)
        vendors.add((repaired.Manufacturer, repaired.PhotometricInterpretation))
        assert repaired.file_meta.TransferSyntaxUID == codes.EXPLICIT_VR_LITTLE_ENDIAN
    assert {m for m, _ in vendors} >= {"SIEMENS", "Planmed"}
    assert any(m.startswith("IMS") for m, _ in vendors)
    assert ("Planmed", "MONOCHROME1") in vendors
    assert syntaxes == {codes.EXPLICIT_VR_LITTLE_ENDIAN, codes.IMPLICIT_VR_LITTLE_ENDIAN}


def test_repaired_images(release, converted_release):
    root, summary = release
    out, _ = converted_release
    for image in read_release(root).images:
        path = out / "images" / image.study_id / f"{image.image_id}.dcm"
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == codes.MG_FOR_PRESENTATION
        assert ds.file_meta.MediaStorageSOPClassUID == codes.MG_FOR_PRESENTATION
        assert ds.file_meta.ImplementationClassUID == codes.IMPLEMENTATION_CLASS_UID
        assert uid_to_hex(ds.StudyInstanceUID) == image.study_id
        assert uid_to_hex(ds.SeriesInstanceUID) == image.series_id
        assert uid_to_hex(ds.SOPInstanceUID) == image.image_id
        assert ds.PatientID == f"VINDR-{image.study_id}"
        assert ds.StudyDescription == f"VinDr-Mammo-{image.split}"
        assert ds.PatientIdentityRemoved == "YES"
        assert "Laterality" not in ds
        assert ds.ImageLaterality == image.laterality and ds.ViewPosition == image.view
        assert ds.ViewCodeSequence[0].CodeValue == codes.VIEW_CODES[image.view].value
        assert len(ds.ViewCodeSequence[0].ViewModifierCodeSequence) == 0
        assert ds.AnatomicRegionSequence[0].CodeValue == codes.BREAST.value
        assert (ds.OrganExposed, ds.PositionerType) == ("BREAST", "MAMMOGRAPHIC")
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", ""]
        equipment = ds.ContributingEquipmentSequence[0]
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
        assert equipment.ContributionDescription.endswith(image.relpath)
        mono1 = ds.PhotometricInterpretation == "MONOCHROME1"
        assert ds.PresentationLUTShape == ("INVERSE" if mono1 else "IDENTITY")
        assert ds.BurnedInAnnotation == ("YES" if ds.Manufacturer == "SIEMENS" else "NO")
        left = summary.chest_wall_left[image.image_id]
        assert list(ds.PatientOrientation) == [
            "A" if left else "P", codes.COLUMN_DIRECTION[(image.laterality, image.view)]]
        with lenient_reading():
            source = pydicom.dcmread(image.path)
        assert ds.PixelData == source.PixelData  # copied, never decoded or changed
        for keyword in ("Rows", "Columns", "BitsStored", "WindowCenter", "WindowWidth",
                        "ImagerPixelSpacing", "RescaleIntercept", "PatientSex"):
            assert ds.get(keyword) == source.get(keyword), keyword
        if source.get("PatientAge"):
            assert ds.PatientAge == source.PatientAge


def test_one_patient_per_exam(converted_release):
    out, _ = converted_release
    patients: dict[str, set[str]] = {}
    for row in read_manifest(out):
        ds = pydicom.dcmread(out / row.path, stop_before_pixels=True)
        patients.setdefault(ds.StudyInstanceUID, set()).add(ds.PatientID)
    assert all(len(ids) == 1 for ids in patients.values())
    flat = [next(iter(ids)) for ids in patients.values()]
    assert len(set(flat)) == len(flat) > 1


def test_same_input_same_bytes(release, converted_release, tmp_path):
    root, _ = release
    out, _ = converted_release
    again = tmp_path / "again"
    result = convert_release(root, again, workers=1)
    assert result.ok
    first, second = _files(out), _files(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_rerun_skips_completed_exams(release, converted_release):
    root, summary = release
    out, _ = converted_release
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.dcm")}
    result = convert_release(root, out, workers=2)
    assert result.ok and result.skipped_studies == summary.studies
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.dcm")}


def test_truncated_and_corrupted_files_fail_alone(release_copy, tmp_path):
    images = read_release(release_copy).images
    truncated, corrupted = images[1], images[9]
    assert truncated.study_id != corrupted.study_id
    path = release_copy / truncated.relpath
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    path = release_copy / corrupted.relpath
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one pixel byte: same size, different content
    path.write_bytes(bytes(data))

    out = tmp_path / "out"
    result = convert_release(release_copy, out, workers=2)
    assert not result.ok and result.failed_images == 2
    errors = {p.file: p.message for p in result.problems if p.code == "image-failed"}
    assert "truncated" in errors[truncated.relpath]
    assert "checksum mismatch" in errors[corrupted.relpath]
    failed_studies = {truncated.study_id, corrupted.study_id}
    rows = read_manifest(out)
    assert {r.image_id for r in rows if r.kind == "MG"} == {
        i.image_id for i in images} - {truncated.image_id, corrupted.image_id}
    assert {r.study_id for r in rows if r.kind == "SR"} == {
        i.study_id for i in images} - failed_studies
    assert not (out / "images" / truncated.study_id / f"{truncated.image_id}.dcm").exists()
    assert not list(out.rglob("*.partial"))

    runner = CliRunner()
    cli = runner.invoke(app, ["convert", str(release_copy), str(out), "--workers", "1"])
    assert cli.exit_code == 1
    assert truncated.relpath in cli.output


def test_interrupted_run_resumes(release, converted_release, tmp_path):
    root, summary = release
    clean, _ = converted_release
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vindr_convert.app import main; main()", "convert", str(root),
         str(out), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    state = out / ".state"
    while time.monotonic() < deadline:
        if state.is_dir() and len(list(state.glob("*.json"))) >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(state.glob("*.json")))
    assert 3 <= done_before < summary.studies, "the run was not interrupted midway"

    result = convert_release(root, out, workers=2)
    assert result.ok
    assert result.skipped_studies >= done_before
    assert (out / "manifest.csv").read_bytes() == (clean / "manifest.csv").read_bytes()
    assert not list(out.rglob("*.partial"))
    digests = {r.path: r.sha256 for r in read_manifest(out)}
    for rel, digest in digests.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest


def test_cli_validate_and_export(release, small_converted, tmp_path):
    root, _ = release
    out, _ = small_converted
    runner = CliRunner()
    validated = runner.invoke(app, ["validate", str(out)])
    assert validated.exit_code == 0, validated.output
    assert "OK" in validated.output
    exported = runner.invoke(app, ["export", str(out), str(tmp_path / "csv"), "--compare",
                                   str(root)])
    assert exported.exit_code == 0, exported.output
    assert "identical to the source" in exported.output


def test_limit_converts_first_exams(small_converted):
    _, result = small_converted
    assert result.ok and result.studies == SMALL_STUDIES
    assert result.objects["SR"] == SMALL_STUDIES and result.objects["MG"] == 4 * SMALL_STUDIES


def test_changed_source_values_are_reported(release, release_copy, tmp_path):
    _, summary = release
    images = {image.image_id: image for image in read_release(release_copy).images}
    lateral = images[summary.errata["series_laterality"][0]]
    target = next(i for i in images.values() if i.study_id != lateral.study_id)
    path = release_copy / target.relpath
    with lenient_reading():
        ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME2" or ds.PresentationLUTShape == "INVERSE"
    wrong = "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME2" else "IDENTITY"
    ds.PresentationLUTShape = wrong
    with lenient_reading():
        ds.save_as(path, enforce_file_format=True)
    sums = release_copy / "SHA256SUMS.txt"
    sums.write_text("".join(line for line in sums.read_text().splitlines(keepends=True)
                            if not line.endswith(f" {target.relpath}\n")))

    result = convert_release(release_copy, tmp_path / "out", workers=2)
    assert result.ok, [p for p in result.problems if p.severity == "error"]
    changed = {(p.image_id, p.severity): p.message for p in result.problems
               if p.code == "attribute-changed"}
    assert f"PresentationLUTShape '{wrong}' replaced" in changed[(target.image_id, "warning")]
    assert "Laterality" in changed[(lateral.image_id, "info")]
    unverified = {p.image_id for p in result.problems if p.code == "unverified"}
    assert unverified == {target.image_id}


def test_validate_catches_a_code_outside_its_context_group(converted_release):
    from converter.validate import MG_CODE_GROUPS, code_issues

    out, _ = converted_release
    row = next(r for r in read_manifest(out) if r.kind == "MG")
    ds = pydicom.dcmread(out / row.path, stop_before_pixels=True)
    assert code_issues(ds, MG_CODE_GROUPS) == []
    ds.ViewCodeSequence[0].CodeValue = "399260004"  # medial-lateral: CID 4014, fine
    assert code_issues(ds, MG_CODE_GROUPS) == []
    ds.AnatomicRegionSequence[0].CodeValue = "80248007"  # left breast: not in CID 4013
    ds.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue = "113100"
    found = code_issues(ds, MG_CODE_GROUPS)
    assert len(found) == 2
    assert any("CID 4013" in text for text in found)
    assert any("PurposeOfReferenceCodeSequence" in text and "CID 7005" in text for text in found)
