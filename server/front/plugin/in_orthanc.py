"""What Orthanc runs at its start (its Python plugin imports this through ``start.py``).

:func:`register` reads the settings ``serve`` wrote and registers, in Orthanc:

- the request filter: every HTTP request, after Orthanc checked the password, is allowed or
  refused (403) by :class:`.policy.Rules`; a refusal is logged with its reason;
- ``GET /vindr-qido/{studies,series,instances...}``: QIDO-RS from the index (:mod:`.qido`),
  where the front sends the ``/dicom-web`` searches. The front passes the raw query string
  in ``X-Vindr-Query`` (Orthanc's Python plugin gives a callback the arguments as a dict,
  which keeps one value of a repeated ``includefield``) and the public host in
  ``X-Forwarded-Host`` (for RetrieveURL). A search the index cannot answer exactly goes to
  the DICOMweb plugin in process, its query decoded (Debian's builds do not decode query
  arguments), and its RetrieveURLs rewritten to the public root;
- ``GET /vindr-wado``: WADO-URI with its query decoded, for the same reason;
- ``GET /vindr-front/auth``: 200 for anyone Orthanc and the filter let in: the front asks it
  before serving the viewer's files.

Everything here runs with Orthanc's Python and the standard library only.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from typing import Any

import orthanc  # type: ignore[import-not-found]  # only inside Orthanc

from . import qido
from .dictionary import Dictionary
from .policy import Rules

DICOMWEB = "/dicom-web"
RETRIEVE_URL = "00081190"


class _Upstream(Exception):
    """Orthanc's REST API answered an error to a request of ours."""


def _call(method: str, path: str, body: Any) -> Any:
    """One call to Orthanc's built-in REST API, in process; None for an unknown resource."""
    try:
        if method == "GET":
            return json.loads(orthanc.RestApiGet(path))
        return json.loads(orthanc.RestApiPost(path, json.dumps(body)))
    except orthanc.OrthancException as exc:
        if "nknown" in str(exc) or "InexistentItem" in str(exc):
            return None
        raise _Upstream(f"{method} {path}: {exc}") from exc


