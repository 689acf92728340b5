"""A generated bad-input corpus: each function takes a (copy of a) small synthetic release
and plants one defect, so no damaged file is committed.

``resum`` rewrites the SHA256SUMS.txt lines of changed files, as a release that was fixed
(or an author who changed a file on purpose) would; the functions that damage a file
leave its digest alone unless told otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from converter.release import BREAST_CSV, FINDING_CSV, METADATA_CSV, SUMS_FILE
from converter.repair import lenient_reading

Rows = list[list[str]]


def copy_release(src: Path, dest: Path) -> Path:
    """A private copy of a release that a test may damage."""
    shutil.copytree(src, dest)
    return dest


def read_rows(path: Path) -> Rows:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def write_rows(path: Path, rows: Rows) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def resum(root: Path, *relpaths: str) -> None:
    """Set the SHA256SUMS.txt digest of each of ``relpaths`` to the file's current one
    (drop the line when the file is gone)."""
    sums_path = root / SUMS_FILE
    sums = {}
    for line in sums_path.read_text().splitlines():
        digest, path = line.split(" ", 1)
        sums[path] = digest
    for rel in relpaths:
        if (root / rel).is_file():
            sums[rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        else:
            sums.pop(rel, None)
    lines = [f"{sums[p]} {p}\n" for p in sorted(sums, key=lambda p: p.encode())]
    sums_path.write_text("".join(lines))


def edit_csv(root: Path, name: str, change: Callable[[Rows], None], fix_sum: bool = True) -> None:
    """Apply ``change`` to the rows (header included) of CSV ``name``."""
    rows = read_rows(root / name)
    change(rows)
    write_rows(root / name, rows)
    if fix_sum:
        resum(root, name)


def box_lines(root: Path) -> list[int]:
    """CSV line numbers (header = 1) of the box rows of finding_annotations.csv."""
    return [n for n, row in enumerate(read_rows(root / FINDING_CSV)[1:], start=2) if row[11]]


def set_cell(root: Path, name: str, line: int, column: str, value: str,
             fix_sum: bool = True) -> str:
    """Set one cell (by CSV line and column name); returns the old value."""
    old: list[str] = []

    def change(rows: Rows) -> None:
        index = rows[0].index(column)
        old.append(rows[line - 1][index])
        rows[line - 1][index] = value

    edit_csv(root, name, change, fix_sum)
    return old[0]


def delete_line(root: Path, name: str, line: int, fix_sum: bool = True) -> list[str]:
    """Remove one CSV line; returns it."""
    removed: list[list[str]] = []
    edit_csv(root, name, lambda rows: removed.append(rows.pop(line - 1)), fix_sum)
    return removed[0]


def remove_box(root: Path, line: int) -> None:
    """Remove a box row; when it was the image's only row, add its No Finding row."""
    removed = delete_line(root, FINDING_CSV, line)

    def add_no_finding(rows: Rows) -> None:
        if not any(row[2] == removed[2] for row in rows[1:]):
            rows.append(removed[:9] + ["['No Finding']", "", "", "", "", "", removed[-1]])

    edit_csv(root, FINDING_CSV, add_no_finding)


def drop_image(root: Path, image_id: str) -> None:
    """Remove an image from the three CSVs (its file stays under images/)."""
    for name, column in ((BREAST_CSV, 2), (FINDING_CSV, 2), (METADATA_CSV, 0)):
        edit_csv(root, name, lambda rows: rows.__setitem__(
            slice(None), [rows[0]] + [r for r in rows[1:] if r[column] != image_id]))


def rewrite_header(root: Path, relpath: str, change: Callable[[Dataset], None],
                   fix_sum: bool = True) -> None:
    """Read a source image, apply ``change`` to its data set, save it in its own syntax."""
    path = root / relpath
    with lenient_reading():
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=False)
    if fix_sum:
        resum(root, relpath)


def extend_pixel_data(root: Path, relpath: str, extra: int) -> None:
    """Make Pixel Data ``extra`` bytes longer than Rows x Columns needs (digest updated)."""
    rewrite_header(root, relpath, lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0" * extra))


def append_bytes(root: Path, relpath: str, data: bytes, fix_sum: bool = True) -> None:
    """Bytes after the last element of the file (after the Pixel Data)."""
    with (root / relpath).open("ab") as handle:
        handle.write(data)
    if fix_sum:
        resum(root, relpath)


def trailing_padding(length: int = 8) -> bytes:
    """A Data Set Trailing Padding element (FFFC,FFFC) as explicit VR OB."""
    return struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, length) + b"\0" * length


def add_bom(root: Path, name: str) -> None:
    path = root / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    resum(root, name)


