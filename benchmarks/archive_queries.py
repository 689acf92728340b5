"""The archive at size: the queries viewers and researchers send, timed against the index.

Usage: python benchmarks/archive_queries.py [--studies 1000] [--repeat 5] [--workdir DIR]

Synthesizes a release (scale 32: small pixels, the full object count: 4 MG + 1 SR + ~1 SEG
per exam), converts it, loads it into a fresh native Orthanc with the project's own
configuration, then runs each query of issue 7's table ``--repeat`` times: C-FIND through
pynetdicom and dcmtk's findscu, QIDO-RS over plain HTTP. Each figure is printed with its p50
and p95 and, as the baseline measured in the same run, Orthanc's own index answering the same
question (REST ``POST /tools/find``): the ratio says how far the protocol path is from what
the index can do. Also printed: the load against a raw parallel ``POST /instances`` of the
same files into a second fresh server. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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
from server import native  # noqa: E402
from server.client import OrthancClient  # noqa: E402
from server.load import load  # noqa: E402
from server.settings import Credentials, Modality, ServerSettings  # noqa: E402

BENCH_AET = "BENCH"


def _settings(data: Path) -> ServerSettings:
    return ServerSettings(data_dir=data, credentials=Credentials("bench", "bench-password-1"),
                          http_port=native.free_port(), dicom_port=native.free_port(),
                          modalities=(Modality(BENCH_AET, "127.0.0.1", native.free_port()),))


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
        out = subprocess.run(args + ["-v"], capture_output=True, text=True, check=False)
        return (out.stdout + out.stderr).count("Find Response:") - 1
    return run


def _qido(session: requests.Session, url: str) -> Callable[[], int]:
    def run() -> int:
        answer = session.get(url, timeout=3600)
        answer.raise_for_status()
        return len(answer.json())
    return run


def _find(client: OrthancClient, level: str, query: dict[str, str],
          limit: int | None = None) -> Callable[[], int]:
    return lambda: len(client.find(level, query, expand=True, limit=limit))


def _queries(server: native.NativeServer, settings: ServerSettings, study_uid: str,
             patient_id: str) -> list[tuple[str, Callable[[], int], Callable[[], int]]]:
    """(name, query, baseline) of each row of the table."""
    web = settings.url + "/dicom-web"
    session = server.connection.session()
    client = OrthancClient.connect(server.connection)
    port, aet = settings.dicom_port, settings.aet
    return [
        ("C-FIND STUDY by PatientID (pynetdicom)",
         _cfind(port, aet, "STUDY", {"PatientID": patient_id, "StudyInstanceUID": ""}),
         _find(client, "Study", {"PatientID": patient_id})),
        ("QIDO /studies?PatientID=", _qido(session, f"{web}/studies?PatientID={patient_id}"),
         _find(client, "Study", {"PatientID": patient_id})),
        ("QIDO /studies?StudyInstanceUID=",
         _qido(session, f"{web}/studies?StudyInstanceUID={study_uid}"),
         _find(client, "Study", {"StudyInstanceUID": study_uid})),
        ("QIDO /studies?limit=101 (OHIF's first page)",
         _qido(session, f"{web}/studies?limit=101&offset=0&includefield=00081030"
                        "&includefield=00080060"),
         _find(client, "Study", {}, limit=101)),
        ("QIDO studies of the test split",
         _qido(session, f"{web}/studies?StudyDescription=VinDr-Mammo-test"),
         _find(client, "Study", {"StudyDescription": "VinDr-Mammo-test"})),
        ("C-FIND studies of the test split (pynetdicom)",
         _cfind(port, aet, "STUDY", {"StudyDescription": "VinDr-Mammo-test",
                                     "StudyInstanceUID": ""}),
         _find(client, "Study", {"StudyDescription": "VinDr-Mammo-test"})),
        ("C-FIND IMAGE all L CC (findscu)",
         _findscu(port, aet, "IMAGE", {"ImageLaterality": "L", "ViewPosition": "CC",
                                        "SOPInstanceUID": ""}),
         _find(client, "Instance", {"ImageLaterality": "L", "ViewPosition": "CC"})),
        ("QIDO /instances?ImageLaterality=L&ViewPosition=CC",
         _qido(session, f"{web}/instances?ImageLaterality=L&ViewPosition=CC"),
         _find(client, "Instance", {"ImageLaterality": "L", "ViewPosition": "CC"})),
        ("QIDO /series?Modality=SR", _qido(session, f"{web}/series?Modality=SR"),
         _find(client, "Series", {"Modality": "SR"})),
    ]


def _raw_post(files: list[Path], url: str, auth: tuple[str, str], workers: int) -> float:
    """Seconds for a raw parallel POST /instances of ``files`` (keep-alive per thread)."""
    import threading

    local = threading.local()

    def post(path: Path) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.auth = auth
        local.session.post(url + "/instances", data=path.read_bytes(),
                           headers={"Content-Type": "application/dicom"}).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(post, files))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vindr-bench-"))
    release, out = work / "release", work / "out"
    if not (release / "finding_annotations.csv").is_file():
        generate_release(release, studies=args.studies, seed=1, scale=32)
    start = time.perf_counter()
    converted = convert_release(release, out, workers=args.workers)
    print(f"convert: {converted.studies} exams, {sum(converted.objects.values())} objects, "
          f"{time.perf_counter() - start:.1f} s (resumed {converted.skipped_studies})")
    rows = read_manifest(out)

    raw_settings = _settings(work / f"orthanc-raw-{time.time_ns()}")
    raw = native.start(raw_settings)
    try:
        raw_s = _raw_post([out / r.path for r in rows], raw_settings.url,
                          ("bench", "bench-password-1"), args.workers)
    finally:
        raw.stop()
    settings = _settings(work / f"orthanc-{time.time_ns()}")
    server = native.start(settings)
    try:
        start = time.perf_counter()
        loaded = load(out, server.connection, workers=args.workers)
        load_s = time.perf_counter() - start
        print(f"Orthanc {server.system.version}, SQLite index, {len(rows)} instances; "
              f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"load: {load_s:.1f} s, raw parallel POST {raw_s:.1f} s, "
              f"ratio {raw_s / load_s:.2f} x raw ({'ok' if loaded.ok else 'INCOMPLETE'})")
        mg = next(r for r in rows if r.kind == "MG")
        print(f"{'query':52} {'answers':>8} {'p50 s':>8} {'p95 s':>8} {'index p50 s':>12} "
              f"{'x index':>8}")
        for name, query, baseline in _queries(server, settings, mg.study_uid,
                                              f"VINDR-{mg.study_id}"):
            p50, p95, answers = _timed(query, args.repeat)
            b50, _, _ = _timed(baseline, args.repeat)
            print(f"{name:52} {answers:>8} {p50:>8.3f} {p95:>8.3f} {b50:>12.3f} "
                  f"{p50 / b50 if b50 else float('nan'):>8.1f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
