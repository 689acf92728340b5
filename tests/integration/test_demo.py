"""`vindr-convert demo`: the README's main job, end to end on a small release."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from pacs_tools import pacs_folder
from server.pacs import engine
from server.userconfig import load_user_config
from vindr_convert.demo import pacs_folder as demo_pacs_folder
from vindr_convert.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_reruns_idempotently(monkeypatch) -> None:
    workdir = pacs_folder("demo")  # the PACS's account can reach it: its data goes inside
    workdir.chmod(0o711)
    monkeypatch.chdir(workdir)
    assert demo_pacs_folder(workdir) == workdir / "orthanc"
    steps: list[str] = []
    tmp_path = workdir
    try:
        first = run_demo(tmp_path, studies=4, scale=32, workers=2, step=steps.append)
        assert first.ok, (first.conversion and first.conversion.problems,
                          first.verified and first.verified.problems)
        assert first.loaded is not None and first.loaded.sent == first.loaded.total > 0
        assert first.verified is not None and first.verified.studies == 4
        if first.viewer is None:  # only without npm or the OHIF package
            assert "npm" in first.viewer_note or "OHIF" in first.viewer_note, first.viewer_note
        else:
            study_list, exam = first.viewer
            stored = load_user_config()
            admin = (stored.username, stored.password)
            assert requests.get(study_list, timeout=10).status_code == 401  # log in first
            assert requests.get(study_list, auth=admin, timeout=10).status_code == 200
            assert exam and "hangingprotocolId=vindr-mammo-4up" in exam
            assert requests.get(study_list + "dicom-web/studies", auth=admin, timeout=10).json()
        answers = {what: answer for what, _, answer in first.queries}
        assert answers["C-FIND: test-split studies"] == answers["QIDO-RS: test studies"]
        assert any(step.startswith("query") for step in steps)
        assert first.predictions is not None and first.predictions.studies == 4
        assert first.evaluation is not None and first.report is not None
        metrics = first.evaluation.metrics()
        assert metrics["exams_with_model"] == metrics["exams"] == 4
        assert metrics["lesion"]["true_positives"] > 0
        assert first.report.is_file() and (first.report.parent / "metrics.json").is_file()

        again = run_demo(tmp_path, studies=4, scale=32, workers=2, step=steps.append)
        assert again.ok
        assert again.settings is not None and first.settings is not None
        assert again.settings.http_port == first.settings.http_port  # the same PACS reused
        assert again.loaded is not None and again.loaded.sent == 0
        assert again.conversion is not None and again.conversion.skipped_studies == 4
    finally:
        engine.stop(workdir / "orthanc")
