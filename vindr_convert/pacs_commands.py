"""The PACS commands of ``vindr-convert``: ``serve``, ``stop``, ``load``, ``verify``, ``demo``.

Each function only parses its arguments, calls the library (:mod:`server.engine`,
:mod:`server.load`, :mod:`server.verify`, :mod:`vindr_convert.demo`) and prints. Wire them
with :func:`register`.
"""

from __future__ import annotations

import enum
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from server.pacs.settings import (
    DEFAULT_AET,
    DEFAULT_DICOM_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_WEB_PORT,
    LOOPBACK,
)

from .console import err, fail, list_problems, progress_bar, reported_errors
from .console import out

if TYPE_CHECKING:
    from server.pacs.engine import ServerInfo
    from server.transfer.verify import VerifyResult

# Problem codes of `verify`, in the order its table lists them.
VERIFY_CHECKS = {
    "pacs-study-missing": "studies missing",
    "pacs-count-mismatch": "instance counts that differ (study, kind)",
    "pacs-instance-missing": "instances missing",
    "pacs-patient-id": "studies with a wrong PatientID",
    "pacs-patient-shared": "patients shared between studies",
    "pacs-retrieve-failed": "objects that could not be retrieved",
    "pacs-sr-seg": "SR/SEG disagreements as served",
    "pacs-annotations": "SRs that cannot be read back",
    "pacs-content-differs": "PACS copies differing from their file",
    "local-file-differs": "local files differing from the manifest",
    "export-row-missing": "release CSV rows not rebuilt from the PACS",
    "export-row-extra": "rebuilt CSV rows not in the release",
}
class EngineChoice(str, enum.Enum):
    """Where Orthanc runs."""

    native = "native"
    docker = "docker"


class OrthancChoice(str, enum.Enum):
    """Which Orthanc build the native engine runs."""

    auto = "auto"
    system = "system"
    debian13 = "debian13"


class IndexChoice(str, enum.Enum):
    """Orthanc's index."""

    sqlite = "sqlite"
    postgresql = "postgresql"


class MethodChoice(str, enum.Enum):
    """How ``load`` sends objects."""

    rest = "rest"
    stow = "stow"
    cstore = "cstore"


def _print_ready(info: ServerInfo) -> None:
    nodes = len(info.node_urls)
    shape = f"{info.index} index" + (f", {nodes} nodes" if nodes > 1 else "")
    reach = "every interface (--remote)" if info.remote else "this machine only"
    out.print(f"[bold green]PACS ready[/] ({info.engine}, Orthanc {info.version}, {shape}, "
              f"data {info.data_dir})")
    out.print(f"  Front door  {info.web_url}/  DICOMweb {info.web_url}/dicom-web/ and the "
              f"viewer, for every account; {reach}")
    out.print(f"  Orthanc     {info.url}/  the admin's REST API and Explorer"
              + (" (node 1; node N on the next ports)" if nodes > 1 else "")
              + "; this machine only")
    out.print(f"  DICOM       AET {info.aet}, port {info.dicom_port}"
              + (f"..{info.dicom_port + nodes - 1}" if nodes > 1 else ""))
    out.print(f"  Admin       user {info.username!r}, password in {info.credentials_file}")
    out.print("  Accounts    `vindr-convert users add NAME --password-stdin` (read-only; "
              "--write to store)" + (f"; audit log {info.audit_log}" if info.audit_log else ""))
    for note in info.notes:
        out.print(f"  Note: {note}", highlight=False)