class Front:
    """The registered callbacks and what they share (the index's tags, the parent cache)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.parents = qido.ParentCache(_call)
        self.answers = qido.AnswerCache()
        self._computing: dict[tuple[str, ...], threading.Event] = {}
        self._index: qido.IndexTags | None = None
        self._index_known = False
        self._lock = threading.Lock()

    # -- the filter --

    def filter(self, uri: str, **request: Any) -> bool:
        """Orthanc's incoming-request filter."""
        try:
            decision = self.rules.decide(request.get("method", 0), uri,
                                         request.get("headers") or {})
        except Exception as exc:  # a bug here must refuse, never let in
            orthanc.LogError(f"vindr-dicom filter: {exc!r}: refused {uri}")
            return False
        if not decision.allowed:
            orthanc.LogWarning(f"vindr-dicom: refused {uri} from "
                               f"{request.get('ip', '?')}: {decision.reason}")
        return decision.allowed

    # -- QIDO-RS --

    def index_tags(self) -> qido.IndexTags | None:
        """What the index holds (``GET /system``, asked once)."""
        with self._lock:
            if not self._index_known:
                self._index = qido.IndexTags.from_system(_call("GET", "/system", None) or {})
                self._index_known = True
        return self._index

    def search(self, output: Any, uri: str, **request: Any) -> None:
        """``GET /vindr-qido/...``: one QIDO-RS search."""
        if request.get("method") != "GET":
            output.SendMethodNotAllowed("GET")
            return
        headers = request.get("headers") or {}
        path = "/" + (request.get("groups") or ("",))[0]
        query = headers.get("x-vindr-query")
        if query is None:  # straight to Orthanc (the admin): one value per argument
            query = urllib.parse.urlencode(request.get("get") or {})
        base = _public_root(headers)
        accept = headers.get("accept", "")
        try:
            search = qido.parse(path, query)
        except qido.QidoError as exc:
            output.SendHttpStatus(400, f"{exc}\n")
            return
        if search is None:
            output.SendHttpStatus(404, f"{path}: not a QIDO-RS search\n")
            return
        plan = None
        if not ("xml" in accept and "json" not in accept):
            index = self.index_tags()
            plan = qido.plan(search, index) if index is not None else None
        try:
            data = (None if plan is None
                    else self._answer(search, plan, base, (path, query, base)))
        except _Upstream:
            data = None  # a value the index rejects: the plugin says what it makes of it
        if data is None:
            self._from_plugin(output, path, query, base)
            return
        for warning in plan.warnings if plan is not None else ():
            output.SetHttpHeader("Warning", warning)
        output.AnswerBuffer(data, "application/dicom+json")

    def _answer(self, search: qido.Search, plan: qido.Plan, base: str,
                key: tuple[str, ...]) -> bytes:
        cache = self.parents
        while True:
            with cache.lock:  # the caches are as true as the change log before the search
                cache.refresh()
                seq = self._state()
                known = self.answers.get(key, seq)
                if known is not None:
                    return known
                running = self._computing.get(key)
                if running is None:  # this request computes it; the same search meanwhile
                    done = self._computing[key] = threading.Event()  # waits for it
                    break
            running.wait(60)  # then takes its answer from the cache (or computes it anew)
        try:
            answers = _call("POST", "/tools/find", plan.body) or []
            with cache.lock:
                cache.resolve(search.level, answers)
                if plan.modalities_from_children:
                    cache.resolve_children(answers)
                data = qido.render(answers, plan, base, cache)
                self.answers.put(key, seq, data)
                return data
        finally:
            with cache.lock:
                self._computing.pop(key, None)
            done.set()

    @staticmethod
    def _state() -> str:
        """What the index holds, as a token that changes with it: the change log's last
        entry (every store adds one) and the counts of each level (a deletion removes its
        resources' changes from the log, so only the counts show it)."""
        last = (_call("GET", "/changes?last", None) or {}).get("Last")
        stats = _call("GET", "/statistics", None) or {}
        counts = [stats.get(k) for k in ("CountPatients", "CountStudies", "CountSeries",
                                          "CountInstances")]
        return json.dumps([last, *counts])

    def _from_plugin(self, output: Any, path: str, query: str, base: str) -> None:
        """The DICOMweb plugin's own answer, its query decoded and its URLs made public."""
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(ch in value for _, value in pairs for ch in "&#\r\n"):
            output.SendHttpStatus(400, "a value holding & or # cannot be passed to Orthanc\n")
            return
        decoded = "&".join(f"{name}={value}" for name, value in pairs)
        try:
            answer = orthanc.RestApiGetAfterPlugins(f"{DICOMWEB}{path}?{decoded}")
        except orthanc.OrthancException as exc:
            output.SendHttpStatus(400, f"{exc}\n")
            return
        try:
            items = json.loads(answer)
        except ValueError:  # not JSON: hand it on as it is
            output.AnswerBuffer(answer, "application/dicom+json")
            return
        for item in items if isinstance(items, list) else ():
            url = (item.get(RETRIEVE_URL) or {}).get("Value") if isinstance(item, dict) else None
            if url and isinstance(url[0], str) and DICOMWEB in url[0]:
                url[0] = base + url[0].split(DICOMWEB, 1)[1]
        output.AnswerBuffer(json.dumps(items, ensure_ascii=False, separators=(",", ":")),
                            "application/dicom+json")

    # -- WADO-URI, login check --

    def wado(self, output: Any, uri: str, **request: Any) -> None:
        """``GET /vindr-wado``: the plugin's WADO-URI, with its query decoded."""
        headers = request.get("headers") or {}
        query = headers.get("x-vindr-query")
        if query is None:
            query = urllib.parse.urlencode(request.get("get") or {})
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(ch in value for _, value in pairs for ch in "&#\r\n"):
            output.SendHttpStatus(400, "a value holding & or # cannot be passed to Orthanc\n")
            return
        content_type = dict(pairs).get("contentType") or "image/jpeg"  # PS3.18 8.1.3.4
        try:
            data = orthanc.RestApiGetAfterPlugins(
                "/wado?" + "&".join(f"{name}={value}" for name, value in pairs))
        except orthanc.OrthancException as exc:
            output.SendHttpStatus(404 if "nknown" in str(exc) else 400, f"{exc}\n")
            return
        output.AnswerBuffer(data, content_type.split(",")[0].strip())

    def auth(self, output: Any, uri: str, **request: Any) -> None:
        """``GET /vindr-front/auth``: the caller is let in."""
        output.AnswerBuffer("ok\n", "text/plain")


def _public_root(headers: dict[str, str]) -> str:
    """The DICOMweb root as the client reaches it (for RetrieveURL)."""
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    proto = headers.get("x-forwarded-proto") or "http"
    return f"{proto}://{host}{DICOMWEB}"


def register(settings_path: str) -> Front:
    """Read the settings ``serve`` wrote and register the filter and the routes."""
    with open(settings_path, encoding="utf-8") as handle:
        settings = json.load(handle)
    qido.use(Dictionary.load(settings["dictionary"]))
    front = Front(Rules.from_json(settings))
    orthanc.RegisterIncomingHttpRequestFilter(front.filter)
    orthanc.RegisterRestCallback("/vindr-qido/(.*)", front.search)
    orthanc.RegisterRestCallback("/vindr-wado", front.wado)
    orthanc.RegisterRestCallback("/vindr-front/auth", front.auth)
    orthanc.LogWarning(f"vindr-dicom front: {len(front.rules.roles)} accounts besides the "
                       f"admin, hosts {', '.join(sorted(front.rules.hosts))}")
    return front
