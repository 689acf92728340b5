"""Issue 8, converter side: nothing lost, nothing stale, nothing leaked.

Every test plants one defect (tests/badinput.py) in a copy of a small synthetic release and
checks the exact outcome: the message names the file or CSV line, the rest converts, and the
exit code says what happened (0 all good, 1 some items failed, 2 unusable input).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import badinput as bad
from converter.errors import OutputError, ReleaseError
from converter.manifest import read_manifest
from converter.pipeline import STATE_DIR, convert_release, output_lock
from converter.release import BREAST_CSV, FINDING_CSV, METADATA_CSV, SUMS_FILE, read_release
from vindr_convert.app import app

runner = CliRunner()


def output_files(out: Path) -> dict[str, bytes]:
    """Every file of a conversion output, but the resume bookkeeping (.state, .lock) and
    report.json's count of resumed exams (which says how the output was made)."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if not path.is_file() or rel == ".lock" or rel.startswith(STATE_DIR + "/"):
            continue
        data = path.read_bytes()
        if rel == "report.json":
            report = json.loads(data)
            del report["summary"]["skipped_studies"]
            data = json.dumps(report, indent=1).encode()
        files[rel] = data
    return files


def assert_same_output(out: Path, clean: Path) -> None:
    got, want = output_files(out), output_files(clean)
    assert sorted(got) == sorted(want)
    assert [rel for rel in want if got[rel] != want[rel]] == []


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _errors(result) -> dict[tuple[str, str], str]:
    return {(p.code, p.file): p.message for p in result.problems if p.severity == "error"}


# --- 1. stale output on re-run -----------------------------------------------------------


@pytest.mark.slow
def test_rerun_after_fixes_equals_a_clean_conversion(tiny_copy, tmp_path):
    release = read_release(tiny_copy)
    broken_exam, changed_exam, pruned_exam, _untouched = release.studies
    # 1. a box row rejected at first (unknown label), fixed later
    line = next(f.row for i in broken_exam.images for f in i.findings)
    label = bad.set_cell(tiny_copy, FINDING_CSV, line, "finding_categories", "['Tumour']")
    out = tmp_path / "out"
    first = convert_release(tiny_copy, out, workers=1)
    assert ("bad-finding-row", FINDING_CSV) in _errors(first)
    assert not (out / STATE_DIR / f"{broken_exam.study_id}.json").exists()  # not complete
    assert (out / STATE_DIR / f"{changed_exam.study_id}.json").exists()

    bad.set_cell(tiny_copy, FINDING_CSV, line, "finding_categories", label)
    # 2. a corrected image (same pixels, another window explanation), digest updated
    image = changed_exam.images[0]
    bad.rewrite_header(tiny_copy, image.relpath,
                       lambda ds: setattr(ds, "WindowCenterWidthExplanation", "CORRECTED"))
    # 3. an image's only box removed (its SEG must go) and another image dropped
    single = next(i for i in pruned_exam.images if len(i.findings) == 1)
    bad.remove_box(tiny_copy, single.findings[0].row)
    dropped = next(i for i in pruned_exam.images if i.image_id != single.image_id)
    bad.drop_image(tiny_copy, dropped.image_id)

    again = convert_release(tiny_copy, out, workers=1)
    assert again.ok and again.skipped_studies == 1
    assert not (out / "seg" / single.study_id / f"{single.image_id}.dcm").exists()
    assert not (out / "images" / dropped.study_id / f"{dropped.image_id}.dcm").exists()
    clean = tmp_path / "clean"
    assert convert_release(tiny_copy, clean, workers=1).ok
    assert_same_output(out, clean)


@pytest.mark.slow
def test_exam_gone_from_the_release_is_removed(tiny_copy, tmp_path):
    gone = read_release(tiny_copy).studies[1]
    out = tmp_path / "out"
    assert convert_release(tiny_copy, out, workers=1, limit=2).ok
    for image in gone.images:
        bad.drop_image(tiny_copy, image.image_id)
    assert convert_release(tiny_copy, out, workers=1, limit=1).ok
    assert not list(out.rglob(f"*{gone.study_id}*"))


# --- 3. checksums ----------------------------------------------------------------------------


