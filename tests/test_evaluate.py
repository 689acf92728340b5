"""`evaluate` on converted exams read from files: figures known in advance reproduced exactly."""

from __future__ import annotations

import json
import shutil

import pytest

from converter.errors import PredictionsError
from converter.evaluation.evaluate import ExamObjects, evaluate_exams, exams_from_folder
from converter.evaluation.predictions import import_predictions
from converter.evaluation.report import write_report
from converter.manifest import read_manifest
from converter.release import read_release


@pytest.fixture()
def out(small_converted, tmp_path):
    source, _ = small_converted
    copy = tmp_path / "out"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="module")
def truth(release, small_converted):
    """Images and distinct boxes (clipped) of the small conversion's exams, from the release."""
    root, _ = release
    studies = {r.study_id for r in read_manifest(small_converted[0])}
    images = [i for i in read_release(root).images if i.study_id in studies]
    lesions = []
    for image in images:
        seen = set()
        for finding in image.findings:
            if finding.box.text not in seen:
                seen.add(finding.box.text)
                lesions.append((image, finding.box.clipped(image.width, image.height)))
    return images, lesions


def _csv(path, header, rows):
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


BOX_HEADER = "study_id,image_id,xmin,ymin,xmax,ymax,score,label"


def test_hand_computed_froc_and_ap(out, truth, tmp_path):
    images, lesions = truth
    assert len(lesions) >= 4
    half = len(lesions) // 2
    rows = []
    for k, (image, box) in enumerate(lesions):  # exact boxes: first half 0.9, rest 0.3
        rows.append((image.study_id, image.image_id, *(repr(v) for v in box),
                     0.9 if k < half else 0.3, ""))
    for image in images:  # one false positive per image at 0.5, a 1-pixel box in a corner
        rows.append((image.study_id, image.image_id, 0, 0, 1, 1, 0.5, ""))
    result = import_predictions(out, "hand", "1", _csv(tmp_path / "b.csv", BOX_HEADER, rows))
    assert result.ok, result.problems
    evaluation = evaluate_exams(exams_from_folder(out), "hand", split="all")
    metrics = evaluation.metrics()
    n, total = len(images), len(lesions)
    assert (metrics["images"], metrics["lesions"]) == (n, total)
    assert metrics["lesion"]["true_positives"] == total
    assert metrics["lesion"]["false_positives"] == n
    froc = metrics["lesion"]["froc"]
    assert froc["fp_per_image"] == pytest.approx([0, 0, 1, 1])
    assert froc["sensitivity"] == pytest.approx([0, half / total, half / total, 1])
    at = metrics["lesion"]["sensitivity_at"]
    assert at == pytest.approx({"0.125": half / total, "0.25": half / total,
                                "0.5": half / total, "1": 1.0, "2": 1.0, "4": 1.0})
    # ranked: `half` TPs, n FPs, the other TPs: precision 1 up to recall half/total, then
    # total / (total + n) (monotone from the right) up to recall 1
    recall_points = [r / 100 for r in range(101)]
    expected = sum(1.0 if r <= half / total else total / (total + n) for r in recall_points)
    assert metrics["lesion"]["ap50"] == pytest.approx(expected / 101)
    assert metrics["breast"]["auc"] is None or metrics["breast"]["unscored"]


def test_centre_rule_and_ignored_images(out, truth, tmp_path):
    images, lesions = truth
    image, box = next((i, b) for i, b in lesions if b[2] + 0.4 * (b[2] - b[0]) <= i.width)
    x0, y0, x1, y1 = box
    w = x1 - x0
    shifted = (x0 + 0.4 * w, y0, x1 + 0.4 * w, y1)  # IoU 0.6 / 1.4 = 0.43, centre inside
    rows = [(image.study_id, image.image_id, *(repr(v) for v in shifted), 0.8, "")]
    import_predictions(out, "shift", "1", _csv(tmp_path / "b.csv", BOX_HEADER, rows))
    exams = exams_from_folder(out)
    by_iou = evaluate_exams(exams, "shift", split="all").metrics()
    by_centre = evaluate_exams(exams, "shift", split="all", rule="center").metrics()
    assert by_iou["lesion"]["true_positives"] == 0
    assert by_centre["lesion"]["true_positives"] == 1
    ignoring = evaluate_exams(exams, "shift", split="all", ignore_unboxed_suspicious=True)
    assert ignoring.metrics()["images"] == by_iou["images"]
    assert ignoring.matching.images == by_iou["images"] - by_iou["unboxed_suspicious_images"]


