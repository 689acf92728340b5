"""QIDO-RS answered from Orthanc's index (``POST /tools/find``), inside Orthanc.

Orthanc's DICOMweb plugin builds each QIDO-RS answer item by item (about 1 ms an item on
our machines: 5 s for the 5,000 SR series of the archive, 46-490 s on Orthanc 1.10-1.12),
while its index answers the same question in a fraction of that. This module turns a
QIDO-RS request (PS3.18 10.6: Search Transaction) into one ``/tools/find`` request and the
index's answer into DICOM JSON (PS3.18 F.2), so that the gateway answers searches at index
speed. It only answers what the index can answer exactly:

- matching (PS3.18 8.3.4.1 and PS3.4 C.2.2.2): single value, wildcard (``*`` ``?``), date
  and time ranges, UID lists (``,`` or ``\\``), universal (empty value) - all done by
  Orthanc's index, case-sensitive like the plugin's default ``QidoCaseSensitive``;
- attributes: every matching or ``includefield`` attribute must be held by the index at its
  level or above (``GET /system`` lists them); the default return attributes of PS3.18
  Table 10.6.3-3/4/5 that the index holds, plus the computed ones (ModalitiesInStudy, the
  NumberOf... counts, InstanceAvailability, RetrieveURL);
- ``limit``/``offset``; ``fuzzymatching=true`` gets literal matching with the Warning
  header PS3.18 prescribes; an ``includefield`` of a lower level (OHIF asks for Modality,
  a series attribute, in its study list) is ignored with a Warning header: Orthanc's plugin
  would read one file per study to fill it with one arbitrary series' value.

Patient and study attributes are Orthanc's patient and study records, as C-FIND answers
them: a study filed under a PatientID whose record carries another PatientName shows the
record's (the plugin reads the study's own file).

Anything else (an attribute outside the index, sequence matching, an XML answer) returns
None from :func:`plan`: the caller (:mod:`.in_orthanc`) then asks the DICOMweb plugin, so an
answer is never silently narrower than the plugin's.

The data dictionary comes from :func:`use`: inside Orthanc, the JSON file ``serve`` writes
(pydicom's, :func:`server.front.files.pydicom_dictionary`).
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .dictionary import Dictionary

LEVELS = ("Patient", "Study", "Series", "Instance")
_DICTIONARY: list[Dictionary] = []


def use(dictionary: Dictionary) -> None:
    """Take ``dictionary`` as the data dictionary (instead of pydicom's)."""
    _DICTIONARY[:] = [dictionary]


def _dictionary() -> Dictionary:
    if not _DICTIONARY:
        raise RuntimeError("qido: no data dictionary yet (qido.use)")
    return _DICTIONARY[0]


def dictionary_keyword(tag: int) -> str:
    """The keyword of ``tag`` ('' when unknown)."""
    return _dictionary().keyword_of(tag) or ""


def dictionary_VR(keyword: str) -> str:  # noqa: N802 - pydicom's name
    """The VR of ``keyword`` ('' when unknown)."""
    return _dictionary().vr_of(keyword) or ""


def tag_for_keyword(keyword: str) -> int | None:
    """The tag of ``keyword`` (None when unknown)."""
    return _dictionary().tag_of(keyword)
# The computed attributes Orthanc's /tools/find returns through RequestedTags.
COMPUTED: dict[str, str] = {
    "ModalitiesInStudy": "Study",
    "NumberOfStudyRelatedSeries": "Study",
    "NumberOfStudyRelatedInstances": "Study",
    "NumberOfSeriesRelatedInstances": "Series",
}
# PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series), 10.6.3-5 (instance): returned by
# default when the index holds them. RequestAttributesSequence never is (no index holds
# sequences).
DEFAULT_RETURN: dict[str, tuple[str, ...]] = {
    "Study": ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
              "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName", "PatientID",
              "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "Series": ("Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID",
               "SeriesNumber", "NumberOfSeriesRelatedInstances",
               "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
    "Instance": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
                 "BitsAllocated", "NumberOfFrames"),
}
# Of those, the ones every object has (Type 1 or 2 in the Patient, General Study and General
# Series modules): the only ones asked of a *parent* level unprompted. Orthanc (1.12) reads
# the DICOM file of every answer whose parent lacks a requested tag (warning W001), so the
# optional ones (SeriesDescription, TimezoneOffsetFromUTC...) come only from the searched
# level's own index entry, or when the client names them.
ALWAYS_PRESENT = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
    "SeriesInstanceUID", "Modality", "SeriesNumber"})
