"""The scores of a model against the reference, as pure functions of small records.

No I/O, no DICOM: :mod:`.evaluate` turns SRs into :class:`Lesion`, :class:`Detection`
and :class:`BreastScore` records, these functions compute the figures.

Definitions (the README and the report state the same):

- **matching** (:func:`match_detections`): per image, detections in descending score
  (ties in input order); a detection is a true positive when its best IoU with a
  not-yet-matched lesion of the same image is >= 0.5 (that lesion is then matched), else a
  false positive.  With ``rule="center"`` a detection matches when its centre lies inside a
  not-yet-matched lesion box (the one of largest IoU among them).  Detections on
  ``ignored`` images are neither true nor false positives (``--ignore-unboxed-suspicious``).
- **FROC** (:func:`froc`): sensitivity (matched lesions / lesions) against mean false
  positives per image (over all images), one point per distinct score threshold;
  :func:`sensitivity_at` is the largest sensitivity whose false positives per image do
  not exceed ``t``.
- **AP** (:func:`average_precision`): COCO's 101-point interpolated precision at IoU 0.5.
- **breast level** (:func:`breast_metrics`): AUC of the score (positive = BI-RADS 3-5), a
  seeded percentile bootstrap 95 % interval, sensitivity and specificity at a threshold
  (score >= threshold is a recall) or at the Youden point.
- **density** (:func:`density_metrics`): accuracy and quadratically weighted kappa over A-D;
  **BI-RADS** (:func:`birads_confusion`): the 5 x 5 confusion matrix.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

BoxValues = tuple[float, float, float, float]
MatchRule = Literal["iou", "center"]

IOU_THRESHOLD = 0.5
FROC_TARGETS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points
DENSITY_CATEGORIES = ("A", "B", "C", "D")
BIRADS_CATEGORIES = (1, 2, 3, 4, 5)
RECALL_BIRADS = frozenset({3, 4, 5})  # the VinDr paper's screening mapping: recall = 3, 4, 5
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Lesion:
    """One reference box (a box row of the release, clipped to the image as the SR stores it)."""

    image: str  # SOP Instance UID of the MG image
    box: BoxValues  # xmin, ymin, xmax, ymax (pixels)
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Detection:
    """One box of the model, with its score in [0, 1] and an optional finding label."""

    image: str
    box: BoxValues
    score: float
    label: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A detection after matching: true positive, false positive or ignored."""

    detection: Detection
    true_positive: bool
    ignored: bool = False
    lesion: int | None = None  # index of the lesion it matched


@dataclass
class Matching:
    """What :func:`match_detections` found: outcomes in input order and the counts."""

    outcomes: list[Outcome]
    lesions: int
    images: int

    @property
    def true_positives(self) -> int:
        return sum(o.true_positive for o in self.outcomes)

    @property
    def false_positives(self) -> int:
        return sum(not o.true_positive and not o.ignored for o in self.outcomes)