def serve(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Data folder (default: ~/.local/share/vindr-dicom/orthanc)."
    ),
    http_port: int = typer.Option(DEFAULT_HTTP_PORT, "--http-port", help="REST/DICOMweb port."),
    dicom_port: int = typer.Option(DEFAULT_DICOM_PORT, "--dicom-port", help="DICOM port."),
    aet: str = typer.Option(DEFAULT_AET, "--aet", help="Orthanc's AE title."),
    engine_choice: EngineChoice = typer.Option(
        EngineChoice.native, "--engine", help="Debian's Orthanc or docker compose."
    ),
    modality: list[str] = typer.Option(
        [], "--modality", help="Allowed DICOM node AET@HOST:PORT (repeat)."
    ),
    remote: bool = typer.Option(
        False, "--remote", help="Serve the front door (DICOMweb, viewer) beyond this machine."),
    hostname: list[str] = typer.Option(
        [], "--hostname", metavar="NAME",
        help="A name clients reach the front door by, besides this machine's (repeat); "
        "requests naming another Host are refused."),
    listen: str = typer.Option(
        LOOPBACK, "--listen", metavar="ADDRESS",
        help="Accept DICOM peers beyond this machine (0.0.0.0 or one of its addresses); "
        "each --modality is still checked by AE title and IP.",
    ),
    background: bool = typer.Option(
        False, "--background", help="Start and return (stop with `stop`)."
    ),
    orthanc: OrthancChoice = typer.Option(
        OrthancChoice.auto, "--orthanc",
        help="Native Orthanc build: auto (the system's if >= 1.11, else Debian 13's from "
        "`install-orthanc`), system, or debian13.",
    ),
    index: IndexChoice = typer.Option(
        IndexChoice.sqlite, "--index",
        help="Orthanc's index: sqlite, or postgresql (a private PostgreSQL server in the "
        "data folder; for more than ~50,000 instances or several nodes).",
    ),
    nodes: int = typer.Option(
        1, "--nodes", min=1, help="Orthanc nodes sharing the index and storage "
        "(needs --index postgresql); node N on the HTTP and DICOM ports + N-1.",
    ),
    web_port: int = typer.Option(
        DEFAULT_WEB_PORT, "--web-port",
        help="The front door's port: DICOMweb (searches from the index) and the viewer, "
        "for every account, spread over the nodes.",
    ),
) -> None:
    """Run the Orthanc PACS (foreground until Ctrl-C, or --background).

    A supervisor starts the index, the node(s) and the front door, restarts a part that
    dies, and stops them all on Ctrl-C, SIGTERM or `vindr-convert stop`.
    """
    with reported_errors():
        from server.pacs import engine

        notes: list[str] = []
        settings = engine.make_settings(
            data,
            http_port=http_port,
            dicom_port=dicom_port,
            aet=aet,
            modalities=modality,
            remote_access=remote,
            engine=engine_choice.value,
            listen=listen,
            orthanc=orthanc.value,
            index=index.value,
            nodes=nodes,
            web_port=web_port,
            hostnames=hostname,
            notes=notes,
        )
        for note in notes:
            out.print(f"Note: {note}", highlight=False)
        code = engine.serve(settings, background=background, on_ready=_print_ready,
                            say=lambda line: err.print(f"[dim]{line}[/]", highlight=False))
    if code != 0:
        fail(f"the {engine_choice.value} server exited with code {code}")

def install_orthanc(
    root: Optional[Path] = typer.Option(
        None, "--root", help="Where (default: ~/.local/share/vindr-dicom/debian13-root)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even when already there."),
    if_needed: bool = typer.Option(
        False, "--if-needed", help="Do nothing when the system's Orthanc is >= 1.11."),
) -> None:
    """Get Debian 13's Orthanc 1.12 (a minimal Debian 13 root, debootstrap, ~40 s, 430 MB).

    For machines whose own Orthanc is older than 1.11 (Debian 12): `serve` then runs it by
    default. Needs debootstrap and root privileges (sudo) to build, none to run.
    """
    with reported_errors():
        from server.pacs import runtime

        if if_needed and not force:
            try:
                system = runtime.system_runtime()
            except runtime.ServerError:
                system = None
            if system is not None and system.indexes_extra_tags:
                out.print(f"the system's Orthanc {system.version} indexes every archive tag: "
                          "nothing to install")
                return
        if not force:
            try:
                found = runtime.root_runtime(root)
            except runtime.ServerError:
                found = None
            if found is not None:
                out.print(f"Orthanc {found.version} already in {found.root}")
                return
        where = root or runtime.default_root()
        out.print(f"building a Debian 13 root with Orthanc in {where} (debootstrap, ~1 min)")
        built = runtime.build_root(root)
    out.print(f"[bold green]Orthanc {built.version}[/] ready in {built.root}")