CHARSET_UTF8 = "ISO_IR 192"  # Orthanc's DefaultEncoding Utf8 (settings.orthanc_config)
FUZZY_WARNING = ('299 vindr-dicom: "The fuzzymatching parameter is not supported. '
                 'Only literal matching has been performed."')
_PATH = re.compile(
    r"^/(?:studies(?:/(?P<study>[0-9.]+)(?:/series(?:/(?P<series>[0-9.]+)/instances"
    r"|(?P<series_level>))|/instances(?P<study_instances>))?)?"
    r"|series(?P<all_series>)|instances(?P<all_instances>))/?$")
_UID = {"Study": "StudyInstanceUID", "Series": "SeriesInstanceUID",
        "Instance": "SOPInstanceUID"}
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_NUMERIC_VRS = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}


class QidoError(ValueError):
    """A request PS3.18 calls invalid: answered 400 with this message."""


@dataclass(frozen=True)
class Search:
    """One QIDO-RS search request, parsed.

    Attributes
    ----------
    level
        ``Study``, ``Series`` or ``Instance``.
    scope
        UIDs fixed by the path (``StudyInstanceUID``, ``SeriesInstanceUID``).
    filters
        Attribute keyword -> matching value (empty: universal matching).
    includes
        ``includefield`` keywords; ``("all",)`` for all.
    limit, offset, fuzzy
        The paging and fuzzy-matching parameters.
    """

    level: str
    scope: dict[str, str] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)
    includes: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False


def parse(path: str, query: str) -> Search | None:
    """The search that ``path`` (below the DICOMweb root, e.g. ``/studies``) and the
    percent-encoded ``query`` ask for; None when ``path`` is not a search.

    Raises
    ------
    QidoError
        On an unknown attribute, a repeated non-UID attribute, a bad limit or offset.
    """
    match = _PATH.match(path)
    if match is None:
        return None
    groups = match.groupdict()
    scope: dict[str, str] = {}
    if groups["study"]:
        scope["StudyInstanceUID"] = groups["study"]
    if groups["series"]:
        scope["SeriesInstanceUID"] = groups["series"]
    if groups["all_instances"] is not None or groups["study_instances"] is not None \
            or groups["series"]:
        level = "Instance"
    elif groups["all_series"] is not None or groups["series_level"] is not None:
        level = "Series"
    elif groups["study"]:
        return None  # /studies/{uid} is a retrieve (WADO-RS), not a search
    else:
        level = "Study"
    filters: dict[str, str] = {}
    includes: list[str] = []
    limit: int | None = None
    offset, fuzzy = 0, False
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise QidoError(f"the query is not percent-encoded UTF-8 ({exc.reason})") from exc
    for name, value in pairs:
        if name == "includefield":
            includes += [_keyword(v) if v != "all" else "all"
                         for v in value.split(",") if v]
        elif name == "limit":
            limit = _count(name, value)
        elif name == "offset":
            offset = _count(name, value)
        elif name == "fuzzymatching":
            fuzzy = value.lower() == "true"
        else:
            keyword = _keyword(name)
            if keyword in filters:
                if dictionary_VR(keyword) != "UI":
                    raise QidoError(f"{name} given twice: only UID attributes take a list")
                value = filters[keyword] + "," + value
            filters[keyword] = value
    return Search(level, scope, filters, tuple(includes), limit, offset, fuzzy)


def _keyword(name: str) -> str:
    """An attribute keyword from a keyword or an 8-digit hex tag."""
    if "." in name:
        raise QidoError(f"{name}: sequence matching is not supported here")
    if _HEX_TAG.match(name):
        keyword = dictionary_keyword(int(name, 16)) if _known(int(name, 16)) else ""
        if not keyword:
            raise QidoError(f"{name}: not an attribute of the DICOM dictionary")
        return keyword
    if tag_for_keyword(name) is None:
        raise QidoError(f"{name}: not a DICOM attribute keyword or tag")
    return name


