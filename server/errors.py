"""The one exception type the server package raises for problems a user can act on."""

from __future__ import annotations

from converter.errors import VindrError


class ServerError(VindrError):
    """A PACS-side failure with a message meant for the user (missing binary, busy port...)."""


class SettingsError(ServerError, ValueError):
    """A server setting the user gave is invalid (AE title, port, modality, credentials)."""
