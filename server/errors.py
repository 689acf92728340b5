"""The one exception type the server package raises for problems a user can act on."""

from __future__ import annotations


class ServerError(RuntimeError):
    """A PACS-side failure with a message meant for the user (missing binary, busy port...)."""