def test_sha256sum_formats_are_accepted(tiny_copy):
    expected = read_release(tiny_copy).checksums
    lines = (tiny_copy / SUMS_FILE).read_text().splitlines()
    styles = [lambda d, p: f"{d}  {p}", lambda d, p: f"{d} *{p}", lambda d, p: f"{d.upper()}  ./{p}"]
    text = "".join(styles[n % 3](*line.split(" ", 1)) + "\n" for n, line in enumerate(lines))
    (tiny_copy / SUMS_FILE).write_text(text)
    parsed = read_release(tiny_copy)
    assert parsed.checksums == expected
    assert [p for p in parsed.problems if "checksum" in p.code or p.code == "unverified-csv"] == []


def test_checksums_matching_no_image_are_an_error(tiny_copy):
    lines = (tiny_copy / SUMS_FILE).read_text().splitlines()
    (tiny_copy / SUMS_FILE).write_text("".join(
        f"{line.split(' ', 1)[0]} vindr-mammo/{line.split(' ', 1)[1]}\n" for line in lines))
    parsed = read_release(tiny_copy)
    errors = {p.code: p for p in parsed.problems if p.severity == "error"}
    assert errors["checksums-unmatched"].file == SUMS_FILE
    assert "none of the 16 images" in errors["checksums-unmatched"].message
    unverified = {p.file for p in parsed.problems if p.code == "unverified-csv"}
    assert unverified == {BREAST_CSV, FINDING_CSV, METADATA_CSV}


def test_deleted_box_row_fails_the_csv_digest(tiny_copy, tmp_path):
    bad.delete_line(tiny_copy, FINDING_CSV, bad.box_lines(tiny_copy)[0], fix_sum=False)
    with pytest.raises(ReleaseError, match=f"^{FINDING_CSV}: SHA-256 .* says"):
        read_release(tiny_copy)
    code, output = cli("convert", tiny_copy, tmp_path / "out", "--workers", "1")
    assert code == 2 and FINDING_CSV in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()


# --- 4. lock and process hygiene ----------------------------------------------------------------


