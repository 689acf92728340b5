"""Real converter output for the PACS tests: a synthetic release, converted, a few exams picked.

``make_output(out, n_studies, prefix)`` generates a synthetic release (seed derived from
``prefix``, so different prefixes give different exams), converts it with the real pipeline
and copies ``n_studies`` "plain" exams into ``out`` with their own ``manifest.csv``. Plain
means the tests can make exact assertions about them: one MG series of four images with four
distinct (laterality, view), one SR, exactly one SEG (one annotated image), PatientAge
present, and both splits among the picks when two or more are asked for (the synth plants
its errata - two L-CC images, 2 and 4 series, missing ages... - in the first exams; those
are never picked). The release folder is returned too: ``verify`` needs it as ``src``.

Each (prefix, n_studies) is generated and converted once per process; every call copies the
picked objects afresh into its ``out``, so a test may damage its copy.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom

from converter.manifest import ManifestRow, read_manifest, write_manifest
from converter.pipeline import convert_release
from converter.release import BREAST_CSV, FINDING_CSV
from converter.synth import STUDY_ROLES, StudyPlan, generate_release, plan_studies

SCALE = 32
SPLIT_PREFIX = "VinDr-Mammo-"
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
MAX_STUDIES = 600  # give up rather than loop forever if the synth ever stops making plain exams


def hex_id(*names: str) -> str:
    """A VinDr-like 32-hex id derived from ``names`` (for ids that must exist nowhere)."""
    return hashlib.md5("/".join(names).encode()).hexdigest()


def seed_of(prefix: str) -> int:
    """The synth seed of ``prefix``: the first 8 hex digits of its MD5."""
    return int(hashlib.md5(prefix.encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class LoadedStudy:
    """What the tests know about one converted exam of the output."""

    study_id: str
    split: str
    study_uid: str
    patient_id: str
    mg_uids: dict[tuple[str, str], str]  # (laterality, view) -> SOP Instance UID
    sr_uid: str
    seg_uid: str


@dataclass(frozen=True)
class Output:
    """What ``make_output`` wrote: the source release (``verify``'s src) and the exams."""

    release: Path
    studies: list[LoadedStudy]


@dataclass(frozen=True)
class _Converted:
    release: Path
    out: Path
    studies: list[LoadedStudy]
    rows: list[ManifestRow]


_cache: dict[tuple[str, int], _Converted] = {}
_seeds: dict[int, str] = {}  # seed -> prefix
_owners: dict[str, str] = {}  # study_id -> prefix
_scratch: Path | None = None


def set_scratch(folder: Path) -> None:
    """Where releases and full conversions go (conftest points it into pytest's tmp dirs)."""
    global _scratch
    _scratch = Path(folder)


def _scratch_root() -> Path:
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="vindr-pacs-testdata-"))
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


def make_output(out: Path, n_studies: int = 4, prefix: str = "pacs-test") -> Output:
    """Copy ``n_studies`` plain converted exams of ``prefix``'s release into ``out``.

    ``out`` gets ``images/``, ``sr/``, ``seg/`` of those exams only and their
    ``manifest.csv``; the release is shared by every call with the same arguments and must
    not be modified.
    """
    converted = _converted(prefix, n_studies)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for row in converted.rows:
        dest = row.file(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.file(converted.out), dest)
    write_manifest(out, converted.rows)
    return Output(converted.release, list(converted.studies))


def _converted(prefix: str, n_studies: int) -> _Converted:
    key = (prefix, n_studies)
    if key in _cache:
        return _cache[key]
    if n_studies < 1:
        raise ValueError("n_studies must be at least 1")
    seed = seed_of(prefix)
    assert _seeds.setdefault(seed, prefix) == prefix, (
        f"prefixes {prefix!r} and {_seeds[seed]!r} give the same seed {seed}"
    )
    count = _release_size(seed, n_studies)
    folder = _scratch_root() / f"{prefix}-{n_studies}"
    release, full = folder / "release", folder / "out"
    generate_release(release, studies=count, seed=seed, scale=SCALE)
    result = convert_release(release, full, workers=1)
    assert result.ok, [p for p in result.problems if p.severity == "error"]

    by_study: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in read_manifest(full):
        by_study[row.study_id].append(row)
    candidates = [s for s in (_plain(full, rows) for rows in by_study.values()) if s]
    picks = _pick(candidates, n_studies)
    assert len(picks) == n_studies, (
        f"{prefix}: only {len(candidates)} plain exam(s) among {count}, {n_studies} wanted"
    )
    if n_studies >= 2 and {s.split for s in candidates} == {"training", "test"}:
        assert {s.split for s in picks} == {"training", "test"}
    for study in picks:
        owner = _owners.setdefault(study.study_id, prefix)
        assert owner == prefix, f"exam {study.study_id} made by prefixes {owner!r} and {prefix!r}"
    rows = [row for study in picks for row in by_study[study.study_id]]
    converted = _Converted(_release_of(release, folder / "picked-release", picks), full,
                           picks, rows)
    _cache[key] = converted
    return converted