def make_latin1(root: Path, name: str, line: int, column: str) -> None:
    """Put a Latin-1 byte (not UTF-8) into one cell."""
    set_cell(root, name, line, column, "x")
    path = root / name
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b",x,", b",\xe9,", 1)
    path.write_bytes(b"\n".join(lines))
    resum(root, name)


def stray_image(root: Path, source_relpath: str) -> str:
    """A copy of an image under images/ that no CSV names; returns its path."""
    rel = "images/" + "e" * 32 + "/" + "f" * 32 + ".dicom"
    (root / rel).parent.mkdir(parents=True)
    shutil.copy(root / source_relpath, root / rel)
    return rel


def not_dicom(root: Path, relpath: str) -> None:
    """Replace an image by bytes that are not DICOM (digest updated)."""
    (root / relpath).write_bytes(b"this is not a DICOM file\n" * 100)
    resum(root, relpath)


# --- PHI planted in one source image ---------------------------------------------------------

PHI_STRINGS: dict[str, str] = {
    "InstitutionName": "PHI Saint Elsewhere Hospital",
    "InstitutionAddress": "PHI 12 Rue de la Paix",
    "ReferringPhysicianName": "PHIDoctor^Referring",
    "PerformingPhysicianName": "PHIDoctor^Performing",
    "OperatorsName": "PHIOperator^Olga",
    "DeviceSerialNumber": "PHISN-778899",
    "OtherPatientIDs": "PHI-OTHER-ID-4242",
    "PatientAddress": "PHI 221B Baker Street",
    "PatientTelephoneNumbers": "PHI+44-20-7946-0000",
    "ImageComments": "PHI patient anxious, called husband",
    "StudyComments": "PHI follow-up of lump found 2019",
    "PatientName": "PHIDoe^Jane",
    "PatientID": "PHI-MRN-123456",
    "AccessionNumber": "PHIACC9876",
    "StationName": "PHISTATION7",
    "InstitutionalDepartmentName": "PHI Radiology West",
    "PhysiciansOfRecord": "PHIDoctor^Record",
    "PatientMotherBirthName": "PHIMother^Maiden",
    "AdditionalPatientHistory": "PHI history of breast cancer in family",
    "ProtocolName": "PHI screening protocol Jane",
    "SeriesDescription": "PHI series for Jane Doe",
    "StudyID": "PHISTUDY55",
    "PatientComments": "PHI prefers afternoon appointments",
    "EthnicGroup": "PHIETHNIC",
}
PHI_DATES: dict[str, str] = {
    "PatientBirthDate": "19610417",
    "SeriesDate": "20190305",
    "AcquisitionDate": "20190306",
    "ContentDate": "20190307",
    "StudyDate": "20190308",
}
PHI_TIMES: dict[str, str] = {"SeriesTime": "101112", "AcquisitionTime": "101213"}
PRIVATE_CREATOR = "PHI ACME PRIVATE"
PRIVATE_VALUE = "PHI private secret value"
ORPHAN_PRIVATE_VALUE = "PHI orphan private value"


def planted_values() -> list[str]:
    """Every string planted by :func:`plant_phi` (to search the outputs for)."""
    return [*PHI_STRINGS.values(), *PHI_DATES.values(), *PHI_TIMES.values(), PRIVATE_CREATOR,
            PRIVATE_VALUE, ORPHAN_PRIVATE_VALUE, "PHI-SEQ-ISSUER", "PHI-REQ-PROC-77"]


def _plant(ds: Dataset) -> None:
    for keyword, value in {**PHI_STRINGS, **PHI_DATES, **PHI_TIMES}.items():
        setattr(ds, keyword, value)
    other = Dataset()
    other.PatientID = "PHI-SEQ-ID-1"
    other.IssuerOfPatientID = "PHI-SEQ-ISSUER"
    ds.OtherPatientIDsSequence = [other]
    request = Dataset()
    request.RequestedProcedureID = "PHI-REQ-PROC-77"
    ds.RequestAttributesSequence = [request]
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    ds.add_new(0x00111001, "LO", ORPHAN_PRIVATE_VALUE)  # no creator for (0011,10xx)


def plant_phi(root: Path, relpath: str) -> list[str]:
    """Plant 31 PHI attributes, a private block and a private element without a creator in
    one source image (digest updated); returns the planted top-level keywords/tags."""
    rewrite_header(root, relpath, _plant)
    keywords = [*PHI_STRINGS, *PHI_DATES, *PHI_TIMES, "OtherPatientIDsSequence",
                "RequestAttributesSequence"]
    return keywords + ["(0009,0010)", "(0009,1001)", "(0011,1001)"]
