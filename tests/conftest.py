"""Shared fixtures: one synthetic release and its conversion (and one validation of it),
made once per test session.

Tests that use the whole 50-exam conversion, or that run an external validator or server,
are marked ``slow`` here (by the fixtures they use) or in their module; ``make test-quick``
leaves them out.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from converter.manifest import read_manifest
from converter.pipeline import ConversionResult, convert_release
from converter.synth import SynthSummary, generate_release
from converter.validate import DciodvfyResult, check_object
from mgfixture import SMALL_STUDIES

STUDIES = 50
SCALE = 16.0

# Fixtures that make a test slow (a whole conversion, an external validator).
SLOW_FIXTURES = {"converted_release", "validated_release", "release_copy", "tiny_converted"}
TINY_STUDIES = 4  # the bad-input corpus (tests/badinput.py) starts from this small release
TINY_SCALE = 32.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test using a slow fixture, and every integration test."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _qido_dictionary() -> None:
    """The data dictionary the QIDO-RS module reads inside Orthanc: pydicom's, as serve
    writes it (server.front.files)."""
    from server.front.files import pydicom_dictionary
    from server.front.plugin import qido

    qido.use(pydicom_dictionary())


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> tuple[Path, SynthSummary]:
    """A 50-exam synthetic release (scale 16) with every defect and erratum planted."""
    root = tmp_path_factory.mktemp("release") / "vindr-mammo"
    summary = generate_release(root, studies=STUDIES, seed=7, scale=SCALE)
    return root, summary


@pytest.fixture(scope="session")
def converted_release(release, tmp_path_factory) -> tuple[Path, ConversionResult]:
    """The release converted with two worker processes."""
    root, _ = release
    out = tmp_path_factory.mktemp("converted") / "out"
    result = convert_release(root, out, workers=2)
    return out, result


@pytest.fixture(scope="session")
def small_converted(release, tmp_path_factory) -> tuple[Path, ConversionResult]:
    """The first :data:`SMALL_STUDIES` exams of the release, converted (quick)."""
    root, _ = release
    out = tmp_path_factory.mktemp("small") / "out"
    result = convert_release(root, out, workers=1, limit=SMALL_STUDIES)
    return out, result


@pytest.fixture(scope="session")
def validated_release(converted_release) -> dict[str, tuple[DciodvfyResult, list[str]]]:
    """dciodvfy and the object checks of ``converter.validate`` on every object, run once.

    Keyed by manifest path; each value is (dciodvfy result, project check failures).
    """
    out, _ = converted_release
    rows = read_manifest(out)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda row: check_object(out, row), rows))
    return {row.path: result for row, result in zip(rows, results)}


@pytest.fixture()
def release_copy(release, tmp_path) -> Path:
    """A private copy of the release that a test may damage."""
    root, _ = release
    copy = tmp_path / "release"
    shutil.copytree(root, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    """A 4-exam synthetic release at scale 32: the base of the bad-input corpus."""
    root = tmp_path_factory.mktemp("tiny") / "release"
    generate_release(root, studies=TINY_STUDIES, seed=5, scale=TINY_SCALE)
    return root


@pytest.fixture()
def tiny_copy(tiny_release, tmp_path) -> Path:
    """A private copy of the tiny release that a test may damage (see tests/badinput.py)."""
    copy = tmp_path / "release"
    shutil.copytree(tiny_release, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_converted(tiny_release, tmp_path_factory) -> Path:
    """The tiny release converted cleanly (the reference for byte comparisons)."""
    out = tmp_path_factory.mktemp("tiny-out") / "out"
    assert convert_release(tiny_release, out, workers=1).ok
    return out
