"""Fidelity of the synthetic VinDr-Mammo release (converter.synth) to the real one.

Every expectation here comes from shared/reference/vindr-release.md; the CSVs are parsed
with the csv module and the DICOM files read back with pydicom, independently of the
generator's own tables where the reference gives the value.
"""

from __future__ import annotations

import ast
import csv
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.multival import MultiValue

from converter.codes import FINDING_LABELS
from converter.synth import CHEST_WALL_LEFT, STUDY_ERRATA, generate_release
from converter.naming import is_hex_id, is_valid_uid

STUDIES = 30
SEED = 7
SCALE = 16.0

BREAST_HEADER = (
    "study_id,series_id,image_id,laterality,view_position,height,width,"
    "breast_birads,breast_density,split"
)
FINDING_HEADER = (
    "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,"
    "breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
)
METADATA_HEADER = (
    "SOP Instance UID,Series Instance UID,SOP Instance UID,Patient's Age,View Position,"
    "Image Laterality,Photometric Interpretation,Rows,Columns,Imager Pixel Spacing,"
    "Pixel Spacing,Pixel Padding Value,Pixel Padding Range Limit,Window Center,"
    "Window Width,Rescale Intercept,Rescale Slope,Rescale Type,"
    "Window Center & Width Explanation,Manufacturer,Manufacturer's Model Name"
)
METADATA_KEYWORDS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientAge",
    "ViewPosition",
    "ImageLaterality",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "ImagerPixelSpacing",
    "PixelSpacing",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "WindowCenterWidthExplanation",
    "Manufacturer",
    "ManufacturerModelName",
)
# Vendor -> (Rows, Columns) at scale 1 (None: IMS widths vary), photometric.
VENDORS = {
    "SIEMENS": ((3518, 2800), "MONOCHROME2"),
    "Planmed": ((2812, 2012), "MONOCHROME1"),
    "IMS s.r.l.": ((3580, None), "MONOCHROME2"),
    "IMS GIOTTO S.p.A.": ((3580, None), "MONOCHROME2"),
}
NO_BIRADS_LABELS = {
    "Suspicious Lymph Node",
    "Skin Thickening",
    "Skin Retraction",
    "Nipple Retraction",
}
TYPE2_MISSING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "InstanceNumber",
    "PatientOrientation",
)
TYPE1_MISSING = (
    "ImageType",
    "BurnedInAnnotation",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "OrganExposed",
    "ViewCodeSequence",
    "AnatomicRegionSequence",
    "PositionerType",
    "DetectorType",
    "AcquisitionContextSequence",
    "SpecificCharacterSet",
    "SOPClassUID",
)


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def lenient_reading():
    """The files hold hex digests in UI elements (N1): read them without warnings."""
    settings = pydicom_config.settings
    saved = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom_config.IGNORE
    yield
    settings.reading_validation_mode = saved


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "vindr-mammo"
    calls: list[tuple[int, int]] = []
    summary = generate_release(root, STUDIES, seed=SEED, scale=SCALE,
                               progress=lambda done, total: calls.append((done, total)))
    return root, summary, calls


@pytest.fixture(scope="module")
def root(generated) -> Path:
    return generated[0]


@pytest.fixture(scope="module")
def summary(generated):
    return generated[1]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]], list[list[str]]]:
    """(header, rows as dicts, rows as lists)."""
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    header, body = table[0], table[1:]
    return header, [dict(zip(header, row)) for row in body], body


@pytest.fixture(scope="module")
def breast(root):
    return read_csv(root / "breast-level_annotations.csv")[1]


@pytest.fixture(scope="module")
def findings(root):
    return read_csv(root / "finding_annotations.csv")[1]


@pytest.fixture(scope="module")
def metadata(root):
    return read_csv(root / "metadata.csv")[2]


@pytest.fixture(scope="module")
def datasets(root, breast):
    """image_id -> dataset read back from its file."""
    return {
        row["image_id"]: pydicom.dcmread(
            root / "images" / row["study_id"] / f"{row['image_id']}.dicom"
        )
        for row in breast
    }


