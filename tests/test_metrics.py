"""The metrics core against hand-computed cases, pycocotools' COCOeval and scikit-learn."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from converter.evaluation.metrics import (
    BreastScore,
    Detection,
    Lesion,
    average_precision,
    birads_confusion,
    breast_metrics,
    density_metrics,
    froc,
    iou,
    match_detections,
    per_category_ap,
    sensitivity_at,
)


def test_iou_hand_computed():
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


def _case():
    """3 images (c normal), 3 lesions; 6 detections whose outcomes are known by hand."""
    lesions = [Lesion("a", (0, 0, 10, 10)), Lesion("a", (20, 20, 30, 30)),
               Lesion("b", (0, 0, 10, 10))]
    detections = [
        Detection("a", (0, 0, 10, 10), 0.9),      # TP lesion 0
        Detection("a", (1, 1, 10, 10), 0.8),      # IoU 0.81 with lesion 0, already matched: FP
        Detection("c", (0, 0, 5, 5), 0.7),        # FP on the normal image
        Detection("b", (0, 0, 10, 5), 0.6),       # IoU exactly 0.5 with lesion 2: TP
        Detection("a", (20, 20, 26, 26), 0.5),    # IoU 0.36: FP (centre inside: TP by centre)
        Detection("b", (50, 50, 60, 60), 0.4),    # FP
    ]
    return ["a", "b", "c"], lesions, detections


def test_matching_and_froc_hand_computed():
    images, lesions, detections = _case()
    matching = match_detections(images, lesions, detections)
    assert [o.true_positive for o in matching.outcomes] == [True, False, False, True, False,
                                                            False]
    curve = froc(matching)
    # thresholds 0.9 .. 0.4: TP 1,1,1,2,2,2 of 3; FP 0,1,2,2,3,4 over 3 images
    assert curve.sensitivity == pytest.approx((0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3))
    assert curve.fp_per_image == pytest.approx((0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 4 / 3))
    at = sensitivity_at(curve)
    assert list(at) == ["0.125", "0.25", "0.5", "1", "2", "4"]
    assert at["0.125"] == pytest.approx(1 / 3)
    assert at["0.5"] == pytest.approx(1 / 3)
    assert at["1"] == pytest.approx(2 / 3)
    assert at["4"] == pytest.approx(2 / 3)


def test_center_rule_hand_computed():
    images, lesions, detections = _case()
    matching = match_detections(images, lesions, detections, rule="center")
    # detection 1 (centre inside lesion 0, matched) stays FP; detection 4 now hits lesion 1
    assert [o.true_positive for o in matching.outcomes] == [True, False, False, True, True,
                                                            False]
    assert froc(matching).sensitivity[-1] == pytest.approx(1.0)


def test_ignored_images_leave_the_false_positives():
    images, lesions, detections = _case()
    matching = match_detections(images, lesions, detections, ignored=["c"])
    assert matching.images == 2 and matching.false_positives == 3
    assert froc(matching).fp_per_image[-1] == pytest.approx(3 / 2)


def test_ties_form_one_froc_point():
    lesions = [Lesion("a", (0, 0, 10, 10))]
    detections = [Detection("a", (50, 50, 60, 60), 0.5), Detection("a", (0, 0, 10, 10), 0.5)]
    curve = froc(match_detections(["a", "b"], lesions, detections))
    assert curve.fp_per_image == pytest.approx((0, 0.5))
    assert curve.sensitivity == pytest.approx((0, 1.0))


def test_no_detection_gives_zero_sensitivity():
    curve = froc(match_detections(["a"], [Lesion("a", (0, 0, 1, 1))], []))
    assert sensitivity_at(curve)["4"] == 0.0


def test_ap_hand_computed():
    images, lesions, detections = _case()
    # ranked TP FP FP TP FP FP, 3 lesions: precision 1 up to recall 1/3, 1/2 up to 2/3, then 0
    expected = (34 * 1.0 + 33 * 0.5) / 101
    assert average_precision(match_detections(images, lesions, detections)) == pytest.approx(
        expected)


def _coco_ap(images, lesions, detections) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {name: n for n, name in enumerate(images, 1)}

    def xywh(box):
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in ids.values()],
        "categories": [{"id": 1, "name": "lesion"}],
        "annotations": [{"id": n, "image_id": ids[les.image], "category_id": 1,
                         "bbox": xywh(les.box), "area": (les.box[2] - les.box[0])
                         * (les.box[3] - les.box[1]), "iscrowd": 0}
                        for n, les in enumerate(lesions, 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": ids[d.image], "category_id": 1, "bbox": xywh(d.box),
                          "score": d.score} for d in detections])
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.params.maxDets = [1, 10, 100000]
        evaluation.params.areaRng = [[0, 1e10]]
        evaluation.params.areaRngLbl = ["all"]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, 0, 0, -1]
    return float(np.mean(precision))


def _random_case(rng: np.random.Generator):
    images = [f"img{i}" for i in range(int(rng.integers(3, 12)))]
    lesions, detections = [], []
    for image in images:
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(10, 80, 2)
            box = (float(x), float(y), float(x + w), float(y + h))
            lesions.append(Lesion(image, box))
            if rng.random() < 0.7:  # a jittered hit, sometimes good enough
                jitter = rng.normal(0, 0.15, 4) * np.array([w, h, w, h])
                detections.append(Detection(image, tuple(float(v) for v in
                                                         np.array(box) + jitter),
                                            float(rng.uniform(0.3, 1.0))))
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(10, 80, 2)
            detections.append(Detection(image, (float(x), float(y), float(x + w),
                                                float(y + h)), float(rng.uniform(0, 0.8))))
    return images, lesions, detections


@pytest.mark.parametrize("seed", range(12))
def test_ap_agrees_with_cocoeval(seed):
    pytest.importorskip("pycocotools")
    images, lesions, detections = _random_case(np.random.default_rng(seed))
    if not lesions:
        pytest.skip("no lesion drawn")
    ours = average_precision(match_detections(images, lesions, detections))
    assert ours == pytest.approx(_coco_ap(images, lesions, detections), abs=1e-3)


def test_ap_of_the_hand_case_agrees_with_cocoeval():
    pytest.importorskip("pycocotools")
    images, lesions, detections = _case()
    ours = average_precision(match_detections(images, lesions, detections))
    assert ours == pytest.approx(_coco_ap(images, lesions, detections), abs=1e-3)


def test_per_category_ap_counts_a_multi_label_lesion_in_each_category():
    lesions = [Lesion("a", (0, 0, 10, 10), ("Mass", "Asymmetry"))]
    detections = [Detection("a", (0, 0, 10, 10), 0.9, "Mass")]
    result = per_category_ap(["a"], lesions, detections, ["Mass", "Asymmetry",
                                                          "Skin Thickening"])
    assert result == {"Mass": 1.0, "Asymmetry": 0.0, "Skin Thickening": None}


def _breasts(rng, n=60):
    out = []
    for i in range(n):
        birads = int(rng.integers(1, 6))
        score = float(np.clip(rng.normal(0.3 + 0.1 * birads, 0.2), 0, 1))
        out.append(BreastScore(f"s{i}", "L", birads, score, "ABCD"[i % 4],
                               int(rng.integers(1, 6)), "ABCD"[(i + i // 7) % 4]))
    return out


def test_breast_auc_matches_scikit_learn_and_the_interval_is_seeded():
    from sklearn.metrics import roc_auc_score

    breasts = _breasts(np.random.default_rng(1))
    result = breast_metrics(breasts, seed=3, samples=300)
    truth = [b.birads >= 3 for b in breasts]
    assert result.auc == pytest.approx(roc_auc_score(truth, [b.score for b in breasts]))
    assert result.positives == sum(truth) and result.negatives == len(truth) - sum(truth)
    low, high = result.auc_ci
    assert low < result.auc < high
    assert breast_metrics(breasts, seed=3, samples=300).auc_ci == result.auc_ci
    assert breast_metrics(breasts, seed=4, samples=300).auc_ci != result.auc_ci


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_is_scikit_learns(seed):
    from sklearn.metrics import roc_auc_score

    from converter.evaluation.metrics import rank_auc

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 40)
    truth[:2] = (0, 1)
    score = np.round(rng.random(40), 1)  # ties
    assert rank_auc(truth, score) == pytest.approx(roc_auc_score(truth, score))


def test_breast_auc_hand_computed_with_an_unscored_breast():
    breasts = [BreastScore("a", "L", 4, 0.9), BreastScore("a", "R", 1, 0.2),
               BreastScore("b", "L", 3, None), BreastScore("b", "R", 2, 0.1)]
    result = breast_metrics(breasts, threshold=0.5, samples=50)
    # positives 0.9 and 0 (unscored); negatives 0.2, 0.1: pairs won 2 of 4
    assert result.auc == pytest.approx(0.5)
    assert result.unscored == [("b", "L")]
    assert result.sensitivity == pytest.approx(0.5) and result.specificity == pytest.approx(1.0)


def test_youden_point_hand_computed():
    breasts = [BreastScore(str(i), "L", b, s) for i, (b, s) in enumerate(
        [(4, 0.9), (5, 0.8), (3, 0.4), (1, 0.5), (2, 0.3), (1, 0.1)])]
    result = breast_metrics(breasts, samples=50)
    # cut at 0.8: tpr 2/3 fpr 0 (J = 0.667); at 0.4: tpr 1, fpr 1/3 (J = 0.667): first kept
    assert result.threshold_rule == "youden"
    assert result.sensitivity - (1 - result.specificity) == pytest.approx(2 / 3)


def test_density_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    breasts = _breasts(np.random.default_rng(2))
    result = density_metrics(breasts)
    truth = [b.density for b in breasts]
    predicted = [b.predicted_density for b in breasts]
    assert result.kappa_quadratic == pytest.approx(
        cohen_kappa_score(truth, predicted, weights="quadratic"))
    assert result.accuracy == pytest.approx(np.mean([t == p for t, p in zip(truth, predicted)]))


def test_density_kappa_hand_computed():
    breasts = [BreastScore("a", "L", 1, 0.1, "A", None, "A"),
               BreastScore("a", "R", 1, 0.1, "B", None, "C"),
               BreastScore("b", "L", 1, 0.1, "C", None, "C"),
               BreastScore("b", "R", 1, 0.1, "D", None, "D")]
    result = density_metrics(breasts)
    assert result.accuracy == 0.75
    # observed weighted disagreement 1/9 / 4; expected from the marginals (A1 B1 C1 D1 vs
    # A1 C2 D1): sum w_ij p_i q_j = (1/16)(sum over truth rows) -> kappa = 1 - o / e
    weights = np.array([[(i - j) ** 2 / 9 for j in range(4)] for i in range(4)])
    observed = weights[1, 2] / 4
    expected = (np.outer([1, 1, 1, 1], [1, 0, 2, 1]) * weights).sum() / 16
    assert result.kappa_quadratic == pytest.approx(1 - observed / expected)


def test_birads_confusion():
    breasts = [BreastScore("a", "L", 1, None, predicted_birads=1),
               BreastScore("a", "R", 4, None, predicted_birads=3),
               BreastScore("b", "L", 4, None, predicted_birads=3),
               BreastScore("b", "R", 2, None)]
    matrix = birads_confusion(breasts)
    assert matrix[0][0] == 1 and matrix[3][2] == 2 and sum(map(sum, matrix)) == 3
