"""The archive at size: the queries viewers and researchers send, timed against the index.

Usage: python benchmarks/archive_queries.py [--studies 1000] [--repeat 5] [--workdir DIR]
           [--index sqlite|postgresql] [--nodes N] [--quick]

Synthesizes a release (scale 32: small pixels, the full object count: 4 MG + 1 SR + ~1 SEG
per exam), converts it, starts the whole PACS as ``serve --background`` does (supervisor,
the default Orthanc build, the chosen index and nodes, the front door) with a read-only
account, and loads it with ``load``, then runs each query of issue 7's table ``--repeat``
times: C-FIND through pynetdicom and dcmtk's findscu, QIDO-RS through dicomweb-client as the
read-only account against the front door (what ``serve`` prints as its DICOMweb URL) and, for
comparison, against Orthanc's own DICOMweb plugin as the admin. Each figure is
printed with its p50 and p95 and, as the baseline measured in the same run, Orthanc's own
index answering the same question (REST ``POST /tools/find``): the ratio says how far the
protocol path is from what the index can do. Also printed: the load against a raw parallel
``POST /instances`` of the same files into a fresh PACS of the same configuration, and a
concurrency run on the front's ``/dicom-web/studies`` as the account: ``wrk -c64 -d30s``
(Debian's ``wrk``) when installed, else 64 Python threads for 30 s, with the latencies' p50,
p99, errors and timeouts.
``--quick``: 1,000 exams, 3 repeats (about 5 minutes on 2 cores). Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converter.manifest import read_manifest  # noqa: E402
from converter.pipeline import convert_release  # noqa: E402
from converter.synth import generate_release  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402
from dicomweb_client.session_utils import create_session_from_auth  # noqa: E402
from requests.auth import HTTPBasicAuth  # noqa: E402

from server.client import Connection, OrthancClient  # noqa: E402
from server.pacs import accounts, engine, orthanc, processes  # noqa: E402
from server.pacs.settings import Credentials, Modality, ServerSettings  # noqa: E402
from server.transfer.load import load  # noqa: E402

BENCH_AET = "BENCH"
ADMIN = Credentials("bench", "bench-password-1")
READER = accounts.Account("reader", "reader-password-1", accounts.READ)


def _settings(data: Path, index: str = "sqlite", nodes: int = 1) -> ServerSettings:
    return ServerSettings(data_dir=data, credentials=ADMIN,
                          http_port=processes.free_ports(nodes),
                          dicom_port=processes.free_ports(nodes),
                          web_port=processes.free_port(), index=index, nodes=nodes,
                          modalities=(Modality(BENCH_AET, "127.0.0.1", processes.free_port()),))


def _start(settings: ServerSettings) -> None:
    """The whole PACS in the background, as ``serve --background``, with :data:`READER`."""
    accounts.add(settings.data_dir, READER, admin=ADMIN.username)
    engine.start_background(settings)


def _timed(run: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """(p50 s, p95 s, answers) of ``repeat`` runs."""
    times, answers = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        answers = run()
        times.append(time.perf_counter() - start)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, answers


def _cfind(port: int, aet: str, level: str, keys: dict[str, str]) -> Callable[[], int]:
    def run() -> int:
        ae = AE(ae_title=BENCH_AET)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        query = Dataset()
        query.QueryRetrieveLevel = level
        for key, value in keys.items():
            setattr(query, key, value)
        assoc = ae.associate("127.0.0.1", port, ae_title=aet)
        found = sum(1 for status, ds in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind) if ds is not None)
        assoc.release()
        return found
    return run


def _findscu(port: int, aet: str, level: str, keys: dict[str, str]) -> Callable[[], int]:
    args = ["/usr/bin/findscu", "-S", "-aet", BENCH_AET, "-aec", aet, "-to", "600",
            "127.0.0.1", str(port), "-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value else key]

    def run() -> int:
        out = subprocess.run(args + ["-v"], capture_output=True, text=True, check=False,
                             env=DCMTK_ENV)
        return (out.stdout + out.stderr).count("Find Response:") - 1
    return run


def _qido(client: DICOMwebClient, level: str, **search: object) -> Callable[[], int]:
    method = {"studies": client.search_for_studies, "series": client.search_for_series,
              "instances": client.search_for_instances}[level]
    return lambda: len(method(**search))


# dcmtk clients run with TCP_NODELAY=1 too (Debian's DCMTK keeps Nagle on without it).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _echo(port: int, aet: str) -> Callable[[], int]:
    args = ["/usr/bin/echoscu", "-aet", BENCH_AET, "-aec", aet, "127.0.0.1", str(port)]
    return lambda: int(subprocess.run(args, capture_output=True, check=False,
                                      env=DCMTK_ENV).returncode == 0)


def _pyecho(port: int, aet: str) -> Callable[[], int]:
    def run() -> int:
        ae = AE(ae_title=BENCH_AET)
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title=aet)
        ok = assoc.send_c_echo().Status == 0
        assoc.release()
        return int(ok)
    return run


def _find(client: OrthancClient, level: str, query: dict[str, str],
          limit: int | None = None) -> Callable[[], int]:
    return lambda: len(client.find(level, query, expand=True, limit=limit))


def _queries(settings: ServerSettings, study_uid: str,
             patient_id: str) -> list[tuple[str, Callable[[], int], Callable[[], int]]]:
    """(name, query, baseline) of each row of the table."""
    admin = HTTPBasicAuth(ADMIN.username, ADMIN.password)
    gateway = DICOMwebClient(f"{settings.web_url}/dicom-web", session=create_session_from_auth(
        HTTPBasicAuth(READER.name, READER.password)))
    plugin = DICOMwebClient(settings.dicomweb_url, session=create_session_from_auth(admin))
    client = OrthancClient.connect(orthanc.admin_connection(settings))
    port, aet = settings.dicom_port, settings.aet
    test_split = {"StudyDescription": "VinDr-Mammo-test"}
    left_cc = {"ImageLaterality": "L", "ViewPosition": "CC"}
    rows = [
        ("C-ECHO (pynetdicom; baseline: dcmtk echoscu)", _pyecho(port, aet), _echo(port, aet)),
        ("C-FIND STUDY by PatientID (pynetdicom)",
         _cfind(port, aet, "STUDY", {"PatientID": patient_id, "StudyInstanceUID": ""}),
         _find(client, "Study", {"PatientID": patient_id})),
        ("QIDO /studies?PatientID=",
         _qido(gateway, "studies", search_filters={"PatientID": patient_id}),
         _find(client, "Study", {"PatientID": patient_id})),
        ("QIDO /studies?StudyInstanceUID=",
         _qido(gateway, "studies", search_filters={"StudyInstanceUID": study_uid}),
         _find(client, "Study", {"StudyInstanceUID": study_uid})),
        ("QIDO /studies?limit=101 (OHIF's first page)",
         _qido(gateway, "studies", limit=101, offset=0, fields=["00081030", "00080060"]),
         _find(client, "Study", {}, limit=101)),
        ("QIDO studies of the test split",
         _qido(gateway, "studies", search_filters=test_split),
         _find(client, "Study", test_split)),
        ("C-FIND studies of the test split (pynetdicom)",
         _cfind(port, aet, "STUDY", {**test_split, "StudyInstanceUID": ""}),
         _find(client, "Study", test_split)),
        ("C-FIND IMAGE all L CC (pynetdicom)",
         _cfind(port, aet, "IMAGE", {**left_cc, "SOPInstanceUID": ""}),
         _find(client, "Instance", left_cc)),
        ("C-FIND IMAGE all L CC (findscu)",
         _findscu(port, aet, "IMAGE", {**left_cc, "SOPInstanceUID": ""}),
         _find(client, "Instance", left_cc)),
        ("QIDO /instances?ImageLaterality=L&ViewPosition=CC",
         _qido(gateway, "instances", search_filters=left_cc),
         _find(client, "Instance", left_cc)),
        ("QIDO /series?Modality=SR",
         _qido(gateway, "series", search_filters={"Modality": "SR"}),
         _find(client, "Series", {"Modality": "SR"})),
    ]
    plugin_rows = [
        ("  same, Orthanc's plugin: test split",
         _qido(plugin, "studies", search_filters=test_split),
         _find(client, "Study", test_split)),
        ("  same, Orthanc's plugin: all L CC",
         _qido(plugin, "instances", search_filters=left_cc),
         _find(client, "Instance", left_cc)),
        ("  same, Orthanc's plugin: SR series",
         _qido(plugin, "series", search_filters={"Modality": "SR"}),
         _find(client, "Series", {"Modality": "SR"})),
    ]
    return rows + plugin_rows


def _raw_post(files: list[Path], urls: list[str], auth: tuple[str, str], workers: int) -> float:
    """Seconds for a raw parallel POST /instances of ``files`` (keep-alive per thread,
    threads spread over the nodes at ``urls``)."""
    import threading

    local = threading.local()
    lock, turn = threading.Lock(), itertools.count()

    def post(path: Path) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.auth = auth
            with lock:
                local.url = urls[next(turn) % len(urls)]
        local.session.post(local.url + "/instances", data=path.read_bytes(),
                           headers={"Content-Type": "application/dicom"}).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(post, files))
    return time.perf_counter() - start


def _concurrency(url: str, connections: int = 64, seconds: int = 30) -> str:
    """One line: ``connections`` clients on ``url`` (the front, as :data:`READER`) for
    ``seconds``: requests, p50, p99, errors, timeouts."""
    wrk = shutil.which("wrk")
    if wrk:
        token = base64.b64encode(f"{READER.name}:{READER.password}".encode()).decode()
        out = subprocess.run([wrk, f"-c{connections}", f"-t{min(connections, 4)}",
                              f"-d{seconds}s", "--latency", "--timeout", "10s",
                              "-H", f"Authorization: Basic {token}", url],
                             capture_output=True, text=True, check=False).stdout
        lines = {line.split()[0]: line.split()[1] for line in out.splitlines()
                 if re.match(r"\s+(50|99)%", line)}
        requests_line = next((line.strip() for line in out.splitlines() if "requests in" in line), "")
        errors = next((line.strip() for line in out.splitlines() if "Socket errors" in line),
                      "no socket errors")
        non2xx = next((line.strip() for line in out.splitlines() if "Non-2xx" in line),
                      "no non-2xx answers")
        return (f"wrk -c{connections} -d{seconds}s: {requests_line}; p50 {lines.get('50%')}, "
                f"p99 {lines.get('99%')}; {errors}; {non2xx}")
    latencies: list[float] = []
    errors = timeouts = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors, timeouts
        session = requests.Session()
        session.auth = (READER.name, READER.password)
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                ok = session.get(url, timeout=10).status_code == 200
            except requests.Timeout:
                with lock:
                    timeouts += 1
                continue
            except requests.RequestException:
                ok = False
            with lock:
                latencies.append(time.perf_counter() - start)
                errors += not ok

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return (f"{connections} Python threads, {seconds} s: {len(latencies)} requests; p50 "
            f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
            f"{errors} errors, {timeouts} timeouts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--index", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="1,000 exams, 3 repeats (about 5 minutes on 2 cores)")
    args = parser.parse_args()
    logging.getLogger("dicomweb_client").setLevel(logging.ERROR)  # our Warning headers
    if args.quick:
        args.studies, args.repeat = 1000, 3
    # /var/tmp, reachable by the account the PACS runs as when this runs as root.
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vindr-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    release, out = work / "release", work / "out"
    if not (release / "finding_annotations.csv").is_file():
        generate_release(release, studies=args.studies, seed=1, scale=32)
    start = time.perf_counter()
    converted = convert_release(release, out, workers=args.workers)
    print(f"convert: {converted.studies} exams, {sum(converted.objects.values())} objects, "
          f"{time.perf_counter() - start:.1f} s (resumed {converted.skipped_studies})")
    rows = read_manifest(out)
    shape = dict(index=args.index, nodes=args.nodes)

    raw_settings = _settings(work / f"orthanc-raw-{time.time_ns()}", **shape)
    _start(raw_settings)
    try:
        raw_s = _raw_post([out / r.path for r in rows], list(raw_settings.node_urls),
                          (ADMIN.username, ADMIN.password), max(args.workers, args.nodes))
    finally:
        engine.stop(raw_settings.data_dir)
    settings = _settings(work / f"orthanc-{time.time_ns()}", **shape)
    _start(settings)
    connection: Connection = orthanc.admin_connection(settings)
    try:
        start = time.perf_counter()
        loaded = load(out, connection, workers=max(args.workers, args.nodes),
                      nodes=settings.node_urls)
        load_s = time.perf_counter() - start
        system = OrthancClient.connect(connection).system()
        print(f"Orthanc {system.version}, {args.index} index, "
              f"{args.nodes} node(s), {len(rows)} instances; {platform.node()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"load: {load_s:.1f} s, raw parallel POST {raw_s:.1f} s, "
              f"ratio {raw_s / load_s:.2f} x raw ({'ok' if loaded.ok else 'INCOMPLETE'})")
        mg = next(r for r in rows if r.kind == "MG")
        print(f"{'query':52} {'answers':>8} {'first s':>8} {'p50 s':>8} {'p95 s':>8} "
              f"{'index p50 s':>12} {'x index':>8}")
        for name, query, baseline in _queries(settings, mg.study_uid, f"VINDR-{mg.study_id}"):
            # the first run: a new connection, and for QIDO through the front the index's
            # own answer (repeats of the same search come from the front's answer cache)
            first, _, _ = _timed(query, 1)
            p50, p95, answers = _timed(query, args.repeat)
            b50, _, _ = _timed(baseline, args.repeat)
            print(f"{name:52} {answers:>8} {first:>8.3f} {p50:>8.3f} {p95:>8.3f} {b50:>12.3f} "
                  f"{p50 / b50 if b50 else float('nan'):>8.1f}", flush=True)
        for path in ("/dicom-web/studies", "/dicom-web/studies?limit=101&offset=0"):
            print(f"front door, {path} as a read-only account: "
                  + _concurrency(f"{settings.web_url}{path}"), flush=True)
    finally:
        engine.stop(settings.data_dir)


if __name__ == "__main__":
    main()
