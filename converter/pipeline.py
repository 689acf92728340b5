"""Convert a whole release: images, then per exam an SR and per annotated image a SEG.

The unit of work is an exam (study): its SR needs all its images. Exams run in parallel
worker processes; each writes its objects atomically and, last, a small state file that
lists them. A re-run skips every exam whose state file and objects are complete and redoes
the others, so an interrupted conversion resumes where it stopped.

Output layout (all paths relative to OUT)::

    images/<study_id>/<image_id>.dcm   repaired MG For Presentation
    sr/<study_id>.dcm                  Comprehensive SR (TID 1500), one per exam
    seg/<study_id>/<image_id>.dcm      Segmentation, one per image with boxes
    manifest.csv                       one row per object written
    report.json                        summary and every problem found
    .state/<study_id>.json             resume bookkeeping
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from . import __version__, codes
from .annotations.seg import build_seg
from .annotations.sr import build_sr
from .errors import RepairError
from .fileio import atomic_write
from .manifest import ManifestRow, write_manifest
from .records import ImageRecord, Problem, ProgressCallback, StudyRecord
from .release import Release, read_release
from .repair import (
    changed_attributes,
    SourceImage,
    chest_wall_on_left,
    dropped_attributes,
    lenient_reading,
    patient_orientation,
    read_source,
    repair_dataset,
    sample_rows,
    standard_chest_wall_left,
    write_dataset,
    write_image,
)

REPORT = "report.json"
STATE_DIR = ".state"

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


def image_path(out: Path, image: ImageRecord) -> Path:
    return out / "images" / image.study_id / f"{image.image_id}.dcm"


def sr_path(out: Path, study_id: str) -> Path:
    return out / "sr" / f"{study_id}.dcm"


def seg_path(out: Path, image: ImageRecord) -> Path:
    return out / "seg" / image.study_id / f"{image.image_id}.dcm"


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


def _row(kind: str, image: ImageRecord | None, study_id: str, ds: Dataset, out: Path,
         dest: Path, sha256: str, source: str = "", source_sha256: str = "") -> ManifestRow:
    return ManifestRow(
        kind=kind,
        study_id=study_id,
        series_id=image.series_id if image and kind == "MG" else "",
        image_id=image.image_id if image else "",
        path=dest.relative_to(out).as_posix(),
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        sha256=sha256,
        source=source,
        source_sha256=source_sha256,
    )


def convert_image(image: ImageRecord, out: Path, series_number: int, instance_number: int,
                  problems: list[Problem]) -> tuple[Dataset, ManifestRow]:
    """Repair one image into OUT; raises RepairError/OSError when it cannot."""
    assert image.path is not None
    with lenient_reading():
        return _convert_image(image, out, series_number, instance_number, problems)


def _convert_image(image: ImageRecord, out: Path, series_number: int, instance_number: int,
                   problems: list[Problem]) -> tuple[Dataset, ManifestRow]:
    assert image.path is not None
    source = read_source(image.path)
    standard = standard_chest_wall_left(image.laterality)
    left = chest_wall_on_left(sample_rows(image.path, source), source.photometric)
    where = {"file": image.relpath, "study_id": image.study_id, "image_id": image.image_id}
    if left is None:
        left = standard
        problems.append(Problem("warning", "orientation-unclear",
                                "no breast edge found in the pixels: PatientOrientation "
                                "assumes the standard layout", **where))
    elif left != standard:
        problems.append(Problem("info", "flipped-layout",
                                f"chest wall on the {'left' if left else 'right'} edge for a "
                                f"{image.laterality} breast: PatientOrientation says so", **where))
    header = repair_dataset(source.header, image,
                            patient_orientation(image.laterality, image.view, left),
                            series_number, instance_number)
    _report_source(source, problems, where)
    for keyword, change in changed_attributes(source.header, header):
        same_side = keyword == "Laterality" and source.header.Laterality == image.laterality
        problems.append(Problem("info" if same_side else "warning", "attribute-changed",
                                change + (" (series laterality is not allowed beside "
                                          "ImageLaterality)" if same_side else ""), **where))
    dest = image_path(out, image)
    written = write_image(image.path, source, header, dest, image.sha256)
    if image.sha256 is None:
        problems.append(Problem("warning", "unverified", "no checksum to verify against",
                                **where))
    row = _row("MG", image, image.study_id, header, out, dest, written.sha256,
               image.relpath, written.source_sha256)
    return header, row


def _report_source(source: SourceImage, problems: list[Problem], where: dict[str, str]) -> None:
    """Report what of the source file does not reach the output: dropped elements (once
    each, by name and tag, never by value) and bytes after the Pixel Data."""
    for name, valued in dropped_attributes(source.header):
        problems.append(Problem("warning" if valued else "info", "attribute-dropped",
                                f"{name} dropped: not on the de-identification keep-list",
                                **where))
    if source.trailing_bytes:
        problems.append(Problem("warning", "trailing-bytes",
                                f"{source.trailing_bytes} byte(s) after the Pixel Data "
                                "element: not copied", **where))


def convert_study(study: StudyRecord, out: Path, options: ConvertOptions) -> StudyResult:
    """Convert one exam; never raises for bad input (problems are returned)."""
    result = StudyResult(study.study_id, images=len(study.images))
    numbers = numbering(study)
    headers: list[Dataset] = []
    for image in study.images:
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
    if result.failed_images:
        result.problems.append(Problem(
            "error", "study-incomplete",
            f"{result.failed_images} image(s) failed: SR and SEG of this exam not written",
            study_id=study.study_id))
        return result

    try:
        if options.write_sr:
            sr = build_sr(study, headers)
            dest = sr_path(out, study.study_id)
            result.rows.append(_row("SR", None, study.study_id, sr, out, dest,
                                    write_dataset(sr, dest)))
        if options.write_seg:
            for image, header in zip(study.images, headers):
                seg = build_seg(image, header)
                if seg is None:
                    continue
                dest = seg_path(out, image)
                result.rows.append(_row("SEG", image, study.study_id, seg, out, dest,
                                        write_dataset(seg, dest)))
    except Exception as exc:  # an encoder bug must not stop the other exams
        result.problems.append(Problem("error", "annotation-failed",
                                       f"{type(exc).__name__}: {exc}", study_id=study.study_id,
                                       detail=traceback.format_exc()))
        return result
    _write_state(out, study.study_id, options, result)
    return result


def _state_path(out: Path, study_id: str) -> Path:
    return out / STATE_DIR / f"{study_id}.json"


def _write_state(out: Path, study_id: str, options: ConvertOptions, result: StudyResult) -> None:
    state = {
        "version": __version__,
        "options": asdict(options),
        "rows": [asdict(row) for row in result.rows],
        "sizes": {row.path: (out / row.path).stat().st_size for row in result.rows},
        "problems": [asdict(p) for p in result.problems],
    }
    atomic_write(_state_path(out, study_id), json.dumps(state, indent=1, sort_keys=True),
                 fsync=False)


def completed(out: Path, study: StudyRecord, options: ConvertOptions) -> StudyResult | None:
    """The result of an earlier run of this exam when all its objects are in place."""
    path = _state_path(out, study.study_id)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("version") != __version__ or state.get("options") != asdict(options):
        return None
    for rel, size in state["sizes"].items():
        try:
            if (out / rel).stat().st_size != size:
                return None
        except OSError:
            return None
    rows = [ManifestRow(**row) for row in state["rows"]]
    if sum(row.kind == "MG" for row in rows) != len(study.images):
        return None
    problems = [Problem(**p) for p in state["problems"]]
    return StudyResult(study.study_id, rows, problems, images=len(study.images), skipped=True)


def _problems_for(release: Release, studies: list[StudyRecord]) -> list[Problem]:
    wanted = {study.study_id for study in studies}
    images = {image.image_id for study in studies for image in study.images}
    return [
        p for p in release.problems
        if (p.study_id in wanted) or (p.image_id in images)
        or (not p.study_id and not p.image_id)
    ]


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
    :class:`~converter.errors.ReleaseError` only when ``src`` is not a usable release; every
    problem with single images or rows is in the result (and ``report.json``).
    """
    src, out = Path(src), Path(out)
    release = read_release(src)
    studies = release.studies[:limit] if limit else release.studies
    out.mkdir(parents=True, exist_ok=True)
    result = ConversionResult(out=out, problems=_problems_for(release, studies))
    total, done = sum(len(s.images) for s in studies), 0
    if progress:
        progress(0, total)

    results: dict[str, StudyResult] = {}
    todo = []
    for study in studies:
        earlier = completed(out, study, options)
        if earlier is None:
            todo.append(study)
        else:
            results[study.study_id] = earlier
            done += earlier.images
    if progress and done:
        progress(done, total)

    for study_result in _run(todo, out, options, workers):
        results[study_result.study_id] = study_result
        done += study_result.images
        if progress:
            progress(done, total)

    rows: list[ManifestRow] = []
    for study in studies:
        study_result = results[study.study_id]
        rows.extend(study_result.rows)
        result.problems.extend(study_result.problems)
        result.studies += 1
        result.images += study_result.images
        result.failed_images += study_result.failed_images
        result.skipped_studies += study_result.skipped
    for row in rows:
        result.objects[row.kind] = result.objects.get(row.kind, 0) + 1
    write_manifest(out, rows)
    write_report(out, result)
    return result


def _run(studies: list[StudyRecord], out: Path, options: ConvertOptions,
         workers: int | None) -> Iterable[StudyResult]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(studies) <= 1:
        for study in studies:
            yield convert_study(study, out, options)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(convert_study, study, out, options): study for study in studies}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # a crashed worker: report the exam, go on
                study = futures[future]
                log.exception("worker failed on exam %s", study.study_id)
                yield StudyResult(study.study_id, images=len(study.images),
                                  failed_images=len(study.images),
                                  problems=[Problem("error", "worker-failed",
                                                    f"{type(exc).__name__}: {exc}",
                                                    study_id=study.study_id,
                                                    detail=_traceback(exc))])


def _traceback(exc: BaseException) -> str:
    """The full traceback, the worker's own included (ProcessPoolExecutor chains it)."""
    return "".join(traceback.format_exception(exc))


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
    return atomic_write(out / REPORT, json.dumps(report, indent=1) + "\n")
