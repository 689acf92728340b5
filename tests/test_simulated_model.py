"""The simulated model of the synthetic generator: seeded, and with the behaviour it claims."""

from __future__ import annotations

import csv

import pytest

from converter.release import read_release
from converter.synth import generate_release, simulate_model


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-release") / "rel"
    generate_release(root, studies=6, seed=3, scale=32)
    return root


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_release, tmp_path):
    a = simulate_model(tiny_release, tmp_path / "a", seed=1)
    b = simulate_model(tiny_release, tmp_path / "b", seed=1)
    c = simulate_model(tiny_release, tmp_path / "c", seed=2)
    assert a.boxes_csv.read_bytes() == b.boxes_csv.read_bytes()
    assert a.breasts_csv.read_bytes() == b.breasts_csv.read_bytes()
    assert a.boxes_csv.read_bytes() != c.boxes_csv.read_bytes()


def test_perfect_model_finds_every_lesion_and_nothing_else(tiny_release, tmp_path):
    result = simulate_model(tiny_release, tmp_path, sensitivity=1.0, fp_per_image=0.0)
    assert result.found == result.lesions == result.boxes > 0
    release = read_release(tiny_release)
    images = {i.image_id: i for i in release.images}
    with open(result.boxes_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        image = images[row["image_id"]]
        assert 0 <= float(row["xmin"]) < float(row["xmax"]) <= image.width
        assert 0 <= float(row["ymin"]) < float(row["ymax"]) <= image.height
        assert 0.4 <= float(row["score"]) <= 1 and row["label"]
    with open(result.breasts_csv, newline="") as handle:
        breasts = list(csv.DictReader(handle))
    assert len(breasts) == 2 * len(release.studies)
    assert {b["density"] for b in breasts} <= set("ABCD")


def test_false_positives_score_lower(tiny_release, tmp_path):
    result = simulate_model(tiny_release, tmp_path, sensitivity=0.0, fp_per_image=3.0)
    with open(result.boxes_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert result.found == 0 and len(rows) > 24
    assert all(float(r["score"]) < 0.75 and not r["label"] for r in rows)
