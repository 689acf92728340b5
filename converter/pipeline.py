"""Convert a whole release: images, then per exam an SR and per annotated image a SEG.

The unit of work is an exam (study): its SR needs all its images. Exams run in parallel
worker processes (:mod:`.workers`); each writes its objects atomically and, last, a small
state file that lists them. A re-run skips every exam whose state file and objects are
complete and redoes the others, so an interrupted conversion resumes where it stopped.

Where things go in OUT, its lock, state files and pruning: :mod:`.output`. One image and
what it reports: :mod:`.image`. The SR and SEG writers: :mod:`.annotations`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from . import __version__, codes
from .annotations.seg import build_seg
from .annotations.sr import build_sr
from .errors import OutputError, RepairError
from .fileio import atomic_write
from .image import convert_image, manifest_row
from .manifest import MANIFEST_NAME, ManifestRow, kept_rows, write_manifest
from .output import (
    FILE_MODE,
    REPORT,
    clear_state,
    output_lock,
    prune_gone,
    prune_study,
    read_state,
    remove_partials,
    seg_path,
    sr_path,
    write_object,
    write_state,
)
from .records import Problem, ProgressCallback, StudyRecord
from .release import Release, read_release
from .repair import dataset_bytes
from .workers import exit_if_orphaned, format_traceback, run_parallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertOptions:
    """What to write besides the images."""

    write_sr: bool = True
    write_seg: bool = True


@dataclass
class StudyResult:
    """Outcome of one exam."""

    study_id: str
    rows: list[ManifestRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    images: int = 0
    failed_images: int = 0
    skipped: bool = False  # complete from an earlier run


@dataclass
class ConversionResult:
    """Outcome of a whole run."""

    out: Path
    studies: int = 0
    images: int = 0
    failed_images: int = 0
    skipped_studies: int = 0
    objects: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def ok(self) -> bool:
        """True only when every input converted and nothing is in error."""
        return self.errors == 0 and self.failed_images == 0


def numbering(study: StudyRecord) -> dict[str, tuple[int, int]]:
    """(SeriesNumber, InstanceNumber) per image id, deterministic.

    Series are numbered in order of their ids; images within a series in the usual
    hanging order: CC before MLO, right before left.
    """
    series = {sid: n for n, sid in enumerate(sorted({i.series_id for i in study.images}), 1)}
    ordered = sorted(
        study.images,
        key=lambda i: (series[i.series_id], codes.VIEWS.index(i.view), i.laterality != "R",
                       i.image_id),
    )
    counters: dict[str, int] = {}
    result = {}
    for image in ordered:
        counters[image.series_id] = counters.get(image.series_id, 0) + 1
        result[image.image_id] = (series[image.series_id], counters[image.series_id])
    return result


def convert_study(study: StudyRecord, out: Path, options: ConvertOptions,
                  fingerprint: str | None = None) -> StudyResult:
    """Convert one exam; never raises for bad input (problems are returned).

    The exam's files that this run does not produce (an image dropped from the CSV, the
    SEG of an image whose boxes were removed, the SR of an exam with a failed image) are
    removed. The state file that marks the exam complete is written last, and only when
    ``fingerprint`` is given and nothing failed; see :func:`exam_fingerprint`.
    """
    clear_state(out, study.study_id)
    result = StudyResult(study.study_id, images=len(study.images))
    headers = _convert_images(study, out, result)
    if result.failed_images:
        result.problems.append(Problem(
            "error", "study-incomplete",
            f"{result.failed_images} image(s) failed: SR and SEG of this exam not written",
            study_id=study.study_id))
    else:
        _write_annotations(study, headers, out, options, result)
    prune_study(out, study.study_id, result.rows)
    if fingerprint is not None and not any(p.severity == "error" for p in result.problems):
        write_state(out, study.study_id, fingerprint, result.rows, result.problems)
    return result


def _convert_images(study: StudyRecord, out: Path, result: StudyResult) -> list[Dataset]:
    """Repair every image of the exam into OUT; failures go to ``result``."""
    numbers = numbering(study)
    headers: list[Dataset] = []
    for image in study.images:
        exit_if_orphaned()
        try:
            header, row = convert_image(image, out, *numbers[image.image_id], result.problems)
        except (RepairError, OSError) as exc:
            result.failed_images += 1
            result.problems.append(Problem("error", "image-failed", str(exc),
                                           file=image.relpath, study_id=study.study_id,
                                           image_id=image.image_id))
            continue
        headers.append(header)
        result.rows.append(row)
    return headers


def _write_annotations(study: StudyRecord, headers: list[Dataset], out: Path,
                       options: ConvertOptions, result: StudyResult) -> None:
    """The exam's SR and SEGs; an encoder failure is the exam's error, not the run's."""
    try:
        if options.write_sr:
            sr = build_sr(study, headers)
            dest = sr_path(out, study.study_id)
            result.rows.append(manifest_row("SR", None, study.study_id, sr, out, dest,
                                            write_object(dataset_bytes(sr), dest)))
        if options.write_seg:
            for image, header in zip(study.images, headers):
                seg = build_seg(image, header)
                if seg is None:
                    continue
                dest = seg_path(out, image)
                result.rows.append(manifest_row("SEG", image, study.study_id, seg, out, dest,
                                                write_object(dataset_bytes(seg), dest)))
    except Exception as exc:  # an encoder bug must not stop the other exams
        result.problems.append(Problem("error", "annotation-failed",
                                       f"{type(exc).__name__}: {exc}", study_id=study.study_id,
                                       detail=traceback.format_exc()))


