"""``evaluate``: the reference (ground-truth SRs) and a model's SRs of a split into metrics.

Input is what the PACS serves per exam (:class:`ExamObjects`: its MG images and its SR
objects, fetched by :mod:`server.transfer.evaluate`); :func:`collect` reads them into
:mod:`.metrics` records, :func:`evaluate_exams` computes every figure into an
:class:`Evaluation`, whose :meth:`Evaluation.metrics` is ``metrics.json``.

- images: every MG image of the split's exams as the PACS holds them (normal ones included);
- lesions: every distinct box of the ground-truth SR (the box as the SR stores it: clipped
  to the image); rows with the same box are one lesion carrying all their labels;
- breasts: (study, laterality) with the ground-truth breast BI-RADS and density;
- the model: its SR in the exam (named by :func:`converter.annotations.model_sr.model_identity`);
  a box on an image the PACS does not hold for the exam, and anything its SR holds that
  cannot be read, is reported in ``problems``, never silently dropped;
- ``ignore_unboxed_suspicious``: images without a box on BI-RADS 3-5 breasts (the lesion was
  boxed on the other view only) are left out of the false positives and of the image count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from .. import codes
from ..annotations.model_sr import (
    ModelReport,
    Node,
    read_model_sr,
    reference_boxes,
    reference_breasts,
    tree,
)
from ..errors import PredictionsError
from ..manifest import read_manifest
from ..naming import is_ground_truth_sr, split_of, uid_to_hex
from .metrics import (
    RECALL_BIRADS,
    BreastMetrics,
    BreastScore,
    DensityMetrics,
    Detection,
    FrocCurve,
    Lesion,
    Matching,
    MatchRule,
    average_precision,
    birads_confusion,
    breast_metrics,
    density_metrics,
    froc,
    match_detections,
    per_category_ap,
    sensitivity_at,
)

SPLIT_CHOICES = ("test", "training", "all")


@dataclass
class ExamObjects:
    """What the PACS serves for one exam: its MG images (UID -> laterality, '' when not
    known: the reference SR's breast items then tell) and its SR objects."""

    study_uid: str
    description: str
    images: dict[str, str]
    srs: list[Node] = field(default_factory=list)  # converter.annotations.model_sr.tree


@dataclass
class Inputs:
    """The split read into metric records, with everything worth reporting."""

    split: str
    images: list[str] = field(default_factory=list)
    lesions: list[Lesion] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    breasts: list[BreastScore] = field(default_factory=list)
    unboxed_suspicious: list[str] = field(default_factory=list)
    forms: set[str] = field(default_factory=set)
    labelled: bool = False
    exams: int = 0
    exams_with_model: int = 0
    problems: list[str] = field(default_factory=list)


def exams_from_folder(out: Path) -> list[ExamObjects]:
    """The exams of a converted folder as :class:`ExamObjects` (its MG headers and every SR
    its manifest lists): ``evaluate`` without a PACS, for tests and benchmarks."""
    rows = read_manifest(out)
    exams: dict[str, ExamObjects] = {}
    for row in rows:
        if row.kind not in ("MG", "SR"):
            continue
        ds = pydicom.dcmread(row.file(out), stop_before_pixels=row.kind == "MG")
        exam = exams.setdefault(row.study_uid, ExamObjects(
            row.study_uid, str(ds.get("StudyDescription", "") or ""), {}))
        if row.kind == "MG":
            exam.images[str(ds.SOPInstanceUID)] = str(ds.ImageLaterality)
        else:
            exam.srs.append(tree(ds))
    return list(exams.values())


def model_reports(exams: Iterable[ExamObjects]) -> dict[int, ModelReport]:
    """Every SR of the exams that is not the reference, read once (keyed by ``id`` of the
    dataset)."""
    return {id(ds): read_model_sr(ds) for exam in exams for ds in exam.srs
            if not is_ground_truth_sr(str(ds.get("SOPInstanceUID", "")), exam.study_uid)}


def model_versions(reports: Iterable[ModelReport]) -> dict[str, set[str]]:
    """Every model found among the reports: name -> versions."""
    found: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        found[report.name].add(report.version)
    return dict(found)


def choose_version(found: dict[str, set[str]], name: str, version: str | None) -> str:
    """The version to evaluate; PredictionsError when the model or the version is not there,
    or when the model has several and none was asked for."""
    if name not in found:
        models = ", ".join(f"{n} ({', '.join(sorted(v))})" for n, v in sorted(found.items()))
        raise PredictionsError(f"no SR of model {name!r} in the PACS for this split (models "
                               f"found: {models or 'none'})")
    versions = found[name]
    if version is not None:
        if version not in versions:
            raise PredictionsError(f"model {name!r} has no version {version!r} in the PACS "
                                   f"(versions: {', '.join(sorted(versions))})")
        return version
    if len(versions) > 1:
        raise PredictionsError(f"model {name!r} has several versions in the PACS "
                               f"({', '.join(sorted(versions))}): choose one with --version")
    return next(iter(versions))


def collect(exams: Iterable[ExamObjects], split: str, name: str, version: str,
            reports: dict[int, ModelReport] | None = None) -> Inputs:
    """Read the reference and model ``name`` ``version`` of every exam into metric records
    (``reports``: :func:`model_reports` of the exams, when already read)."""
    exams = list(exams)
    if reports is None:
        reports = model_reports(exams)
    inputs = Inputs(split)
    for exam in exams:
        exam_split = split_of(exam.description)
        if split != "all" and exam_split != split:
            continue
        inputs.exams += 1
        try:
            study_id = uid_to_hex(exam.study_uid)
        except ValueError:
            study_id = exam.study_uid
        truth = [ds for ds in exam.srs
                 if is_ground_truth_sr(str(ds.get("SOPInstanceUID", "")), exam.study_uid)]
        models = [reports[id(ds)] for ds in exam.srs if id(ds) in reports
                  and (reports[id(ds)].name, reports[id(ds)].version) == (name, version)]
        if not truth:
            inputs.problems.append(f"study {study_id}: no ground-truth SR in the PACS, exam "
                                   "left out")
            continue
        findings, problems = reference_boxes(truth[0])
        reference_list = reference_breasts(truth[0])
        inputs.problems += [f"study {study_id}: {text}" for text in problems]
        images = sorted(exam.images)
        inputs.images += images
        boxed: set[str] = set()
        grouped: dict[tuple[str, tuple[float, ...]], set[str]] = {}
        for image_uid, box, labels in findings:
            grouped.setdefault((image_uid, box), set()).update(labels)
        for (image_uid, box), labels in grouped.items():
            if image_uid not in exam.images:
                inputs.problems.append(f"study {study_id}: a reference box is on image "
                                       f"{image_uid}, not in the PACS; left out")
                continue
            inputs.lesions.append(Lesion(image_uid, box, tuple(sorted(labels))))  # type: ignore[arg-type]
            boxed.add(image_uid)
        by_side = {b.laterality: b for b in reference_list if b.laterality}
        side = {uid: b.laterality for b in reference_list for uid in b.images}
        for uid in images:
            breast = by_side.get(exam.images[uid] or side.get(uid, ""))
            if uid not in boxed and breast is not None and breast.birads in RECALL_BIRADS:
                inputs.unboxed_suspicious.append(uid)
        predicted: dict[str, object] = {}
        if len(models) > 1:
            inputs.problems.append(f"study {study_id}: {len(models)} SRs of {name} {version}; "
                                   "all their boxes are used")
        for report in models:
            inputs.forms.add(report.form)
            inputs.problems += [f"study {study_id}: {text}" for text in report.problems]
            _add_detections(inputs, report, exam, study_id)
            for breast in report.breasts:
                predicted[breast.laterality or "?"] = breast
        inputs.exams_with_model += bool(models)
        for laterality in sorted(by_side, key=lambda lat: lat != "R"):
            ref = by_side[laterality]
            if ref.birads is None:
                inputs.problems.append(f"study {study_id}: breast {laterality} has no BI-RADS "
                                       "in the reference; left out")
                continue
            model = predicted.get(laterality)
            inputs.breasts.append(BreastScore(
                study_id, laterality, ref.birads, getattr(model, "score", None), ref.density,
                getattr(model, "birads", None), getattr(model, "density", None)))
    return inputs


def _add_detections(inputs: Inputs, report: ModelReport, exam: ExamObjects,
                    study_id: str) -> None:
    missing: dict[str, int] = defaultdict(int)
    for box in report.boxes:
        if box.image_uid not in exam.images:
            missing[box.image_uid] += 1
            continue
        inputs.detections.append(Detection(box.image_uid, box.box, float(box.score or 0.0),
                                           box.label))
        inputs.labelled |= box.label is not None
    for uid, count in sorted(missing.items()):
        inputs.problems.append(f"study {study_id}: {count} box(es) of model SR "
                               f"{report.sop_instance_uid} reference image {uid}, not in the "
                               "PACS for this exam; left out")


@dataclass
class Evaluation:
    """Every figure of one evaluation."""

    name: str
    version: str
    inputs: Inputs
    rule: MatchRule
    ignore_unboxed_suspicious: bool
    matching: Matching
    curve: FrocCurve
    at: dict[str, float]
    ap50: float | None
    ap_per_category: dict[str, float | None]
    breast: BreastMetrics
    density: DensityMetrics | None
    confusion: list[list[int]] | None

    def metrics(self) -> dict:
        """``metrics.json``: the keys the README lists."""
        curve, breast, matching = self.curve, self.breast, self.matching
        result: dict = {
            "model": {"name": self.name, "version": self.version,
                      "forms": sorted(self.inputs.forms)},
            "split": self.inputs.split,
            "exams": self.inputs.exams,
            "exams_with_model": self.inputs.exams_with_model,
            "images": len(self.inputs.images),
            "lesions": len(self.inputs.lesions),
            "match": self.rule,
            "ignore_unboxed_suspicious": self.ignore_unboxed_suspicious,
            "unboxed_suspicious_images": len(self.inputs.unboxed_suspicious),
            "lesion": {
                "detections": len(self.inputs.detections),
                "true_positives": matching.true_positives,
                "false_positives": matching.false_positives,
                "images_counted": matching.images,
                "sensitivity_at": self.at,
                "ap50": self.ap50,
                "froc": {
                    "fp_per_image": list(curve.fp_per_image),
                    "sensitivity": list(curve.sensitivity),
                    "thresholds": [None, *curve.thresholds[1:]],
                },
            },
            "breast": {
                "auc": breast.auc,
                "auc_ci": list(breast.auc_ci) if breast.auc_ci else None,
                "positives": breast.positives,
                "negatives": breast.negatives,
                "threshold": breast.threshold,
                "threshold_rule": breast.threshold_rule,
                "sensitivity": breast.sensitivity,
                "specificity": breast.specificity,
                "unscored": [f"{s} {lat}" for s, lat in breast.unscored],
            },
            "problems": self.inputs.problems,
        }
        if self.inputs.labelled:
            result["lesion"]["ap50_per_category"] = self.ap_per_category
        if self.density is not None:
            result["density"] = {"breasts": self.density.breasts,
                                 "accuracy": self.density.accuracy,
                                 "kappa_quadratic": self.density.kappa_quadratic}
        if self.confusion is not None:
            result["birads"] = {"labels": [1, 2, 3, 4, 5], "confusion": self.confusion}
        return result


def evaluate_inputs(
    inputs: Inputs,
    name: str,
    version: str,
    rule: MatchRule = "iou",
    ignore_unboxed_suspicious: bool = False,
    threshold: float | None = None,
    seed: int = 0,
) -> Evaluation:
    """Every figure of :mod:`.metrics` over ``inputs``."""
    ignored = inputs.unboxed_suspicious if ignore_unboxed_suspicious else []
    matching = match_detections(inputs.images, inputs.lesions, inputs.detections, rule, ignored)
    curve = froc(matching)
    categories = [label for label in codes.FINDING_LABELS
                  if any(label in lesion.labels for lesion in inputs.lesions)
                  or any(d.label == label for d in inputs.detections)]
    per_category = (per_category_ap(inputs.images, inputs.lesions, inputs.detections,
                                    categories, rule, ignored) if inputs.labelled else {})
    return Evaluation(
        name, version, inputs, rule, ignore_unboxed_suspicious, matching, curve,
        sensitivity_at(curve), average_precision(matching), per_category,
        breast_metrics(inputs.breasts, threshold=threshold, seed=seed),
        density_metrics(inputs.breasts), birads_confusion(inputs.breasts))


def evaluate_exams(
    exams: Sequence[ExamObjects],
    name: str,
    version: str | None = None,
    split: str = "test",
    rule: MatchRule = "iou",
    ignore_unboxed_suspicious: bool = False,
    threshold: float | None = None,
    seed: int = 0,
) -> Evaluation:
    """:func:`collect` then :func:`evaluate_inputs`; PredictionsError when the model is absent."""
    if split not in SPLIT_CHOICES:
        raise PredictionsError(f"split {split!r}: one of {', '.join(SPLIT_CHOICES)}")
    in_split = sorted((e for e in exams if split == "all" or split_of(e.description) == split),
                      key=lambda e: e.study_uid)  # same figures whatever the fetch order
    reports = model_reports(in_split)
    chosen = choose_version(model_versions(reports.values()), name, version)
    inputs = collect(in_split, split, name, chosen, reports)
    return evaluate_inputs(inputs, name, chosen, rule, ignore_unboxed_suspicious, threshold,
                           seed)