def test_second_run_into_the_same_folder_is_refused(tiny_release, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(OutputError, match="another convert run"):
            convert_release(tiny_release, out, workers=1)
        started = time.monotonic()
        code, output = cli("convert", tiny_release, out, "--workers", "1")
        assert code == 2 and "another convert run" in output
        assert time.monotonic() - started < 5
    assert not (out / "manifest.csv").exists()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_run_leaves_no_worker_and_resumes(release, converted_release, tmp_path):
    root, summary = release
    clean, _ = converted_release
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "vindr_convert", "convert", str(root),
                             str(out), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, state = time.monotonic() + 60, out / STATE_DIR
    while time.monotonic() < deadline:
        if state.is_dir() and len(list(state.glob("*.json"))) >= 3:
            break
        time.sleep(0.01)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(workers) >= 2, "no worker processes seen"
    assert len(list(state.glob("*.json"))) < summary.studies, "the run was not interrupted"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert [pid for pid in workers if _alive(pid)] == []

    result = convert_release(root, out, workers=2)
    assert result.ok and result.skipped_studies >= 3
    assert_same_output(out, clean)


# --- 5. smaller holes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_images_and_rows_fail_alone_with_their_names(tiny_copy, tmp_path):
    exams = read_release(tiny_copy).studies
    row = next(f.row for i in exams[0].images for f in i.findings)
    bad.set_cell(tiny_copy, FINDING_CSV, row, "finding_birads", "BI-RADS 6")
    longer, junk, trailing = exams[1].images[0], exams[2].images[1], exams[3].images[2]
    bad.extend_pixel_data(tiny_copy, longer.relpath, 64)
    bad.not_dicom(tiny_copy, junk.relpath)
    bad.append_bytes(tiny_copy, trailing.relpath, bad.trailing_padding())
    stray = bad.stray_image(tiny_copy, trailing.relpath)

    code, output = cli("convert", tiny_copy, tmp_path / "out", "--workers", "1")
    assert code == 1 and "Traceback" not in output and "force=True" not in output
    result = json.loads((tmp_path / "out" / "report.json").read_text())
    problems = {(p["code"], p["file"], p["row"]): p["message"] for p in result["problems"]}
    assert "outside the BI-RADS scale" in problems[("bad-finding-row", FINDING_CSV, row)]
    assert "64 more than" in problems[("image-failed", longer.relpath, None)]
    assert problems[("image-failed", junk.relpath, None)].startswith("not a DICOM file")
    assert "20 byte(s) after the Pixel Data" in problems[("trailing-bytes", trailing.relpath,
                                                          None)]
    assert "not converted" in problems[("image-not-in-csv", stray, None)]
    rows = read_manifest(tmp_path / "out")
    assert {r.study_id for r in rows if r.kind == "SR"} == {exams[0].study_id, exams[3].study_id}
    assert sum(r.kind == "MG" for r in rows) == 14


def test_bom_is_accepted_and_reported(tiny_copy):
    bad.add_bom(tiny_copy, BREAST_CSV)
    parsed = read_release(tiny_copy)
    bom = [p for p in parsed.problems if p.code == "csv-bom"]
    assert len(bom) == 1 and bom[0].file == BREAST_CSV and "BOM" in bom[0].message
    assert len(parsed.images) == 16


def test_non_utf8_csv_is_a_clear_error(tiny_copy, tmp_path):
    bad.make_latin1(tiny_copy, BREAST_CSV, 3, "laterality")
    with pytest.raises(ReleaseError, match=f"{BREAST_CSV} line 3: not UTF-8"):
        read_release(tiny_copy)
    code, output = cli("convert", tiny_copy, tmp_path / "out")
    assert code == 2 and "not UTF-8" in output and "Traceback" not in output


def test_non_utf8_metadata_is_reported(tiny_copy):
    bad.make_latin1(tiny_copy, METADATA_CSV, 3, "Manufacturer")
    warnings = {p.code: p for p in read_release(tiny_copy).problems if p.file == METADATA_CSV}
    assert "line 3: not UTF-8" in warnings["bad-metadata"].message  # optional file: warning


def test_unwritable_output_folder_is_a_clear_error(tiny_release, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, output = cli("convert", tiny_release, blocker / "out", "--workers", "1")
    assert code == 2 and "cannot write the output folder" in output
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o555)
        code, output = cli("convert", tiny_release, readonly, "--workers", "1")
        assert code == 2 and "Permission denied" in output


def test_disk_full_while_writing_the_manifest(tiny_release, tmp_path, monkeypatch):
    import converter.manifest

    out = tmp_path / "out"
    assert convert_release(tiny_release, out, workers=1, limit=1).ok
    before = (out / "manifest.csv").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(converter.manifest, "atomic_write", full)
    code, output = cli("convert", tiny_release, out, "--workers", "1", "--limit", "2")
    assert code == 2 and "Traceback" not in output
    assert "could not write" in output and "No space left on device" in output
    assert (out / "manifest.csv").read_bytes() == before


def test_validate_and_export_of_a_missing_folder(tmp_path):
    code, output = cli("validate", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in output
    code, output = cli("export", tmp_path / "nowhere", tmp_path / "csv")
    assert code == 2 and "nowhere" in output
    assert not (tmp_path / "csv").exists()


def test_a_cut_or_edited_manifest_is_refused_naming_it(tmp_path):
    """The conversion's record (manifest.json: rows, exams, SHA-256) catches a manifest cut at
    an exam boundary (every row still well formed) or edited, and a missing record."""
    from dataclasses import replace

    from converter.errors import ManifestError
    from converter.manifest import ManifestRow, read_manifest, write_manifest

    rows = [ManifestRow("MG", f"s{i}", "se", f"i{i}", f"images/s{i}/i{i}.dcm", f"1.{i}",
                        f"1.{i}.1", f"1.{i}.1.1", "1.2.840.10008.5.1.4.1.1.1.2", "ab" * 32)
            for i in range(4)]
    write_manifest(tmp_path, rows)
    assert read_manifest(tmp_path) == rows
    manifest = tmp_path / "manifest.csv"
    text = manifest.read_text()
    manifest.write_text("\n".join(text.splitlines()[:3]) + "\n")  # header and two exams
    with pytest.raises(ManifestError, match=r"manifest.csv: not the conversion's manifest: 2 "
                                            r"objects of 2 exams.*records 4 objects of 4 exams"):
        read_manifest(tmp_path)
    manifest.write_text(text.replace("ab" * 32, "cd" * 32, 1))  # one digest edited
    with pytest.raises(ManifestError, match="not the conversion's manifest"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, [replace(rows[0], sha256="ef" * 32)])  # rewritten: consistent
    assert len(read_manifest(tmp_path)) == 1
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="manifest.json: missing"):
        read_manifest(tmp_path)
