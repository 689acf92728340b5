"""A model's predictions imported, loaded into the session PACS, verified and evaluated over
DICOMweb through the front door; an AI SR made elsewhere (STOW-RS) evaluated too."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes as dcm_codes
from typer.testing import CliRunner

from converter import codes
from converter.evaluation.evaluate import evaluate_exams, exams_from_folder
from converter.evaluation.predictions import import_predictions
from converter.manifest import read_manifest
from converter.synth import simulate_model
from pacs_testdata import make_output
from pacs_tools import READER, Pacs
from server.client import dicomweb_client
from server.transfer.evaluate import evaluate_pacs, fetch_exams, split_studies
from server.transfer.load import load
from server.transfer.verify import verify
from vindr_convert.app import app

pytestmark = pytest.mark.integration

NAME = "sim-eval"


@pytest.fixture(scope="module")
def imported(pacs: Pacs, tmp_path_factory) -> tuple[Path, Path, int]:
    """4 exams with boxes, the simulated model's SRs imported and loaded; (out, release,
    boxes the model found)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    out = tmp / "out"
    output = make_output(out, n_studies=4, prefix="evaluate")
    model = simulate_model(output.release, tmp / "model", seed=2, fp_per_image=1.0)
    studies = {r.study_id for r in read_manifest(out)}
    for path in (model.boxes_csv, model.breasts_csv):
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], *(line for line in lines[1:]
                                               if line.split(",")[0] in studies)]) + "\n")
    result = import_predictions(out, NAME, "1", model.boxes_csv, model.breasts_csv)
    assert result.ok, result.problems
    loaded = load(out, pacs.connection)
    assert loaded.ok, loaded.errors
    found = sum(1 for line in model.boxes_csv.read_text().splitlines()[1:]
                if line.rsplit(",", 1)[1])  # the lesions found carry a label
    return out, output.release, found


def test_model_srs_survive_load_and_verify(pacs: Pacs, imported) -> None:
    out, release, _ = imported
    result = verify(release, out, pacs.connection)
    assert result.ok, [str(p) for p in result.problems]


def test_evaluate_over_dicomweb_equals_the_files(pacs: Pacs, imported) -> None:
    out, _, found = imported
    front = pacs.front(READER)
    served = evaluate_pacs(front, NAME, split="all").metrics()
    mine = {r.study_uid for r in read_manifest(out)}
    others = fetch_exams(front, [s for s in split_studies(front, "all") if s[0] not in mine])
    expected = evaluate_exams(exams_from_folder(out) + others, NAME, split="all").metrics()
    assert served == expected
    assert served["exams_with_model"] == 4
    assert served["lesion"]["true_positives"] == found > 0
    assert served["lesion"]["false_positives"] == served["lesion"]["detections"] - found


def test_evaluate_command(pacs: Pacs, imported, tmp_path: Path) -> None:
    front = pacs.front(READER)
    cli = CliRunner().invoke(app, ["evaluate", "--name", NAME, "--split", "all", "--report",
                                   str(tmp_path), "--url", front.url, "--user", READER.name,
                                   "--password", READER.password])
    assert cli.exit_code == 0, cli.output
    assert "sensitivity at 1 FP/image" in cli.output and "report.md" in cli.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == {"name": NAME, "version": "1",
                                "forms": ["TID 1500 in Comprehensive SR"]}
    assert (tmp_path / "froc.png").is_file() and (tmp_path / "report.md").is_file()
    missing = CliRunner().invoke(app, ["evaluate", "--name", "no-such-model", "--report",
                                       str(tmp_path / "x"), "--url", front.url, "--user",
                                       READER.name, "--password", READER.password])
    assert missing.exit_code == 2 and "no SR of model" in missing.output


def test_an_ai_sr_sent_over_stow_rs_is_evaluated(pacs: Pacs, imported) -> None:
    """orthanc-mammography's form: Comprehensive 3D SR, one tracking UID, percent scores;
    one box on an image the PACS does not hold is reported."""
    out, _, _ = imported
    image = exams_from_folder(out)[0]
    header = next(ds for ds in _headers(out) if str(ds.StudyInstanceUID) == image.study_uid)
    shared = hd.sr.TrackingIdentifier(identifier="Orthanc Deep Learning for Mammography",
                                      uid=hd.UID())

    def group(uid: str, x: float) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array([[x, 1], [x + 3, 1], [x + 3, 4], [x, 4], [x, 1]],
                                      dtype=float),
                source_image=hd.sr.SourceImageForRegion(header.SOPClassUID, uid)),
            tracking_identifier=shared,
            measurements=[hd.sr.Measurement(name=dcm_codes.DCM.ProbabilityOfCancer, value=55.0,
                                            unit=dcm_codes.UCUM.Percent)])

    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=[group(str(header.SOPInstanceUID), 1),
                              group("1.2.826.0.1.3680043.10.1.999", 5)])
    ghost = copy.deepcopy(header)  # an image the PACS never received
    ghost.SOPInstanceUID = "1.2.826.0.1.3680043.10.1.999"
    sr = hd.sr.Comprehensive3DSR(evidence=[header, ghost], content=report, series_number=77,
                                 series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(),
                                 instance_number=1)
    dicomweb_client(pacs.connection).store_instances([sr])
    served = evaluate_pacs(pacs.front(READER), "Orthanc Deep Learning for Mammography",
                           split="all").metrics()
    assert served["model"]["forms"] == ["TID 1500 in Comprehensive 3D SR"]
    assert served["exams_with_model"] == 1 and served["lesion"]["detections"] == 1
    assert any("1.2.826.0.1.3680043.10.1.999" in p and "not in the PACS" in p
               for p in served["problems"])


def _headers(out: Path):
    import pydicom

    return [pydicom.dcmread(r.file(out), stop_before_pixels=True)
            for r in read_manifest(out) if r.kind == "MG"]