@pytest.fixture(scope="module")
def by_image(breast):
    return {row["image_id"]: row for row in breast}


def box_values(row: dict[str, str]) -> tuple[float, float, float, float]:
    xmin, ymin, xmax, ymax = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    return xmin, ymin, xmax, ymax


def birads_number(text: str) -> int:
    match = re.fullmatch(r"BI-RADS ([1-5])", text)
    assert match, text
    return int(match.group(1))


def brightness(ds) -> tuple[np.ndarray, int]:
    """Pixels as brightness (MONOCHROME1 inverted) and the maximum stored value."""
    maxval = (1 << ds.BitsStored) - 1
    pixels = ds.pixel_array.astype(np.int64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = maxval - pixels
    return pixels, maxval


# --- Layout, files, checksums ----------------------------------------------------------------


def test_layout_has_four_dicom_files_per_study(root):
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [
            "images",
            "breast-level_annotations.csv",
            "finding_annotations.csv",
            "metadata.csv",
            "LICENSE.txt",
            "SHA256SUMS.txt",
        ]
    )
    studies = list((root / "images").iterdir())
    assert len(studies) == STUDIES
    for study in studies:
        assert is_hex_id(study.name)
        files = list(study.iterdir())
        assert len(files) == 4
        for f in files:
            assert f.suffix == ".dicom" and is_hex_id(f.stem)
            head = f.read_bytes()[:132]
            assert head[:128] == b"\x00" * 128 and head[128:] == b"DICM"


def test_license_is_a_synthetic_notice(root):
    text = (root / "LICENSE.txt").read_text()
    assert "SYNTHETIC" in text and "no patient data" in text