def stop(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Data folder (default: the last one served)."
    ),
) -> None:
    """Stop the PACS (every part of it), wherever `serve` runs."""
    with reported_errors():
        from server.pacs import engine

        stopped = engine.stop(data)
    if not stopped:
        fail("no PACS was running there")
    out.print("PACS stopped")


def status(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Data folder (default: the last one served)."
    ),
) -> None:
    """Say whether the PACS runs, part by part (exit 1 when a part is not up)."""
    with reported_errors():
        from server.pacs import engine

        health = engine.status(data)
    table = Table(title="PACS parts")
    for column in ("part", "state", "pid", "restarts", "last exit"):
        table.add_column(column)
    for part in health.parts:
        table.add_row(part.name, part.state, str(part.pid or ""), str(part.restarts),
                      part.last_exit)
    out.print(table)
    if health.problem:
        fail(health.problem)
    out.print("PACS up")


def load(
    output: Path = typer.Argument(..., help="Converted output folder (with manifest.csv)."),
    url: list[str] = typer.Option(
        [], "--url", metavar="URL",
        help="Orthanc URL; repeat it for several nodes of one cluster (default: "
        "every node in the credentials file).",
    ),
    user: Optional[str] = typer.Option(None, "--user", help="HTTP user."),
    password: Optional[str] = typer.Option(None, "--password", help="HTTP password."),
    method: MethodChoice = typer.Option(
        MethodChoice.rest, "--method", help="REST POST /instances, STOW-RS or C-STORE."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="Parallel connections (default: 2, and one per node).",
    ),
) -> None:
    """Send every object of a converted folder to the PACS, then check they are all there.

    A cluster is loaded through all its nodes; a node that goes down gets no more work.
    """
    with reported_errors():
        from server.transfer.load import load as load_output
        from server.userconfig import load_user_config, resolve_connection

        connection = resolve_connection(url[0] if url else None, user, password)
        if url:
            nodes = list(url[1:])  # explicit: those nodes only
        else:
            stored = load_user_config()
            nodes = list(stored.nodes or []) if stored is not None else []
        count = len({u.rstrip("/") for u in (connection.url, *nodes)})
        workers = workers or max(2, count)
        if count > 1:
            out.print(f"loading through {count} nodes, {workers} workers", highlight=False)
        with progress_bar("load") as progress:
            result = load_output(output, connection, nodes=nodes, method=method.value,
                                 workers=workers, progress=progress,
                                 watch=_watch_of(connection.url))
    for line in result.replaced:
        out.print(f"  {line}", highlight=False)
    if len(result.nodes) > 1:
        stored_by = ", ".join(f"{node} {result.stored_by_node.get(node, 0)}"
                              for node in result.nodes)
        out.print(f"{len(result.nodes)} nodes used, objects stored through each: {stored_by}",
                  highlight=False)
    for line in result.lost_nodes:
        out.print(f"  node lost during the load, its work went to the others: {line}",
                  highlight=False)
    out.print(
        f"{result.total} objects: {result.sent} sent, "
        f"{result.already_present} already present, "
        f"{len(result.replaced)} replaced, "
        f"{result.failed} failed, {result.missing} missing"
    )
    if not result.ok:
        list_problems(map(str, result.errors), len(result.errors))
        fail("load incomplete: re-run the same command to send what is missing")