# --- fingerprints and earlier runs ------------------------------------------------------------


def exam_fingerprint(study: StudyRecord, problems: list[Problem],
                     options: ConvertOptions) -> str:
    """SHA-256 of everything an exam's output depends on.

    The converter version and options, the exam's parsed records (images, their CSV rows,
    findings, metadata), the release problems about the exam, and per image the digest
    SHA256SUMS.txt expects or, for an unlisted file, its size and mtime. CSV line numbers
    are left out: no object depends on them (the report takes them from this run's
    reading), so an edit elsewhere in a CSV does not redo every later exam.
    """
    images = []
    for image in study.images:
        record = asdict(image)
        record["path"] = image.relpath
        record["source"] = image.sha256 or _file_stamp(image.path)
        images.append(record)
    payload = {"version": __version__, "options": asdict(options), "study": study.study_id,
               "split": study.split, "images": images, "problems": [asdict(p) for p in problems]}
    text = json.dumps(_without_rows(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _without_rows(value: object) -> object:
    """``value`` with every ``row`` key (a CSV line number) removed, recursively."""
    if isinstance(value, dict):
        return {k: _without_rows(v) for k, v in value.items() if k != "row"}
    if isinstance(value, (list, tuple)):
        return [_without_rows(v) for v in value]
    return value


def _file_stamp(path: Path | None) -> list[int] | None:
    try:
        stat = path.stat() if path else None
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns] if stat else None


def completed(out: Path, study: StudyRecord, fingerprint: str) -> StudyResult | None:
    """The result of an earlier run of this exam when its input is unchanged (same
    fingerprint) and all its objects are in place; None otherwise."""
    state = read_state(out, study.study_id, fingerprint)
    if state is None:
        return None
    rows, problems = state
    if sum(row.kind == "MG" for row in rows) != len(study.images):
        return None
    return StudyResult(study.study_id, rows, problems, images=len(study.images), skipped=True)


def _exam_problems(release: Release) -> dict[str, list[Problem]]:
    """Release problems by the exam they concern (by study id, or by image id)."""
    study_of = {image.image_id: image.study_id for image in release.images}
    by_exam: dict[str, list[Problem]] = defaultdict(list)
    for problem in release.problems:
        study_id = problem.study_id or study_of.get(problem.image_id, "")
        if study_id:
            by_exam[study_id].append(problem)
    return by_exam


def _problems_for(release: Release, studies: list[StudyRecord]) -> list[Problem]:
    wanted = {study.study_id for study in studies}
    images = {image.image_id for study in studies for image in study.images}
    return [
        p for p in release.problems
        if (p.study_id in wanted) or (p.image_id in images)
        or (not p.study_id and not p.image_id)
    ]


# --- the run: lock, workers, manifest, report ------------------------------------------------


def convert_release(
    src: Path,
    out: Path,
    workers: int | None = None,
    limit: int | None = None,
    options: ConvertOptions = ConvertOptions(),
    progress: ProgressCallback | None = None,
) -> ConversionResult:
    """Convert the release at ``src`` into ``out``; see the module docstring.

    ``limit`` converts only the first N exams (in CSV order). ``progress(done, total)`` is
    called with the number of images done so far. Raises
    :class:`~converter.errors.ReleaseError` only when ``src`` is not a usable release and
    :class:`~converter.errors.OutputError` when ``out`` cannot be used (another run holds
    it, not writable, disk full); every problem with single images or rows is in the
    result (and ``report.json``). With more than one worker, a script calling this must do
    so under ``if __name__ == "__main__":`` (the workers' fork server imports it, see
    :mod:`.workers`).
    """
    src, out = Path(src), Path(out)
    release = read_release(src)
    studies = release.studies[:limit] if limit else release.studies
    with output_lock(out):
        remove_partials(out)
        prune_gone(out, {study.study_id for study in release.studies})
        result = ConversionResult(out=out, problems=_problems_for(release, studies))
        results = _convert_studies(release, studies, out, options, workers, progress)
        _collect(studies, results, result)
        rows = [row for s in studies for row in results[s.study_id].rows]
        # a model's SRs (`predictions import`) stay listed while their exams are
        rows += kept_rows(out, f"{codes.MODEL_SR_DIR}/", {s.study_id for s in studies})
        _write_outputs(out, result, rows)
    return result


def _convert_studies(release: Release, studies: list[StudyRecord], out: Path,
                     options: ConvertOptions, workers: int | None,
                     progress: ProgressCallback | None) -> dict[str, StudyResult]:
    """Each exam's result: resumed when its fingerprint and files match, else converted."""
    exam_problems = _exam_problems(release)
    total, done = sum(len(s.images) for s in studies), 0
    if progress:
        progress(0, total)
    results: dict[str, StudyResult] = {}
    todo: list[tuple[StudyRecord, str | None]] = []
    for study in studies:
        problems = exam_problems.get(study.study_id, [])
        fingerprint = exam_fingerprint(study, problems, options)
        earlier = completed(out, study, fingerprint)
        if earlier is not None:
            results[study.study_id] = earlier
            done += earlier.images
            continue
        failed = any(p.severity == "error" for p in problems)
        todo.append((study, None if failed else fingerprint))
    if progress and done:
        progress(done, total)
    for study_result in _run(todo, out, options, workers):
        results[study_result.study_id] = study_result
        done += study_result.images
        if progress:
            progress(done, total)
    return results


def _collect(studies: list[StudyRecord], results: dict[str, StudyResult],
             result: ConversionResult) -> None:
    """Add the exams' figures and problems to ``result``, in CSV order."""
    for study in studies:
        study_result = results[study.study_id]
        result.problems.extend(study_result.problems)
        result.studies += 1
        result.images += study_result.images
        result.failed_images += study_result.failed_images
        result.skipped_studies += study_result.skipped
        for row in study_result.rows:
            result.objects[row.kind] = result.objects.get(row.kind, 0) + 1


def _write_outputs(out: Path, result: ConversionResult, rows: list[ManifestRow]) -> None:
    """manifest.csv and report.json; OutputError (not a traceback) when they cannot be."""
    for name, write in ((MANIFEST_NAME, lambda: write_manifest(out, rows, mode=FILE_MODE)),
                        (REPORT, lambda: write_report(out, result))):
        try:
            write()
        except OSError as exc:
            raise OutputError(f"could not write {out / name}: {exc.strerror or exc}; the "
                              "converted exams are kept: free space or fix the folder, then "
                              "re-run to resume") from None


def _run(todo: list[tuple[StudyRecord, str | None]], out: Path, options: ConvertOptions,
         workers: int | None) -> Iterable[StudyResult]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(todo) <= 1:
        for study, fingerprint in todo:
            yield convert_study(study, out, options, fingerprint)
        return
    jobs = [(study, (study, out, options, fingerprint)) for study, fingerprint in todo]
    yield from run_parallel(convert_study, jobs, workers, _crashed)


def _crashed(study: StudyRecord, exc: BaseException) -> StudyResult:
    """The result of an exam whose worker raised or died."""
    log.error("worker failed on exam %s: %s", study.study_id, format_traceback(exc))
    return StudyResult(study.study_id, images=len(study.images),
                       failed_images=len(study.images),
                       problems=[Problem("error", "worker-failed", f"{type(exc).__name__}: {exc}",
                                         study_id=study.study_id, detail=format_traceback(exc))])


def write_report(out: Path, result: ConversionResult) -> Path:
    """OUT/report.json: the run's figures and every problem, machine-readable."""
    counts: dict[str, int] = {}
    for problem in result.problems:
        counts[problem.severity] = counts.get(problem.severity, 0) + 1
    report = {
        "summary": {
            "studies": result.studies,
            "images": result.images,
            "failed_images": result.failed_images,
            "skipped_studies": result.skipped_studies,
            "objects": dict(sorted(result.objects.items())),
            "problems": dict(sorted(counts.items())),
            "ok": result.ok,
        },
        "problems": [asdict(p) for p in result.problems],
    }
    return atomic_write(out / REPORT, json.dumps(report, indent=1) + "\n", mode=FILE_MODE)
