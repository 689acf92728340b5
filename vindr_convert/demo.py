"""The main job on an embedded default: synthesize, convert, score a simulated model, validate,
serve, load, verify, query, evaluate.

Everything lands in one work folder (default ``./vindr-demo``): ``release/`` (the synthetic
release), ``out/`` (the converted objects), ``orthanc/`` (the PACS's data; as root, when the
work folder is out of reach of the account the PACS runs as, ``/var/lib/vindr-dicom/demo``).
Re-running reuses what is there: the release is kept, the conversion resumes, a PACS already
running on the folder is reused and loading skips what is stored. A simulated AI model's
predictions (``model/``, :func:`converter.synth.simulate_model`) are imported as its SRs,
loaded with the rest and scored against the radiologists at the end (``report/``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.status import code_to_category

from converter.evaluation.evaluate import Evaluation
from converter.evaluation.predictions import ImportResult, import_predictions
from converter.evaluation.report import write_report
from converter.pipeline import ConversionResult, convert_release
from converter.release import BREAST_CSV
from converter.synth import generate_release, simulate_model
from converter.validate import ValidationReport, validate_output
from server.client import Connection, dicomweb_client
from server.errors import ServerError
from server.pacs import engine, processes, supervisor
from server.pacs.layout import DataLayout, data_home
from server.pacs.settings import (
    DEFAULT_DICOM_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_WEB_PORT,
    Modality,
    ServerSettings,
    settings_from_json,
)
from server.transfer.evaluate import evaluate_pacs
from server.transfer.load import LoadResult, load
from server.transfer.verify import VerifyResult, verify
from server.userconfig import config_path

DEMO_MODEL = ("simulated-model", "1.0")  # name and version of the demo's AI model
DEMO_AET = "VINDR-DEMO"  # the AE title the printed dcmtk examples call from
DEMO_AET_PORT = 11113  # where it would receive a C-MOVE
Step = Callable[[str], None]


@dataclass
class DemoResult:
    """What each step of the demo found; ``ok`` when nothing failed."""

    workdir: Path
    conversion: ConversionResult | None = None
    predictions: ImportResult | None = None
    evaluation: Evaluation | None = None
    report: Path | None = None  # the evaluation's report.md
    validation: ValidationReport | None = None
    loaded: LoadResult | None = None
    verified: VerifyResult | None = None
    settings: ServerSettings | None = None
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # (what, how, answer)
    viewer: tuple[str, str | None] | None = None  # (study list URL, annotated exam URL)
    viewer_note: str = ""  # why there is no viewer, when there is none

    @property
    def ok(self) -> bool:
        return bool(
            self.conversion and self.conversion.ok and self.predictions
            and self.predictions.ok and self.validation and self.validation.ok and self.loaded and self.loaded.ok and self.verified and self.verified.ok
        )


def pacs_folder(workdir: Path) -> Path:
    """Where the demo's PACS keeps its data: ``workdir/orthanc``, or, when the account the
    PACS runs as (root never runs it) cannot reach the work folder, ``data_home()/demo``."""
    wanted = Path(workdir) / "orthanc"
    try:
        processes.check_reachable(wanted, processes.service_account("orthanc"))
    except ServerError:
        return data_home() / "demo"
    return wanted


def start_pacs(data_dir: Path) -> ServerSettings:
    """The PACS on ``data_dir``: the one already running there, or a new one in the
    background.

    A new one takes the default ports, or free ones when something else (say Debian's own
    ``orthanc`` service) holds them.
    """
    layout = DataLayout.of(data_dir)
    if supervisor.health(data_dir).running:
        settings = settings_from_json(json.loads(layout.serve_settings.read_text()))
        engine.remember(settings)
        return settings
    modalities = [str(Modality(DEMO_AET, "127.0.0.1", DEMO_AET_PORT))]
    http, dicom, web_port = DEFAULT_HTTP_PORT, DEFAULT_DICOM_PORT, DEFAULT_WEB_PORT
    if processes.port_in_use(http) or processes.port_in_use(dicom):
        http, dicom = processes.free_port(), processes.free_port()
    if processes.port_in_use(web_port):
        web_port = processes.free_port()
    settings = engine.make_settings(data_dir, http_port=http, dicom_port=dicom,
                                    modalities=modalities, web_port=web_port)
    engine.serve(settings, background=True)
    return settings


def run_queries(settings: ServerSettings, connection: Connection) -> list[tuple[str, str, str]]:
    """A few real queries (C-FIND and QIDO-RS), with the command a user can paste."""
    queries = []
    # through the front door, with an account (here the admin's): searches from the index
    front = Connection(settings.web_url, connection.username, connection.password)
    root, auth = f"{settings.web_url}/dicom-web", f"-u {connection.username}:$PASS "
    web: DICOMwebClient = dicomweb_client(front)
    for split in ("training", "test"):
        found = web.search_for_studies(search_filters={"StudyDescription": f"VinDr-Mammo-{split}"})
        queries.append((
            f"QIDO-RS: {split} studies",
            f"curl {auth}'{root}/studies?StudyDescription=VinDr-Mammo-{split}'",
            f"{len(found)} studies",
        ))

    ae = AE(ae_title=DEMO_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDescription = "VinDr-Mammo-test"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.aet)
    if not assoc.is_established:
        raise ServerError(f"C-FIND: association to {settings.aet} refused")
    answers = [ds for status, ds in assoc.send_c_find(
        query, StudyRootQueryRetrieveInformationModelFind) if ds is not None
        and code_to_category(status.Status) == "Pending"]
    assoc.release()
    queries.append((
        "C-FIND: test-split studies",
        f"/usr/bin/findscu -S -aet {DEMO_AET} -aec {settings.aet} 127.0.0.1 "
        f"{settings.dicom_port} -k QueryRetrieveLevel=STUDY "
        "-k StudyDescription=VinDr-Mammo-test -k StudyInstanceUID -k PatientID",
        f"{len(answers)} studies",
    ))
    if answers:
        study_uid = answers[0].StudyInstanceUID
        found = web.search_for_instances(
            study_uid, search_filters={"ImageLaterality": "L", "ViewPosition": "CC"})
        queries.append((
            "QIDO-RS: left CC images of one study",
            f"curl {auth}'{root}/studies/{study_uid}/instances?"
            "ImageLaterality=L&ViewPosition=CC'",
            f"{len(found)} instance(s)",
        ))
    return queries


def run_demo(workdir: Path, studies: int = 12, scale: float = 8.0, workers: int = 2,
             step: Step = print) -> DemoResult:
    """Run the whole chain in ``workdir``; ``step`` is told what happens, line by line."""
    workdir = Path(workdir).resolve()
    release, out, data = workdir / "release", workdir / "out", pacs_folder(workdir)
    result = DemoResult(workdir)

    if (release / BREAST_CSV).is_file():
        step(f"synthetic release: reusing {release}")
    else:
        step(f"synthetic release: {studies} exams at scale {scale} -> {release}")
        generate_release(release, studies=studies, seed=0, scale=scale)

    step(f"convert -> {out}")
    result.conversion = convert_release(release, out, workers=workers)
    if not result.conversion.ok:
        return result
    name, version = DEMO_MODEL
    step(f"predictions: a simulated AI model ({name} {version}) -> its SRs in {out}")
    model = simulate_model(release, workdir / "model", seed=0)
    result.predictions = import_predictions(out, name, version, model.boxes_csv,
                                            model.breasts_csv)
    if not result.predictions.ok:
        return result
    step("validate (dciodvfy + project checks)")
    result.validation = validate_output(out, workers=workers)
    if not result.validation.ok:
        return result

    step(f"PACS: native Orthanc on {data}")
    result.settings = settings = start_pacs(data)
    connection = Connection(settings.url, settings.credentials.username,
                            settings.credentials.password)
    step(f"load -> {settings.url}")
    result.loaded = load(out, connection, workers=workers)
    if not result.loaded.ok:
        return result
    step("verify over DICOMweb against the source release")
    result.verified = verify(release, out, connection, workers=workers)
    if not result.verified.ok:
        return result
    step("query")
    result.queries = run_queries(settings, connection)
    step("viewer: OHIF on the front door")
    try:
        result.viewer = start_viewer(settings, connection)
    except ServerError as exc:  # the archive works without it: say why, go on
        result.viewer_note = str(exc)
    step(f"evaluate {name} {version} against the radiologists over DICOMweb")
    front = Connection(settings.web_url, connection.username, connection.password)
    result.evaluation = evaluate_pacs(front, name, version, split="all", workers=workers)
    result.report = write_report(result.evaluation, workdir / "report")["report"]
    return result


def start_viewer(settings: ServerSettings, connection: Connection) -> tuple[str, str | None]:
    """The OHIF viewer on the front of this PACS: (study list URL, annotated exam URL)."""
    from server.front import viewer

    viewer.enable(settings.data_dir, viewer.install_ohif())
    return viewer.exam_urls(settings.web_url, connection)


def password_snippet() -> str:
    """Shell line that reads the generated password into $PASS."""
    path = shlex.quote(str(config_path()))
    return (f"PASS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))"
            f"[\"password\"])' {path})")
