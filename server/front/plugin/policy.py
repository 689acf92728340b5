"""Who may do what: the rules Orthanc's request filter applies to every HTTP request.

Orthanc has already checked the password (``RegisteredUsers``) when the filter runs, and it
hands the filter the request as it will execute it: the URI with ``..`` and encoded
slashes resolved, the method after ``?_method=`` and ``X-HTTP-Method-Override``. So these
rules judge what would really happen, whatever the client wrote:

1. the ``Host`` header names this server (one of :attr:`Rules.hosts`): a web page that
   rebinds its own name to 127.0.0.1 (DNS rebinding) is refused;
2. the admin may do anything (``load``, ``verify``, ``stop``: Orthanc's own port);
3. every other account must come through the front door (nginx, which logs it in the audit
   log and adds the front's key, :attr:`Rules.front_key`), and may then only use what
   :data:`READ_ROUTES` lists (QIDO-RS, WADO-RS, WADO-URI, the viewer's login check) with
   GET; a ``write`` account may also store with STOW-RS (POST on ``/dicom-web/studies``).

Everything else is refused (Orthanc answers 403).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

UID = r"[0-9]+(?:\.[0-9]+)*"
# PS3.18 resources, as Orthanc's DICOMweb plugin serves them, plus our own routes.
READ_ROUTES = tuple(re.compile(p) for p in (
    # QIDO-RS (our index-backed searches, and the plugin's)
    rf"^/(?:vindr-qido|dicom-web)/(?:studies|series|instances)/?$",
    rf"^/(?:vindr-qido|dicom-web)/studies/{UID}/(?:series|instances)/?$",
    rf"^/(?:vindr-qido|dicom-web)/studies/{UID}/series/{UID}/instances/?$",
    # WADO-RS: study, series, instance; their metadata, renderings and thumbnails; frames;
    # bulk data
    rf"^/dicom-web/studies/{UID}(?:/series/{UID}(?:/instances/{UID})?)?"
    r"(?:/(?:metadata|rendered|thumbnail))?/?$",
    rf"^/dicom-web/studies/{UID}/series/{UID}/instances/{UID}/frames/[0-9]+(?:,[0-9]+)*"
    r"(?:/rendered)?/?$",
    rf"^/dicom-web/studies/{UID}/series/{UID}/instances/{UID}/bulk(?:/[0-9A-Fa-f]+)+/?$",
    # WADO-URI (the plugin's, and ours that decodes the query first)
    r"^/(?:vindr-)?wado$",
    # the front's login check for the viewer's files
    r"^/vindr-front/auth$",
))
STORE_ROUTES = tuple(re.compile(p) for p in (
    rf"^/dicom-web/studies(?:/{UID})?/?$",
))
# Orthanc's OrthancPluginHttpMethod values, as its Python plugin passes them.
METHODS = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE"}


@dataclass(frozen=True)
class Decision:
    """A filter's verdict, with the reason (logged by Orthanc when refused)."""

    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Rules:
    """The rules of one PACS.

    Attributes
    ----------
    admin
        The admin account's name.
    roles
        Every other account's role: ``read`` or ``write``.
    front_key
        What nginx adds to each request it forwards (``X-Vindr-Front``); nobody else knows
        it (it lives in the PACS's private data folder).
    hosts
        The host names and addresses this PACS is reached by (``Host`` without the port,
        lower case; IPv6 without brackets).
    """

    admin: str
    roles: Mapping[str, str]
    front_key: str
    hosts: frozenset[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rules:
        """From the plugin's settings file (:func:`server.front.files.plugin_settings`)."""
        return cls(str(data["admin"]), dict(data["roles"]), str(data["front_key"]),
                   frozenset(h.lower() for h in data["hosts"]))

    def decide(self, method: int | str, uri: str, headers: Mapping[str, str]) -> Decision:
        """May this request go on? ``headers`` have lower-case names (as Orthanc gives them)."""
        verb = METHODS.get(method, str(method)) if isinstance(method, int) else method.upper()
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            return Decision(False, f"Host {headers.get('host', '')!r} is not this server's")
        account = basic_user(headers.get("authorization", ""))
        if account is None:
            return Decision(False, "no account")
        if account == self.admin:
            return Decision(True)
        role = self.roles.get(account)
        if role is None:
            return Decision(False, f"{account}: no such account")
        if not hmac.compare_digest(headers.get("x-vindr-front", ""), self.front_key):
            return Decision(False, f"{account}: accounts other than the admin come through "
                                   "the front door (its DICOMweb URL)")
        if verb == "GET" and any(route.match(uri) for route in READ_ROUTES):
            return Decision(True)
        if verb == "POST" and any(route.match(uri) for route in STORE_ROUTES):
            if role == "write":
                return Decision(True)
            return Decision(False, f"{account}: a read-only account cannot store")
        return Decision(False, f"{account}: {verb} {uri} is not a DICOMweb resource "
                               "accounts may use")


def host_name(host: str) -> str:
    """The name or address of a ``Host`` header, without port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def basic_user(authorization: str) -> str | None:
    """The user name of an HTTP basic ``Authorization`` header (None when there is none)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        pair = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, _ = pair.partition(":")
    return user if colon else None
