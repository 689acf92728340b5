"""`vindr-convert demo`: the README's main job, end to end on a small release."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import engine
from vindr_convert.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_reruns_idempotently(tmp_path: Path) -> None:
    steps: list[str] = []
    try:
        first = run_demo(tmp_path, studies=4, scale=32, workers=2, step=steps.append)
        assert first.ok, (first.conversion and first.conversion.problems,
                          first.verified and first.verified.problems)
        assert first.loaded is not None and first.loaded.sent == first.loaded.total > 0
        assert first.verified is not None and first.verified.studies == 4
        answers = {what: answer for what, _, answer in first.queries}
        assert answers["C-FIND: test-split studies"] == answers["QIDO-RS: test studies"]
        assert any(step.startswith("query") for step in steps)

        again = run_demo(tmp_path, studies=4, scale=32, workers=2, step=steps.append)
        assert again.ok
        assert again.settings is not None and first.settings is not None
        assert again.settings.http_port == first.settings.http_port  # the same PACS reused
        assert again.loaded is not None and again.loaded.sent == 0
        assert again.conversion is not None and again.conversion.skipped_studies == 4
    finally:
        engine.stop(tmp_path / "orthanc")