def test_checksums_accepted_by_sha256sum(root):
    binary = shutil.which("sha256sum")
    assert binary, "coreutils sha256sum is needed"
    result = subprocess.run(
        [binary, "-c", "--strict", "SHA256SUMS.txt"],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    raw = (root / "SHA256SUMS.txt").read_bytes()
    lines = raw.decode().splitlines()
    assert raw.endswith(b"\n") and b"\r" not in raw
    assert all(re.fullmatch(r"[0-9a-f]{64} [^ *].*", line) for line in lines)
    paths = [line[65:] for line in lines]
    assert paths == sorted(paths, key=lambda p: p.encode())
    every = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert sorted(paths) == [p for p in every if p != "SHA256SUMS.txt"]
    assert len(paths) == STUDIES * 4 + 4


def test_same_arguments_give_identical_bytes(root, tmp_path):
    again = tmp_path / "again"
    generate_release(again, STUDIES, seed=SEED, scale=SCALE)
    first = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    second = {str(p.relative_to(again)): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_other_seed_gives_other_ids(breast, tmp_path):
    generate_release(tmp_path / "other", 2, seed=SEED + 1, scale=64)
    _, rows, _ = read_csv(tmp_path / "other" / "breast-level_annotations.csv")
    assert not {r["image_id"] for r in rows} & {r["image_id"] for r in breast}


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "stale.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_release(tmp_path, 1, scale=64)


def test_progress_counts_every_image(generated):
    _, summary, calls = generated
    done = [d for d, _ in calls]
    assert calls and done == sorted(done) and len(set(done)) == len(done)
    assert {t for _, t in calls} == {summary.images}
    assert done[-1] == summary.images == STUDIES * 4


# --- CSV formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,header",
    [
        ("breast-level_annotations.csv", BREAST_HEADER),
        ("finding_annotations.csv", FINDING_HEADER),
        ("metadata.csv", METADATA_HEADER),
    ],
)
def test_csv_header_and_encoding(root, name, header):
    raw = (root / name).read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert b"\r" not in raw and raw.endswith(b"\n")
    raw.decode("utf-8")
    assert raw.split(b"\n", 1)[0].decode() == header


def test_breast_level_rows(breast, datasets):
    assert len(breast) == STUDIES * 4
    assert len({r["image_id"] for r in breast}) == len(breast)
    order = [r["study_id"] for r in breast]
    runs = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
    assert len(runs) == STUDIES == len(set(runs))  # 4 contiguous rows per study
    assert runs != sorted(runs)  # studies are not sorted
    view_orders = Counter(
        tuple((r["laterality"], r["view_position"]) for r in breast if r["study_id"] == s)
        for s in runs
    )
    standard = [
        order
        for order in view_orders
        if sorted(order) == [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
    ]
    assert len(standard) >= 3  # view order inside a study varies
    per_breast = defaultdict(set)
    splits = defaultdict(set)
    for r in breast:
        assert r["laterality"] in ("L", "R") and r["view_position"] in ("CC", "MLO")
        assert re.fullmatch(r"BI-RADS [1-5]", r["breast_birads"])
        assert re.fullmatch(r"DENSITY [A-D]", r["breast_density"])
        per_breast[(r["study_id"], r["laterality"])].add((r["breast_birads"], r["breast_density"]))
        splits[r["study_id"]].add(r["split"])
        ds = datasets[r["image_id"]]
        assert (int(r["height"]), int(r["width"])) == (ds.Rows, ds.Columns)
        assert (r["laterality"], r["view_position"]) == (ds.ImageLaterality, ds.ViewPosition)
    assert all(len(v) == 1 for v in per_breast.values())
    assert any(
        next(iter(per_breast[(s, "L")]))[1] != next(iter(per_breast[(s, "R")]))[1] for s in runs
    ), "no study with different densities left/right"
    assert all(len(v) == 1 for v in splits.values())
    study_splits = Counter(next(iter(v)) for v in splits.values())
    assert set(study_splits) == {"training", "test"}
    assert study_splits["training"] > study_splits["test"]


def test_finding_rows_cover_every_image(findings, breast, by_image):
    assert {r["image_id"] for r in findings} == {r["image_id"] for r in breast}
    for r in findings:
        b = by_image[r["image_id"]]
        for key in (
            "study_id",
            "series_id",
            "laterality",
            "view_position",
            "height",
            "width",
            "breast_birads",
            "breast_density",
            "split",
        ):
            assert r[key] == b[key]
    no_finding = [i for i, r in enumerate(findings) if r["finding_categories"] == "['No Finding']"]
    boxes = [i for i, r in enumerate(findings) if r["finding_categories"] != "['No Finding']"]
    assert boxes and no_finding
    assert max(boxes) < min(no_finding)  # box rows first
    rows_per_image = Counter(r["image_id"] for r in findings)
    for i in no_finding:
        r = findings[i]
        assert [r[k] for k in ("finding_birads", "xmin", "ymin", "xmax", "ymax")] == [""] * 5
        assert rows_per_image[r["image_id"]] == 1


def test_no_finding_row_text(root):
    text = (root / "finding_annotations.csv").read_text()
    assert re.search(r",DENSITY [A-D],\['No Finding'\],,,,,,(training|test)\n", text)


def test_finding_categories(root, findings):
    raw_lines = (root / "finding_annotations.csv").read_text().splitlines()[1:]
    used: set[str] = set()
    sizes = Counter()
    non_canonical = False
    for line, r in zip(raw_lines, findings):
        labels = ast.literal_eval(r["finding_categories"])
        assert isinstance(labels, list) and r["finding_categories"] == repr(labels)
        if labels == ["No Finding"]:
            continue
        assert 1 <= len(labels) <= 4 and len(set(labels)) == len(labels)
        assert set(labels) <= set(FINDING_LABELS)
        used.update(labels)
        sizes[len(labels)] += 1
        if len(labels) > 1:
            assert f',"{r["finding_categories"]}",' in line  # CSV-quoted
            ranks = [FINDING_LABELS.index(label) for label in labels]
            non_canonical |= ranks != sorted(ranks)
    assert used == set(FINDING_LABELS)
    assert {1, 2, 3, 4} <= set(sizes)
    assert non_canonical


def test_finding_birads(findings):
    empty = on_birads2 = 0
    for r in findings:
        if r["finding_categories"] == "['No Finding']":
            continue
        breast_birads = birads_number(r["breast_birads"])
        labels = set(ast.literal_eval(r["finding_categories"]))
        if r["finding_birads"] == "":
            empty += 1
            assert labels <= NO_BIRADS_LABELS
        else:
            assert r["finding_birads"] in ("BI-RADS 3", "BI-RADS 4", "BI-RADS 5")
            assert birads_number(r["finding_birads"]) <= breast_birads
        if breast_birads == 2:
            on_birads2 += 1
            assert r["finding_birads"] == ""
        assert breast_birads >= 2
    assert empty and on_birads2
    boxed = {r["image_id"] for r in findings if r["xmin"]}
    assert len(boxed) >= 0.15 * STUDIES * 4  # findings are common, not only the planted ones


def test_no_finding_views_of_suspicious_breasts(findings):
    assert any(
        r["finding_categories"] == "['No Finding']" and birads_number(r["breast_birads"]) >= 3
        for r in findings
    )


def test_shared_boxes_with_different_labels(findings):
    groups = defaultdict(list)
    for r in findings:
        if r["xmin"]:
            groups[(r["image_id"], r["xmin"], r["ymin"], r["xmax"], r["ymax"])].append(
                r["finding_categories"]
            )
    assert any(len(v) > 1 and len(set(v)) == len(v) for v in groups.values())


def test_box_coordinates(findings):
    outside = negative = 0
    styles = Counter()
    for r in findings:
        if not r["xmin"]:
            continue
        width, height = int(r["width"]), int(r["height"])
        xmin, ymin, xmax, ymax = box_values(r)
        assert xmin < xmax and ymin < ymax
        assert xmin >= -27 / SCALE - 1e-9 and ymin >= -27 / SCALE - 1e-9
        assert xmax <= width + 41 / SCALE + 1e-9 and ymax <= height + 41 / SCALE + 1e-9
        outside += xmin < 0 or ymin < 0 or xmax > width or ymax > height
        negative += min(xmin, ymin) < 0
        for text in (r["xmin"], r["ymin"], r["xmax"], r["ymax"]):
            styles[coordinate_style(text)] += 1
    assert outside and negative
    assert set(styles) == {"float32", "short", "float64"}


def coordinate_style(text: str) -> str:
    """A short value (``1500.25``), a float32 printed with 14 digits, or a float64 repr."""
    if re.fullmatch(r"-?\d+\.\d{1,2}", text):
        return "short"
    if format(float(np.float32(float(text))), ".14g") == text:
        return "float32"
    assert repr(float(text)) == text, text
    return "float64"


def test_boxes_lie_on_tissue(findings, datasets):
    for r in findings:
        if not r["xmin"]:
            continue
        ds = datasets[r["image_id"]]
        xmin, ymin, xmax, ymax = box_values(r)
        x0, x1 = max(xmin, 0), min(xmax, ds.Columns)
        y0, y1 = max(ymin, 0), min(ymax, ds.Rows)
        row, column = int((y0 + y1) / 2), int((x0 + x1) / 2)
        pixels, maxval = brightness(ds)
        assert pixels[row, column] > 0.1 * maxval, (r["image_id"], row, column)


# --- DICOM defects N1-N8 ---------------------------------------------------------------------


def test_n1_to_n3_identifiers(datasets, by_image):
    for image_id, ds in datasets.items():
        row = by_image[image_id]
        assert ds.StudyInstanceUID == row["study_id"]
        assert ds.SeriesInstanceUID == row["series_id"]
        assert ds.SOPInstanceUID == image_id == ds.file_meta.MediaStorageSOPInstanceUID
        assert is_hex_id(ds.StudyInstanceUID) and is_hex_id(ds.SOPInstanceUID)
        assert "SOPClassUID" not in ds
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.3.4"
        assert ds.file_meta.ImplementationClassUID == "1.2.3.4"
    assert any(not is_valid_uid(ds.SOPInstanceUID) for ds in datasets.values())


def test_n4_n5_missing_attributes(datasets):
    for ds in datasets.values():
        present = [k for k in TYPE2_MISSING + TYPE1_MISSING if k in ds]
        assert present == []


def test_kept_attributes(datasets):
    for ds in datasets.values():
        assert ds.PatientSex == "F" and ds.Modality == "MG" and ds.BodyPartExamined == "BREAST"
        assert ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.LossyImageCompression == "00"
        assert ds.SamplesPerPixel == 1 and ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
        assert 12 <= ds.BitsStored <= 14 and ds.HighBit == ds.BitsStored - 1
        assert ds.PresentationLUTShape == (
            "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
        )
        assert len(ds.ImagerPixelSpacing) == 2
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (0.0, 1.0) and ds.RescaleType
        assert "WindowCenter" in ds and "WindowWidth" in ds and "WindowCenterWidthExplanation" in ds
        assert len(ds.PixelData) == ds.Rows * ds.Columns * 2
        if "PatientAge" in ds and ds.PatientAge:
            assert re.fullmatch(r"0[0-9]{2}Y", ds.PatientAge)


def test_n6_missing_ages(datasets, by_image, summary):
    states = defaultdict(set)
    for image_id, ds in datasets.items():
        if "PatientAge" not in ds:
            state = "absent"
        elif ds["PatientAge"].value in ("", None):
            state = "empty"
        else:
            state = "present"
        states[by_image[image_id]["study_id"]].add(state)
    assert all(len(s) == 1 for s in states.values())  # whole studies
    study_states = Counter(next(iter(s)) for s in states.values())
    assert study_states["absent"] and study_states["empty"]
    assert study_states["present"] > study_states["absent"] + study_states["empty"]
    missing = {s for s, v in states.items() if v != {"present"}}
    assert missing == set(summary.errata["missing_age"])


def test_n7_laterality_and_view(datasets):
    with_series_laterality = [ds for ds in datasets.values() if "Laterality" in ds]
    assert with_series_laterality and len(with_series_laterality) < len(datasets)
    assert all(ds.Laterality == ds.ImageLaterality for ds in with_series_laterality)
    assert {ds.ViewPosition for ds in datasets.values()} == {"CC", "MLO"}


def test_transfer_syntaxes(datasets, by_image, summary, root):
    syntax = defaultdict(set)
    for image_id, ds in datasets.items():
        syntax[by_image[image_id]["study_id"]].add(ds.file_meta.TransferSyntaxUID)
    assert all(len(s) == 1 for s in syntax.values())
    implicit = {s for s, v in syntax.items() if v == {"1.2.840.10008.1.2"}}
    explicit = {s for s, v in syntax.items() if v == {"1.2.840.10008.1.2.1"}}
    assert implicit and explicit and len(implicit) + len(explicit) == STUDIES
    assert implicit == set(summary.errata["implicit_vr"])
    # the encoding really is implicit: the first data element carries no VR letters
    study = next(iter(implicit))
    raw = next((root / "images" / study).iterdir()).read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    assert raw[meta_end + 4 : meta_end + 6] not in (b"UI", b"CS", b"LO", b"DS", b"US")


def test_siemens_voi_luts_and_burned_in_label(datasets):
    siemens = [ds for ds in datasets.values() if ds.Manufacturer == "SIEMENS"]
    others = [ds for ds in datasets.values() if ds.Manufacturer != "SIEMENS"]
    assert siemens and others
    for ds in siemens:
        assert len(ds.VOILUTSequence) >= 3
        pixels, maxval = brightness(ds)
        top = pixels[: ds.Rows // 8]
        assert (top == maxval).sum() >= 10  # N8: burned-in view label near the top
        assert "BurnedInAnnotation" not in ds
    for ds in others:
        pixels, maxval = brightness(ds)
        assert not (pixels == maxval).any()


# --- metadata.csv ----------------------------------------------------------------------------


def cell_for(ds, keyword: str) -> str:
    """How metadata.csv prints ``ds.<keyword>``: empty when absent/empty, lists as [a, b]."""
    if keyword not in ds or ds[keyword].value in (None, ""):
        return ""
    value = ds[keyword].value
    if isinstance(value, MultiValue):
        return "[" + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


def test_metadata_agrees_with_files(metadata, datasets, breast):
    assert len(metadata) == len(breast)
    assert {row[0] for row in metadata} == set(datasets)
    for row in metadata:
        ds = datasets[row[0]]
        assert row[0] == row[2]
        assert [cell_for(ds, k) for k in METADATA_KEYWORDS] == row


def test_metadata_optional_columns(metadata, datasets):
    header = METADATA_HEADER.split(",")
    spacing, limit, centre = (
        header.index(n) for n in ("Pixel Spacing", "Pixel Padding Range Limit", "Window Center")
    )
    with_spacing = [row for row in metadata if row[spacing]]
    assert 0 < len(with_spacing) < len(metadata)
    for row in metadata:
        ims = datasets[row[0]].Manufacturer.startswith("IMS")
        assert bool(row[limit]) == ims
        if ims:
            assert re.fullmatch(r"\[\d+, \d+\]", row[centre])
        else:
            assert re.fullmatch(r"\d+", row[centre])


def test_metadata_raw_quoting(root):
    text = (root / "metadata.csv").read_text()
    assert re.search(r',"\[\d+, \d+\]",', text)  # multi-valued Window Center/Width
    assert re.search(r',"\[[0-9.]+, [0-9.]+\]",', text)  # Imager Pixel Spacing


# --- Vendors and pixel layout ----------------------------------------------------------------


def test_vendor_profiles(datasets, by_image, summary):
    study_vendor = defaultdict(set)
    odd_width = False
    for image_id, ds in datasets.items():
        (rows, columns), photometric = VENDORS[ds.Manufacturer]
        assert ds.Rows == round(rows / SCALE)
        if columns is None:
            assert 2531 / SCALE - 1 <= ds.Columns <= 2812 / SCALE + 1
            odd_width |= ds.Columns % 2 == 1
        else:
            assert ds.Columns == round(columns / SCALE)
        assert ds.PhotometricInterpretation == photometric
        maxval = (1 << ds.BitsStored) - 1
        assert ds.PixelPaddingValue == (maxval if photometric == "MONOCHROME1" else 0)
        study_vendor[by_image[image_id]["study_id"]].add(ds.Manufacturer)
    assert all(len(v) == 1 for v in study_vendor.values())
    vendors = {next(iter(v)).split()[0] for v in study_vendor.values()}
    assert vendors == {"SIEMENS", "Planmed", "IMS"}
    assert odd_width
    assert set(summary.vendors) == {"siemens", "planmed", "ims"}


def expected_chest_wall_left(manufacturer: str, laterality: str) -> bool:
    """From the reference: Planmed stores every image chest wall left, the others as displayed."""
    return manufacturer == "Planmed" or laterality == "L"


def test_tissue_lies_on_the_chest_wall_edge(datasets, summary):
    for image_id, ds in datasets.items():
        left = expected_chest_wall_left(ds.Manufacturer, ds.ImageLaterality)
        assert CHEST_WALL_LEFT[ds.Manufacturer][ds.ImageLaterality] == left
        assert summary.chest_wall_left[image_id] == left
        pixels, maxval = brightness(ds)
        strip = max(1, ds.Columns // 10)
        near, far = (
            (pixels[:, :strip], pixels[:, -strip:])
            if left
            else (pixels[:, -strip:], pixels[:, :strip])
        )
        assert near.mean() > 0.3 * maxval, image_id
        assert far.mean() < 0.05 * maxval, image_id


def test_background_is_padding(datasets):
    for ds in datasets.values():
        pixels = ds.pixel_array
        corner = (
            pixels[-3:, -3:]
            if expected_chest_wall_left(ds.Manufacturer, ds.ImageLaterality)
            else pixels[-3:, :3]
        )
        if "PixelPaddingRangeLimit" in ds:
            assert corner.max() <= ds.PixelPaddingRangeLimit
        else:
            assert (corner == ds.PixelPaddingValue).all()


# --- Errata and summary ----------------------------------------------------------------------


def test_summary_lists_every_erratum(summary, findings, breast, by_image):
    expected = {
        "two_lcc",
        "two_series",
        "four_series",
        "implicit_vr",
        "missing_age",
        "age_absent",
        "age_empty",
        "density_differs",
        "box_outside",
        "negative_coordinate",
        "empty_finding_birads",
        "birads2_box",
        "nofinding_on_suspicious_breast",
        "shared_box",
        "multi_label_2",
        "multi_label_3",
        "multi_label_4",
        "series_laterality",
        "pixel_spacing",
        "padding_range_limit",
        "multi_window",
        "burned_in_label",
        "odd_width",
    }
    assert expected <= set(summary.errata)
    assert all(summary.errata[key] for key in expected)
    studies = {r["study_id"] for r in breast}
    for key, ids in summary.errata.items():
        assert set(ids) <= (studies if key in STUDY_ERRATA else set(by_image)), key
    for study in summary.errata["two_lcc"]:
        views = Counter(
            (r["laterality"], r["view_position"]) for r in breast if r["study_id"] == study
        )
        assert views[("L", "CC")] == 2 and views[("L", "MLO")] == 0
    series = {s: len({r["series_id"] for r in breast if r["study_id"] == s}) for s in studies}
    assert {series[s] for s in summary.errata["two_series"]} == {2}
    assert {series[s] for s in summary.errata["four_series"]} == {4}
    for image_id in summary.errata["box_outside"]:
        assert any(
            r["image_id"] == image_id
            and r["xmin"]
            and (
                min(box_values(r)[:2]) < 0
                or box_values(r)[2] > int(r["width"])
                or box_values(r)[3] > int(r["height"])
            )
            for r in findings
        )
    box_rows = sum(1 for r in findings if r["xmin"])
    assert (summary.box_rows, summary.no_finding_rows) == (box_rows, len(findings) - box_rows)
    assert (summary.studies, summary.images) == (STUDIES, STUDIES * 4)


def test_scale_changes_sizes_not_annotations(findings, tmp_path):
    generate_release(tmp_path / "half", STUDIES, seed=SEED, scale=SCALE * 2)
    _, smaller, _ = read_csv(tmp_path / "half" / "finding_annotations.csv")
    keep = ("image_id", "finding_categories", "finding_birads", "breast_birads")
    assert [[r[k] for k in keep] for r in smaller] == [[r[k] for k in keep] for r in findings]
    ratios = [
        float(a["xmax"]) / float(b["xmax"])
        for a, b in zip(findings, smaller)
        if a["xmax"] and float(b["xmax"]) > 20
    ]
    assert ratios and abs(float(np.median(ratios)) - 2.0) < 0.1


PLANTED = (
    "two_lcc",
    "two_series",
    "four_series",
    "implicit_vr",
    "age_absent",
    "age_empty",
    "density_differs",
    "box_outside",
    "negative_coordinate",
    "empty_finding_birads",
    "birads2_box",
    "nofinding_on_suspicious_breast",
    "shared_box",
    "multi_label_2",
    "multi_label_3",
    "multi_label_4",
    "series_laterality",
    "odd_width",
)


@pytest.mark.parametrize("seed", range(4))
def test_errata_planted_for_any_seed_from_20_studies(tmp_path, seed):
    summary = generate_release(tmp_path / "r", 20, seed=seed, scale=64)
    assert [key for key in PLANTED if not summary.errata.get(key)] == []
    assert set(summary.vendors) == {"siemens", "planmed", "ims"}
    _, rows, _ = read_csv(tmp_path / "r" / "finding_annotations.csv")
    labels = {label for r in rows for label in ast.literal_eval(r["finding_categories"])}
    assert labels == set(FINDING_LABELS) | {"No Finding"}


@pytest.mark.parametrize("studies", [1, 2])
def test_tiny_releases(tmp_path, studies):
    summary = generate_release(tmp_path / "tiny", studies, seed=3, scale=32)
    _, rows, _ = read_csv(tmp_path / "tiny" / "breast-level_annotations.csv")
    assert len(rows) == summary.images == 4 * studies
    if studies == 2:
        assert {r["split"] for r in rows} == {"training", "test"}
        assert len(summary.errata["implicit_vr"]) == 1