def _release_of(release: Path, dest: Path, picks: list[LoadedStudy]) -> Path:
    """The release as ``verify`` sees it for the picked exams only: its two annotation CSVs
    cut to those exams' rows (``verify`` proves that every exam of its ``src`` is in the
    PACS, so a ``src`` larger than the output would be a difference)."""
    ids = {study.study_id for study in picks}
    dest.mkdir(parents=True, exist_ok=True)
    for name in (BREAST_CSV, FINDING_CSV):
        lines = (release / name).read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [lines[0]] + [line for line in lines[1:]
                             if line.split(",", 1)[0].strip('"') in ids]
        (dest / name).write_text("".join(kept), encoding="utf-8")
    return dest


def _release_size(seed: int, n_studies: int) -> int:
    """How many exams to synthesize so that the plan holds enough plain ones.

    Only a guess from the synth's (cheap, scale-independent) plan; the picks are made
    from what the converter really wrote.
    """
    count = 12 + 4 * n_studies
    while count <= MAX_STUDIES:
        plain = [p for p in plan_studies(count, seed) if _plain_plan(p)]
        splits = {p.split for p in plain}
        if len(plain) >= n_studies and (n_studies < 2 or splits == {"training", "test"}):
            return count
        count += 8
    raise AssertionError(f"seed {seed}: fewer than {n_studies} plain exams in {MAX_STUDIES}")


def _plain_plan(plan: StudyPlan) -> bool:
    erratum = any(index == plan.index for index, _ in STUDY_ROLES)
    return (
        not erratum
        and plan.age is not None
        and len({(im.laterality, im.view) for im in plan.images}) == 4
        and len({im.series_id for im in plan.images}) == 1
        and sum(bool(im.boxes) for im in plan.images) == 1
    )


def _plain(out: Path, rows: list[ManifestRow]) -> LoadedStudy | None:
    """The facts of a converted exam, or None when it is not plain."""
    kinds = defaultdict(list)
    for row in rows:
        kinds[row.kind].append(row)
    if (len(kinds["MG"]), len(kinds["SR"]), len(kinds["SEG"])) != (4, 1, 1):
        return None
    headers = [pydicom.dcmread(r.file(out), stop_before_pixels=True) for r in kinds["MG"]]
    views = {(str(ds.ImageLaterality), str(ds.ViewPosition)): ds for ds in headers}
    if set(views) != set(VIEWS):
        return None
    if len({ds.SeriesInstanceUID for ds in headers}) != 1:
        return None
    if any(not str(ds.get("PatientAge", "")) for ds in headers):
        return None
    descriptions = {str(ds.StudyDescription) for ds in headers}
    patients = {str(ds.PatientID) for ds in headers}
    if len(descriptions) != 1 or len(patients) != 1:
        return None
    (description,), (patient_id,) = descriptions, patients
    assert description.startswith(SPLIT_PREFIX), description
    return LoadedStudy(
        study_id=rows[0].study_id,
        split=description.removeprefix(SPLIT_PREFIX),
        study_uid=rows[0].study_uid,
        patient_id=patient_id,
        mg_uids={view: str(ds.SOPInstanceUID) for view, ds in views.items()},
        sr_uid=kinds["SR"][0].sop_instance_uid,
        seg_uid=kinds["SEG"][0].sop_instance_uid,
    )


def _pick(candidates: list[LoadedStudy], n_studies: int) -> list[LoadedStudy]:
    """``n_studies`` of ``candidates``, alternating training and test while both last."""
    queues = {
        split: sorted((s for s in candidates if s.split == split), key=lambda s: s.study_id)
        for split in ("training", "test")
    }
    picks: list[LoadedStudy] = []
    while len(picks) < n_studies and any(queues.values()):
        for split in ("training", "test"):
            if queues[split] and len(picks) < n_studies:
                picks.append(queues[split].pop(0))
    return picks