def iou(a: BoxValues, b: BoxValues) -> float:
    """Intersection over union of two boxes (COCO's rule: area = width x height)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_inside(detection: BoxValues, lesion: BoxValues) -> bool:
    cx, cy = (detection[0] + detection[2]) / 2, (detection[1] + detection[3]) / 2
    return lesion[0] <= cx <= lesion[2] and lesion[1] <= cy <= lesion[3]


def match_detections(
    images: Iterable[str],
    lesions: Sequence[Lesion],
    detections: Sequence[Detection],
    rule: MatchRule = "iou",
    ignored: Iterable[str] = (),
) -> Matching:
    """Match detections to lesions image by image (greedy, descending score).

    Parameters
    ----------
    images
        Every image of the evaluation (normal ones included): the FROC's denominator.
        Detections on other images are ignored.
    lesions, detections
        The reference boxes and the model's boxes.
    rule
        ``"iou"`` (IoU >= 0.5) or ``"center"`` (detection centre inside the lesion box).
    ignored
        Images whose unmatched detections are not false positives (and that are left out
        of the image count).

    Returns
    -------
    Matching
        One :class:`Outcome` per detection, in the order of ``detections``.
    """
    if rule not in ("iou", "center"):
        raise ValueError(f"unknown matching rule {rule!r} (iou or center)")
    image_set = set(images)
    ignored_set = set(ignored) & image_set
    by_image: dict[str, list[int]] = defaultdict(list)
    for index, lesion in enumerate(lesions):
        by_image[lesion.image].append(index)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    matched: set[int] = set()
    outcomes: dict[int, Outcome] = {}
    for i in order:
        detection = detections[i]
        if detection.image not in image_set:
            outcomes[i] = Outcome(detection, False, ignored=True)
            continue
        best, best_iou = None, -1.0
        for j in by_image.get(detection.image, ()):
            if j in matched:
                continue
            overlap = iou(detection.box, lesions[j].box)
            hit = (overlap >= IOU_THRESHOLD if rule == "iou"
                   else _centre_inside(detection.box, lesions[j].box))
            if hit and overlap > best_iou:
                best, best_iou = j, overlap
        if best is not None:
            matched.add(best)
            outcomes[i] = Outcome(detection, True, lesion=best)
        else:
            outcomes[i] = Outcome(detection, False, ignored=detection.image in ignored_set)
    counted = [lesion for lesion in lesions if lesion.image in image_set]
    return Matching([outcomes[i] for i in range(len(detections))], len(counted),
                    len(image_set - ignored_set))


# --- FROC ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrocCurve:
    """FROC points, one per distinct score threshold, from (0, 0) up."""

    thresholds: tuple[float, ...]  # score >= threshold; inf for the first point
    fp_per_image: tuple[float, ...]
    sensitivity: tuple[float, ...]


def froc(matching: Matching) -> FrocCurve:
    """The FROC curve of a matching (sensitivity vs mean false positives per image)."""
    counted = sorted((o for o in matching.outcomes if not o.ignored),
                     key=lambda o: -o.detection.score)
    thresholds, fppi, sens = [float("inf")], [0.0], [0.0]
    tp = fp = 0
    lesions, images = max(matching.lesions, 0), max(matching.images, 1)
    for k, outcome in enumerate(counted):
        tp += outcome.true_positive
        fp += not outcome.true_positive
        last = k + 1 == len(counted) or counted[k + 1].detection.score != outcome.detection.score
        if last:
            thresholds.append(outcome.detection.score)
            fppi.append(fp / images)
            sens.append(tp / lesions if lesions else 0.0)
    return FrocCurve(tuple(thresholds), tuple(fppi), tuple(sens))


def sensitivity_at(curve: FrocCurve, targets: Sequence[float] = FROC_TARGETS) -> dict[str, float]:
    """Largest sensitivity at <= t false positives per image, keyed ``"0.125"``, ``"1"``..."""
    result = {}
    for t in targets:
        best = max(s for f, s in zip(curve.fp_per_image, curve.sensitivity) if f <= t)
        result[format_target(t)] = best
    return result


def format_target(t: float) -> str:
    """``0.125`` -> ``"0.125"``, ``1.0`` -> ``"1"`` (metrics.json's keys)."""
    return f"{t:g}"


# --- AP ----------------------------------------------------------------------------------------


def average_precision(matching: Matching) -> float | None:
    """COCO's 101-point interpolated AP of a matching; None without lesions.

    As ``pycocotools.cocoeval.COCOeval.accumulate``: detections sorted by descending score
    (stable), precision made monotone from the right, sampled at the first detection whose
    recall reaches each of the 101 recall thresholds (0 beyond the last recall).
    """
    if matching.lesions == 0:
        return None
    counted = [o for o in matching.outcomes if not o.ignored]
    scores = np.array([o.detection.score for o in counted], dtype=float)
    order = np.argsort(-scores, kind="mergesort")
    tps = np.array([counted[i].true_positive for i in order], dtype=float)
    tp = np.cumsum(tps)
    fp = np.cumsum(1.0 - tps)
    recall = tp / matching.lesions
    precision = tp / np.maximum(tp + fp, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    indices = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    sampled = np.array([precision[i] if i < len(precision) else 0.0 for i in indices])
    return float(sampled.mean())


def per_category_ap(
    images: Iterable[str],
    lesions: Sequence[Lesion],
    detections: Sequence[Detection],
    categories: Iterable[str],
    rule: MatchRule = "iou",
    ignored: Iterable[str] = (),
) -> dict[str, float | None]:
    """AP per finding category: lesions carrying the label against detections labelled so.

    A multi-label lesion is a reference box of each of its labels.
    """
    images, ignored = list(images), list(ignored)
    result = {}
    for category in categories:
        matching = match_detections(
            images, [lesion for lesion in lesions if category in lesion.labels],
            [d for d in detections if d.label == category], rule, ignored)
        result[category] = average_precision(matching)
    return result


# --- breast level -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BreastScore:
    """One breast of the evaluation: truth from the reference, score and classes from the model."""

    study: str
    laterality: str
    birads: int  # reference breast BI-RADS, 1..5
    score: float | None  # None: the model gave none (counted as 0)
    density: str | None = None  # reference density A..D
    predicted_birads: int | None = None
    predicted_density: str | None = None

    @property
    def positive(self) -> bool:
        return self.birads in RECALL_BIRADS


@dataclass
class BreastMetrics:
    """Breast-level figures (None where one class is missing)."""

    positives: int
    negatives: int
    auc: float | None
    auc_ci: tuple[float, float] | None
    threshold: float | None
    threshold_rule: str  # "given" or "youden"
    sensitivity: float | None
    specificity: float | None
    unscored: list[tuple[str, str]] = field(default_factory=list)


def breast_metrics(
    breasts: Sequence[BreastScore],
    threshold: float | None = None,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> BreastMetrics:
    """AUC with a seeded bootstrap interval and sensitivity/specificity at an operating point.

    A breast without a score counts as score 0 and is listed in ``unscored``.  The interval
    is the 2.5 and 97.5 percentiles of the AUC over ``samples`` resamples of the breasts
    with replacement (resamples holding one class only are drawn again).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.array([b.positive for b in breasts], dtype=int)
    score = np.array([0.0 if b.score is None else b.score for b in breasts], dtype=float)
    unscored = [(b.study, b.laterality) for b in breasts if b.score is None]
    positives, negatives = int(truth.sum()), int(len(truth) - truth.sum())
    result = BreastMetrics(positives, negatives, None, None, threshold,
                           "given" if threshold is not None else "youden", None, None, unscored)
    if positives == 0 or negatives == 0:
        if threshold is not None:
            result.sensitivity, result.specificity = _operating_point(truth, score, threshold)
        return result
    result.auc = float(roc_auc_score(truth, score))
    rng = np.random.default_rng(seed)
    values: list[float] = []
    n = len(truth)
    while len(values) < samples:
        pick = rng.integers(0, n, n)
        if 0 < truth[pick].sum() < n:
            values.append(rank_auc(truth[pick], score[pick]))
    result.auc_ci = (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
    if threshold is None:
        fpr, tpr, cuts = roc_curve(truth, score)
        best = int(np.argmax(tpr - fpr))
        threshold = float(min(cuts[best], 1.0))
        result.threshold = threshold
    result.sensitivity, result.specificity = _operating_point(truth, score, threshold)
    return result


def rank_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic (ties count one half): what ``roc_auc_score``
    gives, without its input checks (the bootstrap calls it thousands of times)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    positives = truth == 1
    n_pos = int(positives.sum())
    n_neg = len(truth) - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_points(breasts: Sequence[BreastScore]) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of the breast scores, for the ROC plot."""
    from sklearn.metrics import roc_curve

    truth = np.array([b.positive for b in breasts], dtype=int)
    score = np.array([0.0 if b.score is None else b.score for b in breasts], dtype=float)
    fpr, tpr, _ = roc_curve(truth, score)
    return fpr, tpr


def _operating_point(truth: np.ndarray, score: np.ndarray,
                     threshold: float) -> tuple[float | None, float | None]:
    called = score >= threshold
    positives, negatives = truth == 1, truth == 0
    sensitivity = float(called[positives].mean()) if positives.any() else None
    specificity = float((~called[negatives]).mean()) if negatives.any() else None
    return sensitivity, specificity


# --- density and BI-RADS -----------------------------------------------------------------------


@dataclass(frozen=True)
class DensityMetrics:
    breasts: int
    accuracy: float
    kappa_quadratic: float


def density_metrics(breasts: Sequence[BreastScore]) -> DensityMetrics | None:
    """Accuracy and quadratic kappa over the breasts the model gave a density for."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [(b.density, b.predicted_density) for b in breasts
             if b.density is not None and b.predicted_density is not None]
    if not pairs:
        return None
    truth, predicted = zip(*pairs)
    accuracy = float(np.mean([t == p for t, p in pairs]))
    kappa = cohen_kappa_score(truth, predicted, labels=list(DENSITY_CATEGORIES),
                              weights="quadratic")
    return DensityMetrics(len(pairs), accuracy, float(kappa) if np.isfinite(kappa) else 1.0)


def birads_confusion(breasts: Sequence[BreastScore]) -> list[list[int]] | None:
    """5 x 5 counts, rows the reference BI-RADS 1-5, columns the model's; None without any."""
    pairs = [(b.birads, b.predicted_birads) for b in breasts if b.predicted_birads is not None]
    if not pairs:
        return None
    matrix = [[0] * len(BIRADS_CATEGORIES) for _ in BIRADS_CATEGORIES]
    for truth, predicted in pairs:
        matrix[BIRADS_CATEGORIES.index(truth)][BIRADS_CATEGORIES.index(predicted)] += 1
    return matrix
