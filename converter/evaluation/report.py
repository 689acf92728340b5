"""What ``evaluate`` writes into its report folder: ``metrics.json``, ``report.md`` and plots.

- ``metrics.json``: :meth:`converter.evaluation.evaluate.Evaluation.metrics`;
- ``report.md``: the figures, the definitions they follow, the dataset's traps and how
  they were handled, and every problem met;
- ``froc.png`` (sensitivity against false positives per image, the six operating points
  marked), ``roc.png`` (breast level, the operating point marked) and ``categories.png``
  (AP at IoU 0.5 per finding category, when the model labels its boxes); drawn with
  matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_write
from .evaluate import Evaluation
from .metrics import FROC_TARGETS, format_target, roc_points

DEFINITIONS = """\
- **Images**: every MG image of the split's exams as the PACS holds them, normal ones
  included: the false positives per image are averaged over all of them.
- **Lesions**: every box of the radiologists (the ground-truth SR), clipped to the image as
  the SR stores it; rows of `finding_annotations.csv` with the same box are one lesion
  carrying all their labels (multi-label boxes are one lesion).
- **Matching**: per image, the model's boxes in descending score; a box is a true positive
  when its best IoU with a not-yet-matched lesion of the same image is at least 0.5 (that
  lesion is then matched), else a false positive. `--match center`: a box matches when its
  centre lies inside a not-yet-matched lesion box.
- **FROC**: sensitivity (matched lesions / lesions) against mean false positives per image,
  one point per score threshold; *sensitivity at t* is the largest sensitivity over the
  thresholds whose false positives per image do not exceed t.
- **AP50**: average precision at IoU 0.5 with COCO's 101-point interpolation, over all boxes
  and, when the model labels its boxes, per finding category (a lesion counts in each of
  its categories).
