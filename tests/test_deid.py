"""De-identification that is true: the keep-list of converter/codes.py, checked by planting
PHI in one source image and scanning every header the converter writes."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.dataset import Dataset

import badinput as bad
from converter import codes
from converter.manifest import read_manifest
from converter.pipeline import convert_release
from converter.release import read_release
from converter.validate import dciodvfy
from mgfixture import image_record, orientation, synthetic_source
from converter.repair import dropped_attributes, lenient_reading, repair_dataset


def walk(ds: Dataset, path: str = ""):
    """(path, element) for every element of ``ds``, nested sequence items included."""
    for element in ds:
        where = f"{path}{element.keyword or element.tag}"
        yield where, element
        if element.VR == "SQ":
            for number, item in enumerate(element.value):
                yield from walk(item, f"{where}[{number}].")


def strings(element) -> list[str]:
    value = element.value
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v) for v in values if isinstance(v, (str, pydicom.valuerep.PersonName))]


def test_repaired_header_holds_only_the_keep_list_and_the_repair():
    record = image_record("a" * 32, "L", "CC")
    with lenient_reading():
        source = synthetic_source(record)
        source.InstitutionName = "PHI"
        source.add_new(0x00091001, "LO", "private")
        repaired = repair_dataset(source, record, orientation(record))
    allowed = codes.SOURCE_KEEP_LIST | codes.REPAIR_ATTRIBUTES
    assert {e.keyword for e in repaired} - allowed == set()
    assert "InstitutionName" not in repaired and (0x0009, 0x1001) not in repaired
    assert dropped_attributes(source) == [("InstitutionName (0008,0080)", True),
                                          ("private element (0009,1001)", True)]


@pytest.mark.slow
def test_planted_phi_is_dropped_reported_and_nowhere_in_the_output(tiny_copy, tiny_converted,
                                                                   tmp_path):
    target = next(i for i in read_release(tiny_copy).images if i.findings)
    planted = bad.plant_phi(tiny_copy, target.relpath)
    assert len(planted) >= 34  # 31+ attributes, a private creator, two private elements
    out = tmp_path / "out"
    result = convert_release(tiny_copy, out, workers=1)
    assert result.ok, [str(p) for p in result.problems if p.severity == "error"]

    reported = [p.message for p in result.problems
                if p.code == "attribute-dropped" and p.image_id == target.image_id]
    assert len(reported) == len(planted) == len(set(reported))
    for name in planted:
        assert sum(m.startswith(f"{name} (") or f"{name} dropped" in m
                   for m in reported) == 1, name
    assert not [p for p in result.problems
                if p.code == "attribute-dropped" and p.image_id != target.image_id]

    values = bad.planted_values()
    rows = read_manifest(out)
    for row in rows:
        ds = pydicom.dcmread(out / row.path, stop_before_pixels=True)
        for where, element in walk(ds):
            assert not element.tag.is_private, (row.path, where)
            for text in strings(element):
                assert not any(v in text for v in values), (row.path, where, text)
        if row.kind == "MG":
            assert {e.keyword for e in ds} <= codes.SOURCE_KEEP_LIST | codes.REPAIR_ATTRIBUTES
    for name in ("report.json", "manifest.csv"):
        text = (out / name).read_text()
        assert not any(v in text for v in values), name

    # everything planted was dropped: the exam's objects equal those of the clean release
    for row in (r for r in rows if r.study_id == target.study_id):
        assert (out / row.path).read_bytes() == (tiny_converted / row.path).read_bytes()
        assert dciodvfy(out / row.path).errors == [], row.path
    assert json.loads((out / "report.json").read_text())["summary"]["ok"]