def _known(tag: int) -> bool:
    return bool(dictionary_keyword(tag))


def _count(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise QidoError(f"{name}={value!r}: must be a non-negative integer")
    return int(value)


@dataclass(frozen=True)
class IndexTags:
    """The attributes Orthanc's index holds, by level (``GET /system``'s ``MainDicomTags``)."""

    levels: Mapping[str, frozenset[str]]

    @classmethod
    def from_system(cls, system: Mapping[str, Any]) -> IndexTags | None:
        """From ``GET /system``; None when Orthanc does not list them (before 1.11)."""
        listed = system.get("MainDicomTags")
        if not isinstance(listed, Mapping):
            return None
        levels: dict[str, frozenset[str]] = {}
        for level in LEVELS:
            tags = [t for t in str(listed.get(level, "")).split(";") if t]
            keywords = {dictionary_keyword(int(t.replace(",", ""), 16)) for t in tags
                        if _known(int(t.replace(",", ""), 16))}
            levels[level] = frozenset(k for k in keywords if k)
        return cls(levels)

    def level_of(self, keyword: str, up_to: str) -> str | None:
        """The level at or above ``up_to`` holding ``keyword`` (computed ones included)."""
        for level in LEVELS[: LEVELS.index(up_to) + 1]:
            if keyword in self.levels.get(level, ()) or COMPUTED.get(keyword) == level:
                return level
        return None


    def below(self, keyword: str, level: str) -> bool:
        """True when ``keyword`` is an attribute of a level below ``level`` only."""
        return any(keyword in self.levels.get(lv, ()) or COMPUTED.get(keyword) == lv
                   for lv in LEVELS[LEVELS.index(level) + 1:])


@dataclass(frozen=True)
class Plan:
    """How to answer a search from the index: the ``/tools/find`` body and what to return."""

    body: dict[str, Any]
    returned: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    modalities_from_children: bool = False


def plan(search: Search, index: IndexTags) -> Plan | None:
    """The ``/tools/find`` request answering ``search`` exactly; None when the index cannot
    (an attribute it does not hold), for the caller to forward the request unchanged.

    Every attribute comes from index entries, never from a file: the searched level's
    from its own (``ResponseContent`` ``MainDicomTags``), the computed ones through
    ``RequestedTags``, those of the levels above from their entries (:class:`ParentCache`,
    by the ``Parent`` IDs of the answer). Asking Orthanc (1.12) for them through
    ``RequestedTags`` instead costs about 0.15 ms an answer and level, and reads the file
    of every answer whose parent lacks an optional one (warning W001).
    """
    level = search.level
    # The answer carries the default attributes of the search level and of every level
    # above it (PS3.18 10.6.3.3 asks for those above only when the path does not fix
    # them; Orthanc's plugin always sends them, and so do we). The UIDs of every level
    # make the RetrieveURL.
    shown = LEVELS[1: LEVELS.index(level) + 1]
    named = [*search.scope, *search.filters]
    for keyword in named:
        if index.level_of(keyword, level) is None:
            return None
    ignored: list[str] = []
    for keyword in search.includes:
        if keyword != "all" and index.level_of(keyword, level) is None:
            if not index.below(keyword, level):
                return None
            ignored.append(keyword)  # e.g. OHIF's includefield=00080060 on studies
            continue
        named.append(keyword)
    returned: list[str] = [_UID[lv] for lv in shown]
    computed: list[str] = []

    def want(keyword: str) -> None:
        held_at = index.level_of(keyword, level)
        if held_at is None:
            return
        if keyword in COMPUTED:
            if held_at == level:  # Orthanc computes counts at the searched level only
                computed.append(keyword)
            else:
                return
        returned.append(keyword)

    for lv in shown:
        for keyword in DEFAULT_RETURN[lv]:
            want(keyword)
    for keyword in named:
        if keyword == "all":
            for lv in LEVELS[: LEVELS.index(level) + 1]:
                for held in sorted(index.levels.get(lv, ())):
                    want(held)
            for extra, lv in COMPUTED.items():
                if lv == level:
                    want(extra)
        else:
            want(keyword)
    query: dict[str, str] = dict(search.scope)
    for keyword, value in search.filters.items():
        if value == "":
            continue  # universal matching: return it, match everything
        if dictionary_VR(keyword) == "UI":
            value = value.replace(",", "\\")
        query[keyword] = value
    body: dict[str, Any] = {
        "Level": level,
        "Query": query,
        "CaseSensitive": True,
        "ResponseContent": ["MainDicomTags", "Parent"],
    }
    # Orthanc computes ModalitiesInStudy in about 50 ms even for one study; the modalities
    # of the study's series (their IDs come with the answer, their entries from the cache)
    # give the same value in a fraction of that.
    by_children = "ModalitiesInStudy" in computed
    if by_children:
        computed.remove("ModalitiesInStudy")
        body["ResponseContent"].append("Children")
    if computed:
        body["RequestedTags"] = list(dict.fromkeys(computed))
    if search.limit:
        body["Limit"] = search.limit
    if search.offset:
        body["Since"] = search.offset
    warnings = (FUZZY_WARNING,) if search.fuzzy else ()
    if ignored:
        warnings += ((f'299 vindr-dicom: "includefield {", ".join(ignored)} ignored: not '
                      f'{level.lower()}-level attributes"'),)
    return Plan(body, tuple(dict.fromkeys(returned)), warnings, by_children)


PARENT_KEY = {"Instance": "ParentSeries", "Series": "ParentStudy", "Study": "ParentPatient"}


def render(answers: Iterable[Mapping[str, Any]], plan: Plan, base_url: str,
           parents: ParentCache | None = None) -> bytes:
    """The DICOM JSON (PS3.18 F.2) of ``/tools/find`` ``answers`` for ``plan``, as bytes.

    ``base_url`` is the DICOMweb root as the client reaches it (for RetrieveURL);
    ``parents`` holds the index entries of the levels above (resolved beforehand with
    :meth:`ParentCache.resolve`). Written directly as text, attributes in tag order: a
    whole-archive answer (5,000 items) costs a third of building dicts for ``json.dumps``.
    """
    level = plan.body["Level"]
    columns = sorted([(f"{tag_for_keyword(k):08X}", k, _vr(k)) for k in plan.returned]
                     + [("00080005", "", "CS"), ("00080056", "", "CS"), ("00081190", "", "UR")])
    fixed = {"00080005": f'{{"vr":"CS","Value":["{CHARSET_UTF8}"]}}',
             "00080056": '{"vr":"CS","Value":["ONLINE"]}'}
    above: dict[str | None, dict[str, str]] = {}
    rendered: dict[tuple[str, Any], str] = {}
    key = PARENT_KEY[level]
    parts: list[str] = []
    for answer in answers:
        own = answer.get("MainDicomTags") or {}
        requested = answer.get("RequestedTags")
        if requested:
            own = {**own, **requested}
        if plan.modalities_from_children and parents is not None:
            own = {**own, "ModalitiesInStudy": parents.modalities(answer.get("Series") or ())}
        parent_id = answer.get(key)
        inherited = above.get(parent_id)
        if inherited is None:
            inherited = parents.tags_above(level, parent_id) if parents is not None else {}
            above[parent_id] = inherited
        fields = []
        for tag, keyword, vr in columns:
            if not keyword:
                if tag == "00081190":
                    url = _retrieve_url(base_url, level, own, inherited)
                    if url:
                        fields.append(f'"00081190":{{"vr":"UR","Value":[{_dumps(url)}]}}')
                else:
                    fields.append(f'"{tag}":{fixed[tag]}')
                continue
            value = own.get(keyword)
            if value is None:
                value = inherited.get(keyword)
                if value is None:
                    continue
            field = rendered.get((tag, value))
            if field is None:  # most values repeat (modalities, dates, counts, names)
                field = rendered[(tag, value)] = f'"{tag}":{_element(vr, value)}'
            fields.append(field)
        parts.append("{" + ",".join(fields) + "}")
    return ("[" + ",".join(parts) + "]").encode("utf-8")


Call = Callable[[str, str, "dict | None"], Any]


class ParentCache:
    """The index entries (main tags and parent) of the archive's series, studies and
    patients, by Orthanc ID, for the attributes of the levels above a search.

    An Orthanc ID is a hash of the resource's UIDs and its main tags are fixed when it is
    created, so an entry stays true until the resource is deleted or created again:
    :meth:`refresh` reads Orthanc's change log (``/changes``) and drops every entry that
    was deleted or (re)created since the last call. Misses are fetched one by one
    (``GET /series/{id}``...), or, above :attr:`BULK`, the whole level at once.

    ``call(method, path, body)`` sends one REST request to Orthanc and returns its JSON.
    """

    BULK = 250  # above OHIF's page of 101: its parents fetched one by one
    _EVICT = frozenset({"Deleted", "NewSeries", "NewStudy", "NewPatient"})
    # Changes that leave every search's answer as it was (stability, metadata, attachments)
    _UNCHANGED = frozenset({"StablePatient", "StableStudy", "StableSeries", "CompletedSeries",
                            "UpdatedMetadata", "UpdatedAttachment"})
    _URL: Mapping[str, str] = {"Series": "series", "Study": "studies", "Patient": "patients"}

    def __init__(self, call: Call) -> None:
        self._call = call
        self._entries: dict[str, tuple[dict[str, str], str | None]] = {}
        self._seq: int | None = None
        self._generation = 0
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def seq(self) -> int | None:
        """The last change of Orthanc's log that :meth:`refresh` read."""
        return self._seq

    @property
    def generation(self) -> int:
        """How many changes that alter an answer (a store, a new resource; not a study
        becoming stable) :meth:`refresh` has read."""
        return self._generation

    def refresh(self) -> None:
        """Forget every entry Orthanc's change log says was deleted or (re)created."""
        if self._seq is None:
            self._seq = int(self._call("GET", "/changes?last", None)["Last"])
            return
        while True:
            page = self._call("GET", f"/changes?since={self._seq}&limit=10000", None)
            for change in page.get("Changes", []):
                kind = change.get("ChangeType")
                if kind in self._EVICT:
                    self._entries.pop(str(change.get("ID")), None)
                if kind not in self._UNCHANGED:
                    self._generation += 1
            self._seq = int(page.get("Last", self._seq))
            if page.get("Done", True):
                return

    def resolve(self, level: str, answers: Iterable[Mapping[str, Any]]) -> None:
        """Fetch the entries of every level above ``level`` that ``answers`` need."""
        ids = {a.get(PARENT_KEY[level]) for a in answers} - {None}
        for parent in LEVELS[LEVELS.index(level) - 1:0:-1] + ("Patient",):
            missing = {i for i in ids if i not in self._entries}
            if missing:
                self._fetch(parent, missing)
            ids = {self._entries[i][1] for i in ids if i in self._entries} - {None}

    def resolve_children(self, answers: Iterable[Mapping[str, Any]]) -> None:
        """Fetch the entries of the series of study ``answers`` (their ``Series``, asked as
        ``Children``)."""
        answers = list(answers)
        missing = {c for a in answers for c in a.get("Series") or () if c not in self._entries}
        if len(missing) <= self.BULK:
            if missing:
                self._fetch("Series", missing)
            return
        # many series, but of few studies (OHIF's first page: 101 studies, about 600
        # series): each study's series in one request, not the whole series level (30,000
        # on the archive, 10 s on PostgreSQL plugin 5.0)
        studies = [a["ID"] for a in answers
                   if "ID" in a and any(c in missing for c in a.get("Series") or ())]
        if len(studies) > self.BULK:
            self._fetch("Series", missing)
            return
        for study_id in studies:
            for found in self._call("GET", f"/studies/{study_id}/series", None) or []:
                self._entries[found["ID"]] = (found.get("MainDicomTags") or {},
                                              found.get(PARENT_KEY["Series"]))

    def modalities(self, series_ids: Iterable[str]) -> str:
        """ModalitiesInStudy of a study with these series (as Orthanc writes it: sorted,
        backslash-separated)."""
        found = {self._entries[i][0].get("Modality", "") for i in series_ids if i in self._entries}
        return "\\".join(sorted(m for m in found if m))

    def _fetch(self, level: str, ids: set[str]) -> None:
        key = PARENT_KEY.get(level)
        if len(ids) > self.BULK:
            for found in self._call("POST", "/tools/find", {
                    "Level": level, "Query": {}, "ResponseContent": ["MainDicomTags", "Parent"]}):
                self._entries[found["ID"]] = (found.get("MainDicomTags") or {},
                                              found.get(key) if key else None)
            return
        for orthanc_id in ids:
            found = self._call("GET", f"/{self._URL[level]}/{orthanc_id}", None)
            if found is not None:
                self._entries[orthanc_id] = (found.get("MainDicomTags") or {},
                                             found.get(key) if key else None)

    def tags_above(self, level: str, parent_id: str | None) -> dict[str, str]:
        """The main tags of every level above ``level`` for a resource whose parent is
        ``parent_id`` (the nearest level wins)."""
        tags: dict[str, str] = {}
        while parent_id is not None and parent_id in self._entries:
            entry_tags, parent_id = self._entries[parent_id]
            tags = {**entry_tags, **tags}
        return tags


def _vr(keyword: str) -> str:
    vr = dictionary_VR(keyword)
    return "US" if vr == "US or SS" else vr


def _element(vr: str, value: Any) -> str:
    """One DICOM JSON attribute value object, as text."""
    text = str(value)
    if text == "":
        return f'{{"vr":"{vr}"}}'
    values = text.split("\\")
    if vr == "PN":
        names = [_person_name(v) for v in values]
        if not any(names):
            return '{"vr":"PN"}'
        return f'{{"vr":"PN","Value":[{",".join(_dumps(n) for n in names)}]}}'
    if vr in _NUMERIC_VRS:
        try:
            numbers = [float(v) if vr in ("DS", "FL", "FD") else int(v) for v in values]
        except ValueError:  # a malformed number stays text rather than being dropped
            return f'{{"vr":"{vr}","Value":{_dumps(values)}}}'
        numbers = [int(n) if isinstance(n, float) and n.is_integer() else n for n in numbers]
        return f'{{"vr":"{vr}","Value":{_dumps(numbers)}}}'
    return f'{{"vr":"{vr}","Value":{_dumps(values)}}}'


def _person_name(value: str) -> dict[str, str]:
    """A PN value as its PS3.18 F.2.2 object: the ``=``-separated component groups
    (alphabetic, ideographic, phonetic), trailing empty groups dropped."""
    groups = value.split("=", 2)
    while groups and not groups[-1]:
        groups.pop()
    return dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups))


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _retrieve_url(base: str, level: str, own: Mapping[str, Any],
                  inherited: Mapping[str, Any]) -> str | None:
    uids = []
    for lv in LEVELS[1: LEVELS.index(level) + 1]:
        uid = own.get(_UID[lv]) or inherited.get(_UID[lv])
        if not uid:
            return None
        uids.append(uid)
    names = ("studies", "series", "instances")
    return base + "".join(f"/{name}/{uid}" for name, uid in zip(names, uids))