- **Breast level**: breasts are (study, laterality); positive (recall) when the breast's
  BI-RADS is 3, 4 or 5, negative when 1 or 2 (the VinDr-Mammo paper's screening mapping).
  AUC of the model's breast score (a breast without a score counts as 0 and is listed),
  with a seeded 95 % percentile bootstrap interval; sensitivity and specificity at
  `--threshold` (score >= threshold is a recall) or at the Youden point.
- **Density**: accuracy and quadratically weighted Cohen's kappa over A-D; **BI-RADS**: the
  confusion matrix of the model's breast BI-RADS against the radiologists'.
"""


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_report(evaluation: Evaluation, dest: Path) -> dict[str, Path]:
    """Write metrics.json, report.md and the PNG plots into ``dest``; their paths by name."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics()
    paths = {"metrics": atomic_write(dest / "metrics.json",
                                     json.dumps(metrics, indent=2) + "\n")}
    paths.update(_plots(evaluation, dest))
    paths["report"] = atomic_write(dest / "report.md", markdown(evaluation, paths))
    return paths


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(figure, value) pairs of the summary the command prints and the report opens with."""
    lesion, breast = metrics["lesion"], metrics["breast"]
    rows = [("exams / images / lesions",
             f"{metrics['exams']} / {metrics['images']} / {metrics['lesions']}"),
            ("detections (TP / FP)", f"{lesion['detections']} ({lesion['true_positives']} / "
                                     f"{lesion['false_positives']})")]
    rows += [(f"sensitivity at {t} FP/image", _fmt(v)) for t, v in
             lesion["sensitivity_at"].items()]
    rows.append(("AP50", _fmt(lesion["ap50"])))
    ci = breast["auc_ci"]
    rows.append(("breast AUC (95 % CI)", f"{_fmt(breast['auc'])}"
                 + (f" ({_fmt(ci[0])}-{_fmt(ci[1])})" if ci else "")))
    rows.append(("breasts positive / negative", f"{breast['positives']} / "
                                                f"{breast['negatives']}"))
    rows.append((f"sensitivity / specificity at {_fmt(breast['threshold'])} "
                 f"({breast['threshold_rule']})",
                 f"{_fmt(breast['sensitivity'])} / {_fmt(breast['specificity'])}"))
    if "density" in metrics:
        rows.append(("density accuracy / quadratic kappa",
                     f"{_fmt(metrics['density']['accuracy'])} / "
                     f"{_fmt(metrics['density']['kappa_quadratic'])}"))
    return rows


def markdown(evaluation: Evaluation, paths: dict[str, Path]) -> str:
    """The report's text (Markdown)."""
    metrics = evaluation.metrics()
    model = metrics["model"]
    lines = [f"# {model['name']} {model['version']} against the radiologists "
             f"(VinDr-Mammo, split {metrics['split']})", "",
             f"Read from the PACS: {metrics['exams']} exams, {metrics['exams_with_model']} "
             f"with an SR of the model ({', '.join(model['forms']) or 'none'}); matching rule "
             f"`{metrics['match']}`.", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(metrics)]
    for name in ("froc", "roc", "categories"):
        if name in paths:
            lines += ["", f"![{name}]({paths[name].name})"]
    per_category = metrics["lesion"].get("ap50_per_category")
    if per_category:
        lines += ["", "## AP50 per finding category", "", "| category | AP50 |", "| --- | --- |"]
        lines += [f"| {c} | {_fmt(v)} |" for c, v in per_category.items()]
    if "birads" in metrics:
        lines += ["", "## BI-RADS confusion (rows: radiologists, columns: model)", "",
                  "| | " + " | ".join(f"BI-RADS {n}" for n in metrics["birads"]["labels"]) + " |",
                  "| --- " * 6 + "|"]
        for n, row in zip(metrics["birads"]["labels"], metrics["birads"]["confusion"]):
            lines.append(f"| BI-RADS {n} | " + " | ".join(map(str, row)) + " |")
    lines += ["", "## Definitions", "", DEFINITIONS.rstrip(), "", "## The dataset's traps", "",
              f"- Views marked \"No Finding\" on BI-RADS 3-5 breasts (the lesion was boxed on "
              f"the other view only): {metrics['unboxed_suspicious_images']} image(s); "
              + ("left out of the false positives and of the image count "
                 "(`--ignore-unboxed-suspicious`)." if metrics["ignore_unboxed_suspicious"]
                 else "counted as normal images (their boxes are false positives); "
                      "`--ignore-unboxed-suspicious` leaves them out."),
              "- Multi-label boxes (several rows, one box) are one lesion.",
              "- Boxes partly outside the image are clipped to it, as the SR stores them."]
    unscored = metrics["breast"]["unscored"]
    if unscored:
        lines += [f"- Breasts without a model score (counted as 0): {len(unscored)}: "
                  + ", ".join(unscored[:50]) + (" ..." if len(unscored) > 50 else "")]
    problems = metrics["problems"]
    lines += ["", f"## Problems ({len(problems)})", ""]
    lines += [f"- {p}" for p in problems] or ["None."]
    return "\n".join(lines) + "\n"


def _plots(evaluation: Evaluation, dest: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = {}
    curve = evaluation.curve
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    ax.step(curve.fp_per_image, curve.sensitivity, where="post", label="FROC")
    ax.plot(FROC_TARGETS, [evaluation.at[format_target(t)] for t in FROC_TARGETS], "o",
            label="sensitivity at t")
    ax.set_xscale("symlog", linthresh=0.125)
    ax.set_xlabel("mean false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"FROC: {evaluation.name} {evaluation.version}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    paths["froc"] = dest / "froc.png"
    fig.savefig(paths["froc"], metadata={"Software": None})
    plt.close(fig)

    breast = evaluation.breast
    if breast.auc is not None:
        fpr, tpr = roc_points(evaluation.inputs.breasts)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        ax.plot(fpr, tpr, label=f"AUC {breast.auc:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        if breast.sensitivity is not None and breast.specificity is not None:
            ax.plot([1 - breast.specificity], [breast.sensitivity], "o",
                    label=f"threshold {breast.threshold:.3f}")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title("Breast level (recall = BI-RADS 3-5)")
        ax.legend(loc="lower right")
        paths["roc"] = dest / "roc.png"
        fig.savefig(paths["roc"], metadata={"Software": None})
        plt.close(fig)

    per_category = {c: v for c, v in evaluation.ap_per_category.items() if v is not None}
    if per_category:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(per_category) + 1.2), dpi=100)
        names = list(per_category)
        ax.barh(names, [per_category[n] for n in names])
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("AP at IoU 0.5")
        ax.set_title("Per finding category")
        fig.tight_layout()
        paths["categories"] = dest / "categories.png"
        fig.savefig(paths["categories"], metadata={"Software": None})
        plt.close(fig)
    return paths