def _watch_of(url: str):
    """A look at the health of the PACS ``url`` belongs to, when ``serve`` recorded it
    here (its supervisor's status file); None otherwise."""
    from server.pacs import supervisor
    from server.userconfig import load_user_config

    stored = load_user_config()
    if stored is None or not stored.data_dir or stored.engine != "native":
        return None
    ours = {u.rstrip("/") for u in [stored.url or "", *(stored.nodes or [])]}
    if url.rstrip("/") not in ours:
        return None
    data_dir = Path(stored.data_dir)
    return lambda: supervisor.health(data_dir).load_problem()


def verify(
    src: Path = typer.Argument(..., help="Original VinDr-Mammo release folder."),
    output: Path = typer.Argument(..., help="Converted output folder (with manifest.csv)."),
    url: Optional[str] = typer.Option(
        None, "--url", help="Orthanc URL (default: from the credentials file)."
    ),
    user: Optional[str] = typer.Option(None, "--user", help="HTTP user."),
    password: Optional[str] = typer.Option(None, "--password", help="HTTP password."),
    workers: int = typer.Option(2, "--workers", min=1, help="Studies fetched in parallel."),
) -> None:
    """Check over DICOMweb that the PACS serves every study of a converted folder."""
    with reported_errors():
        from server.userconfig import resolve_connection
        from server.transfer.verify import verify as verify_output

        connection = resolve_connection(url, user, password)
        with progress_bar("verify") as progress:
            result = verify_output(src, output, connection, workers=workers, progress=progress)
    _print_verify_table(result)
    if not result.ok:
        from server.transfer.verify import describe

        list_problems(map(describe, result.problems), len(result.problems))
        fail("the PACS does not match the converted folder")

def demo(
    workdir: Path = typer.Option(Path("vindr-demo"), "--workdir",
                                 help="Folder for the release, the output and the PACS."),
    studies: int = typer.Option(12, "--studies", min=1, help="Synthetic exams."),
    scale: float = typer.Option(8.0, "--scale", help="Image size divisor (1 = real)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Parallel workers."),
) -> None:
    """Synthesize a release, convert, validate, serve, load, verify and query it."""
    with reported_errors():
        from .demo import password_snippet, run_demo

        result = run_demo(workdir, studies=studies, scale=scale, workers=workers,
                          step=lambda text: out.print(f"[bold]==>[/] {text}"))
    _print_demo(result, password_snippet())
    if not result.ok:
        fail(f"the demo stopped early; see {workdir}/out/report.json and the lines above")


def view(
    data: Optional[Path] = typer.Option(
        None, "--data", help="The PACS's data folder (default: the last one served)."
    ),
    ohif: Optional[Path] = typer.Option(
        None, "--ohif", help="OHIF build folder (default: ~/.local/share/vindr-dicom/ohif/VERSION)."
    ),
    install: bool = typer.Option(False, "--install", help="Fetch the OHIF build (npm) and exit."),
    remove: bool = typer.Option(False, "--remove", help="Stop serving the viewer."),
) -> None:
    """Serve the OHIF web viewer from the PACS's front door, boxes drawn, and print its URL.

    Nothing more runs: the front serves OHIF's files after the browser logs in with an
    account (HTTP Basic), on the same port as the DICOMweb it reads.
    """
    with reported_errors():
        from server.front import viewer
        from server.pacs import engine
        from server.userconfig import load_user_config, resolve_connection

        data_dir = engine.stored_data_dir(data)
        if remove:
            out.print("viewer removed from the front" if viewer.disable(data_dir)
                      else "the front served no viewer")
            return
        with err.status("fetching the OHIF viewer (npm pack)..."):
            ohif_dir = viewer.install_ohif(ohif)
        if install:
            out.print(f"OHIF {viewer.OHIF_VERSION} in {ohif_dir}")
            return
        viewer.enable(data_dir, ohif_dir)
        stored = load_user_config()
        front = (stored.web_url if stored is not None and stored.web_url else None)
        if front is None:
            fail("no front door recorded: start the PACS with `vindr-convert serve`", 2)
        _print_viewer(front, resolve_connection())


