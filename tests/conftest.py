"""Shared fixtures: one synthetic release and its conversion, made once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converter.pipeline import ConversionResult, convert_release
from converter.synth import SynthSummary, generate_release

STUDIES = 50
SCALE = 16.0


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


@pytest.fixture()
def release_copy(release, tmp_path) -> Path:
    """A private copy of the release that a test may damage."""
    root, _ = release
    copy = tmp_path / "release"
    shutil.copytree(root, copy)
    return copy
