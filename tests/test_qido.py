"""QIDO-RS from the index (server.front.plugin.qido) without a server: parsing a search,
planning its ``/tools/find``, and writing its DICOM JSON, the last checked against pydicom's
own ``Dataset.to_json_dict`` on arbitrary values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from server.front.files import pydicom_dictionary
from server.front.plugin import qido

qido.use(pydicom_dictionary())  # as serve writes it for Orthanc
SYSTEM = {"MainDicomTags": {
    "Patient": "0010,0010;0010,0020;0010,0030;0010,0040",
    "Study": "0008,0020;0008,0030;0008,0050;0008,0090;0008,1030;0020,000d;0020,0010;0010,1010",
    "Series": "0008,0060;0020,000e;0020,0011;0008,103e",
    "Instance": "0008,0018;0020,0013;0020,0062;0018,5101;0008,0016;0028,0010;0028,0011",
}}
INDEX = qido.IndexTags.from_system(SYSTEM)
UID = "1.2.840.10008.42"


# --- parse -------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "level", "scope"), [
    ("/studies", "Study", {}),
    ("/series", "Series", {}),
    ("/instances/", "Instance", {}),
    (f"/studies/{UID}/series", "Series", {"StudyInstanceUID": UID}),
    (f"/studies/{UID}/instances", "Instance", {"StudyInstanceUID": UID}),
    (f"/studies/{UID}/series/{UID}/instances", "Instance",
     {"StudyInstanceUID": UID, "SeriesInstanceUID": UID}),
])
def test_the_path_gives_the_level_and_scope(path: str, level: str, scope: dict) -> None:
    search = qido.parse(path, "")
    assert search is not None and (search.level, search.scope) == (level, scope)


def test_a_retrieve_or_another_path_is_not_a_search() -> None:
    assert qido.parse(f"/studies/{UID}", "") is None
    assert qido.parse(f"/studies/{UID}/metadata", "") is None
    assert qido.parse("/servers", "") is None


def test_filters_fields_paging_and_fuzzy() -> None:
    search = qido.parse("/studies", "PatientID=VINDR-%2A&00100010=A%5EB&includefield=00081030"
                        "%2C00100020&includefield=StudyDate&includefield=all&limit=5&offset=10"
                        "&fuzzymatching=true&StudyInstanceUID=1.2&StudyInstanceUID=1.3")
    assert search is not None
    assert search.filters == {"PatientID": "VINDR-*", "PatientName": "A^B",
                              "StudyInstanceUID": "1.2,1.3"}
    assert search.includes == ("StudyDescription", "PatientID", "StudyDate", "all")
    assert (search.limit, search.offset, search.fuzzy) == (5, 10, True)


@pytest.mark.parametrize(("query", "message"), [
    ("NoSuchAttribute=1", "not a DICOM attribute"),
    ("FFFF0000=1", "not an attribute"),
    ("limit=-1", "non-negative"),
    ("limit=%C2%B2", "non-negative"),  # a superscript two: a digit to str.isdigit
    ("offset=x", "non-negative"),
    ("PatientID=a&PatientID=b", "given twice"),
    ("ReferencedStudySequence.StudyInstanceUID=1", "sequence matching"),
    ("PatientName=%FF%FE", "not percent-encoded UTF-8"),
])
def test_bad_searches_say_why(query: str, message: str) -> None:
    with pytest.raises(qido.QidoError, match=message):
        qido.parse("/studies", query)


# --- plan --------------------------------------------------------------------------------


def test_the_plan_is_one_find_on_the_index() -> None:
    search = qido.parse("/instances", f"StudyInstanceUID={UID}&StudyInstanceUID=1.3"
                        "&ImageLaterality=L&ViewPosition=&limit=3&offset=2")
    plan = qido.plan(search, INDEX)
    assert plan is not None
    assert plan.body["Level"] == "Instance" and plan.body["CaseSensitive"] is True
    assert plan.body["Query"] == {"StudyInstanceUID": f"{UID}\\1.3", "ImageLaterality": "L"}
    assert (plan.body["Limit"], plan.body["Since"]) == (3, 2)
    assert {"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "ImageLaterality",
            "ViewPosition", "Rows"} <= set(plan.returned)


def test_what_the_index_cannot_answer_is_left_to_the_plugin() -> None:
    assert qido.plan(qido.parse("/instances", "PatientOrientation=A%5CR"), INDEX) is None
    assert qido.plan(qido.parse("/studies", "includefield=PatientWeight"), INDEX) is None
    assert qido.IndexTags.from_system({"Version": "1.10.1"}) is None  # no index listed


def test_a_lower_level_field_is_ignored_with_a_warning_and_counts_are_computed() -> None:
    plan = qido.plan(qido.parse("/studies", "includefield=00080060"), INDEX)
    assert plan is not None and any("Modality ignored" in w for w in plan.warnings)
    assert "Modality" not in plan.returned
    assert plan.modalities_from_children and "Children" in plan.body["ResponseContent"]
    assert set(plan.body["RequestedTags"]) == {"NumberOfStudyRelatedSeries",
                                              "NumberOfStudyRelatedInstances"}
    fuzzy = qido.plan(qido.parse("/studies", "fuzzymatching=true"), INDEX)
    assert fuzzy is not None and fuzzy.warnings == (qido.FUZZY_WARNING,)


# --- render, against pydicom's DICOM JSON --------------------------------------------------

TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                             blacklist_characters="\\"), min_size=1, max_size=12).map(str.strip)
VALUES = {
    "PatientName": st.one_of(  # component groups (=) too; several values need an alphabetic
        st.lists(TEXT, min_size=1, max_size=1),
        st.lists(TEXT.filter(lambda v: v and not v.startswith("=")), min_size=2, max_size=2)),
    "StudyDescription": st.lists(TEXT, min_size=1, max_size=1),
    "PatientAge": st.lists(st.sampled_from(["045Y", "003M", "100Y"]), min_size=1, max_size=1),
    "StudyDate": st.lists(st.sampled_from(["20220321", "19991231"]), min_size=1, max_size=1),
    "ImageLaterality": st.lists(st.sampled_from(["L", "R"]), min_size=1, max_size=1),
    "InstanceNumber": st.lists(st.integers(-2**31, 2**31 - 1).map(str), min_size=1,
                               max_size=1),
    "Rows": st.lists(st.integers(0, 65535).map(str), min_size=1, max_size=1),
    "SliceThickness": st.lists(st.decimals(-1e6, 1e6, places=3, allow_nan=False)
                               .map(lambda d: format(d.normalize(), "f")), min_size=1,
                               max_size=1),
    "ImageType": st.lists(st.sampled_from(["ORIGINAL", "PRIMARY", "DERIVED"]), min_size=1,
                          max_size=3),
}


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional=VALUES))
def test_dicom_json_equals_pydicoms(values: dict[str, list[str]]) -> None:
    """One instance answer rendered from index entries equals pydicom's DICOM JSON of a
    data set holding the same values (our fixed additions aside)."""
    tags = {"SOPInstanceUID": "1.2.3", "StudyInstanceUID": UID, "SeriesInstanceUID": "1.2.4"}
    own = {**tags, **{k: "\\".join(v) for k, v in values.items()}}
    plan = qido.Plan({"Level": "Instance"}, tuple(own))
    rendered = json.loads(qido.render([{"MainDicomTags": own}], plan, "http://front/dicom-web"))
    ours = rendered[0]
    for fixed in ("00080005", "00080056", "00081190"):
        ours.pop(fixed)
    ds = Dataset()
    for keyword, value in {**tags, **values}.items():
        items = value if isinstance(value, list) else [value]
        if keyword == "Rows":  # US: a number, as a file holds it
            items = [int(v) for v in items]
        setattr(ds, keyword, items if len(items) > 1 else items[0])
    theirs = ds.to_json_dict()
    assert ours.keys() == theirs.keys()
    for tag, element in theirs.items():
        assert ours[tag]["vr"] == element["vr"], tag
        assert ours[tag].get("Value") == element.get("Value"), tag


def test_retrieve_urls_are_the_public_roots() -> None:
    plan = qido.Plan({"Level": "Instance"}, ("SOPInstanceUID", "StudyInstanceUID",
                                             "SeriesInstanceUID"))
    answer = {"MainDicomTags": {"SOPInstanceUID": "3", "StudyInstanceUID": "1",
                                "SeriesInstanceUID": "2"}}
    item = json.loads(qido.render([answer], plan, "http://pacs.example:8050/dicom-web"))[0]
    assert item["00081190"]["Value"] == [
        "http://pacs.example:8050/dicom-web/studies/1/series/2/instances/3"]


def test_an_answer_is_reused_only_while_the_change_log_stands_still() -> None:
    cache = qido.AnswerCache(entries=2, max_bytes=400)
    cache.put(("/studies", "", "b"), 7, b"answer")
    assert cache.get(("/studies", "", "b"), 7) == b"answer"
    assert cache.get(("/studies", "", "b"), 8) is None  # something was stored or deleted
    assert cache.get(("/studies", "limit=1", "b"), 7) is None  # another query
    assert cache.get(("/studies", "", "other-host"), 7) is None  # RetrieveURLs differ
    cache.put(("/studies", "", "b"), None, b"x")  # before the log was read: never kept
    assert cache.get(("/studies", "", "b"), None) is None and len(cache) == 0


def test_the_answer_cache_is_bounded() -> None:
    cache = qido.AnswerCache(entries=2, max_bytes=400)
    for name in ("a", "b", "c"):
        cache.put((name,), 1, b"." * 50)
    assert len(cache) == 2 and cache.get(("a",), 1) is None  # the least recently used
    cache.put(("big",), 1, b"." * 101)  # over a quarter of the bytes
    assert cache.get(("big",), 1) is None
    cache = qido.AnswerCache(entries=10, max_bytes=400)
    for name in "abcdefgh":
        cache.put((name,), 1, b"." * 100)
    assert len(cache) == 4  # 400 bytes at most


def test_many_series_of_few_studies_are_fetched_per_study() -> None:
    """OHIF's first page (101 studies, ~600 series) asks each study's series, never the
    whole series level (10 s on the archive on PostgreSQL)."""
    calls: list[tuple[str, str]] = []
    studies = [{"ID": f"st{i}", "Series": [f"se{i}-{j}" for j in range(6)]} for i in range(101)]

    def call(method: str, path: str, body: object) -> object:
        calls.append((method, path))
        if path == "/changes?last":
            return {"Last": 0}
        study = path.split("/")[2]
        i = int(study[2:])
        return [{"ID": f"se{i}-{j}", "MainDicomTags": {"Modality": "MG" if j < 4 else "SR"},
                 "ParentStudy": study} for j in range(6)]

    cache = qido.ParentCache(call)
    cache.resolve_children(studies)
    assert [m for m, _ in calls] == ["GET"] * 101
    assert all(p.startswith("/studies/st") and p.endswith("/series") for _, p in calls)
    assert cache.modalities(studies[7]["Series"]) == "MG\\SR"
    calls.clear()
    cache.resolve_children(studies)
    assert calls == []  # all known now