def _print_viewer(address: str, connection) -> None:
    from server.front.viewer import exam_urls

    study_list, exam = exam_urls(address, connection)
    out.print(f"[bold green]viewer ready[/] (OHIF, on the front door; log in with an account)")
    out.print(f"  study list       {study_list}")
    if exam:
        out.print(f"  annotated exam   {exam}")


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``stop``, ``status``, ``load``, ``verify``, ``view``, ``demo`` and
    ``install-orthanc`` to ``app``."""
    for command in (serve, stop, status, load, verify, view, demo, install_orthanc):
        app.command()(command)


def _print_verify_table(result: VerifyResult) -> None:
    """Studies and instances checked, then the problems counted by kind."""
    table = Table(title="PACS against the converted folder and the source release")
    table.add_column("check")
    table.add_column("result", justify="right")
    table.add_row("studies checked", str(result.studies))
    table.add_row("instances in the manifest", str(result.instances))
    counts = Counter(problem.code for problem in result.problems)
    for code, label in VERIFY_CHECKS.items():
        table.add_row(label, str(counts.pop(code, 0)))
    for code, count in sorted(counts.items()):
        table.add_row(code, str(count))
    out.print(table)


def _print_demo(result, snippet: str) -> None:
    """The demo's figures, the queries it ran and how to run them by hand."""
    conversion, validation = result.conversion, result.validation
    if conversion is not None:
        out.print(f"converted {conversion.images} images of {conversion.studies} exams: "
                  f"{conversion.objects} ({conversion.errors} errors)")
    if result.predictions is not None:
        out.print(f"imported a simulated model: {result.predictions.studies} SRs, "
                  f"{result.predictions.boxes} boxes, {result.predictions.breasts} breasts")
    if validation is not None:
        errors = sum(s.dciodvfy_errors for s in validation.stats.values())
        out.print(f"validated {sum(s.objects for s in validation.stats.values())} objects: "
                  f"{errors} dciodvfy errors, {len(validation.issues)} problems")
    if result.loaded is not None:
        out.print(f"loaded {result.loaded.total} objects ({result.loaded.sent} sent, "
                  f"{result.loaded.already_present} already there, "
                  f"{result.loaded.missing} missing)")
    if result.verified is not None:
        out.print(f"verified {result.verified.studies} studies over DICOMweb: "
                  f"{len(result.verified.problems)} differences")
    if result.settings is None or not result.queries:
        return
    settings = result.settings
    out.print(f"\n[bold]PACS running[/]: front door {settings.web_url}/dicom-web/ (DICOMweb, "
              f"every account; searches from the index), admin's REST API "
              f"{settings.url}/app/explorer.html, AET {settings.aet} on port "
              f"{settings.dicom_port}")
    out.print("Queries run (paste the commands to run them yourself):")
    if any("$PASS" in how for _, how, _ in result.queries):
        out.print(f"  {snippet}")
    for what, how, answer in result.queries:
        out.print(f"  # {what}: {answer}")
        out.print(f"  {how}", highlight=False)
    if result.viewer is not None:
        study_list, exam = result.viewer
        out.print(f"\n[bold]Viewer (OHIF)[/]: {study_list}")
        if exam:
            out.print(f"  an annotated exam, four views with the boxes: {exam}")
        out.print("  (log in with an account: `vindr-convert users add NAME --password-stdin`, "
                  "or the admin's, whose password is in the credentials file)")
    elif result.viewer_note:
        out.print(f"\nNo viewer: {result.viewer_note}")
    if result.evaluation is not None:
        from .evaluation_commands import print_summary

        out.print("\n[bold]A simulated AI model against the radiologists[/] (`vindr-convert "
                  "evaluate`):")
        print_summary(result.evaluation.metrics())
        out.print(f"  report: {result.report}")
    out.print("Stop the PACS with: vindr-convert stop")