class AnswerCache:
    """Rendered answers of recent searches, each valid while the index's state token has
    not changed since it was computed (``in_orthanc.Front._state``: the change log's last
    entry and the count of each level, which every store or deletion changes; both are the
    index's, so every node of a cluster sees every node's changes).

    A viewer's study list and a cohort's searches repeat the same query: 64 clients asking
    for ``/dicom-web/studies`` share one computation. At most :attr:`entries` answers and
    :attr:`max_bytes` in all are kept, the least recently used dropped first; an answer larger
    than a quarter of that is not kept. Not locked: the caller holds :attr:`ParentCache.lock`.
    """

    def __init__(self, entries: int = 32, max_bytes: int = 64 << 20) -> None:
        self.entries, self.max_bytes = entries, max_bytes
        self._answers: OrderedDict[tuple[str, ...], tuple[object, bytes]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, ...], seq: object) -> bytes | None:
        """The answer for ``key`` computed at state ``seq``, or None."""
        hit = self._answers.get(key)
        if hit is None or seq is None or hit[0] != seq:
            return None
        self._answers.move_to_end(key)
        return hit[1]

    def put(self, key: tuple[str, ...], seq: object, data: bytes) -> None:
        """Keep ``data`` as the answer for ``key`` at state ``seq``."""
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        if seq is None or len(data) > self.max_bytes // 4:
            return
        self._answers[key] = (seq, data)
        self._bytes += len(data)
        while len(self._answers) > self.entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._answers.popitem(last=False)
            self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._answers)