def test_breast_auc_and_density_match_scikit_learn(release, out, truth, tmp_path):
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    images, _ = truth
    breasts = {}
    for image in images:
        breasts[(image.study_id, image.laterality)] = (image.breast_birads, image.breast_density)
    rows, scores, labels, densities, guesses = [], [], [], [], []
    for k, ((study, side), (birads, density)) in enumerate(sorted(breasts.items())):
        score = round((k * 37 % 11) / 10 + (0.05 if birads >= 3 else 0), 3)
        guess = "ABCD"[(k * 3) % 4]
        rows.append((study, side, score, birads, guess))
        scores.append(score)
        labels.append(birads >= 3)
        densities.append(density)
        guesses.append(guess)
    box = next(iter(images))
    boxes = _csv(tmp_path / "b.csv", BOX_HEADER, [(box.study_id, box.image_id, 0, 0, 1, 1,
                                                   0.1, "")])
    import_predictions(out, "breasts", "1", boxes,
                       _csv(tmp_path / "r.csv", "study_id,laterality,score,birads,density",
                            rows))
    metrics = evaluate_exams(exams_from_folder(out), "breasts", split="all").metrics()
    assert metrics["breast"]["positives"] == sum(labels)
    assert metrics["breast"]["negatives"] == len(labels) - sum(labels)
    if 0 < sum(labels) < len(labels):
        assert metrics["breast"]["auc"] == pytest.approx(roc_auc_score(labels, scores))
        low, high = metrics["breast"]["auc_ci"]
        assert low <= metrics["breast"]["auc"] <= high
    assert metrics["density"]["accuracy"] == pytest.approx(
        sum(a == b for a, b in zip(densities, guesses)) / len(guesses))
    assert metrics["density"]["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(densities, guesses, labels=list("ABCD"), weights="quadratic"))
    assert sum(map(sum, metrics["birads"]["confusion"])) == len(rows)
    assert metrics["breast"]["unscored"] == []


def test_report_folder(out, truth, tmp_path):
    images, lesions = truth
    rows = [(i.study_id, i.image_id, *(repr(v) for v in b), 0.7, "Mass") for i, b in lesions]
    import_predictions(out, "report", "1", _csv(tmp_path / "b.csv", BOX_HEADER, rows))
    evaluation = evaluate_exams(exams_from_folder(out), "report", split="all")
    paths = write_report(evaluation, tmp_path / "report")
    metrics = json.loads(paths["metrics"].read_text())
    for key in ("split", "images", "lesions"):
        assert key in metrics
    assert set(metrics["lesion"]["sensitivity_at"]) == {"0.125", "0.25", "0.5", "1", "2", "4"}
    for key in ("ap50", "froc"):
        assert key in metrics["lesion"]
    assert set(metrics["lesion"]["froc"]) >= {"fp_per_image", "sensitivity"}
    for key in ("auc", "auc_ci", "positives", "negatives"):
        assert key in metrics["breast"]
    assert "Mass" in metrics["lesion"]["ap50_per_category"]
    for name in ("froc", "categories"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["report"].read_text()
    assert "## Definitions" in text and "IoU" in text and "No Finding" in text
    assert "![froc](froc.png)" in text


def test_boxes_on_images_not_in_the_pacs_are_reported(out, truth, tmp_path):
    images, lesions = truth
    rows = [(i.study_id, i.image_id, *(repr(v) for v in b), 0.7, "") for i, b in lesions]
    import_predictions(out, "gone", "1", _csv(tmp_path / "b.csv", BOX_HEADER, rows))
    exams = exams_from_folder(out)
    image, _ = lesions[0]
    from converter.naming import hex_to_uid

    uid = hex_to_uid(image.image_id)
    for exam in exams:
        exam.images.pop(uid, None)
    metrics = evaluate_exams(exams, "gone", split="all").metrics()
    assert any(uid in p and "not in the PACS" in p for p in metrics["problems"])
    assert metrics["lesion"]["detections"] < len(rows)


def test_model_and_version_selection(out, truth, tmp_path):
    images, _ = truth
    image = images[0]
    boxes = _csv(tmp_path / "b.csv", BOX_HEADER, [(image.study_id, image.image_id, 0, 0, 1, 1,
                                                   0.1, "")])
    import_predictions(out, "m", "1", boxes)
    import_predictions(out, "m", "2", boxes)
    exams = exams_from_folder(out)
    with pytest.raises(PredictionsError, match="several versions"):
        evaluate_exams(exams, "m", split="all")
    with pytest.raises(PredictionsError, match="no SR of model"):
        evaluate_exams(exams, "other", split="all")
    with pytest.raises(PredictionsError, match="no version"):
        evaluate_exams(exams, "m", "3", split="all")
    assert evaluate_exams(exams, "m", "2", split="all").version == "2"
    assert isinstance(exams[0], ExamObjects)
