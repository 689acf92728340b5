"""The per-user file that remembers the PACS credentials and where the PACS runs.

``serve`` generates the credentials once and writes them here (mode 600); ``load``,
``verify`` and ``stop`` read them, so no command needs a password on its command line.
The file is ``$VINDR_DICOM_CONFIG`` when set, else
``${XDG_CONFIG_HOME:-~/.config}/vindr-dicom/server.json``::

    {
      "version": 1,
      "username": "vindr",
      "password": "<generated>",
      "url": "http://127.0.0.1:8042",
      "aet": "VINDR",
      "dicom_port": 4242,
      "engine": "native",
      "data_dir": "/home/me/.local/share/vindr-dicom/orthanc",
      "nodes": ["http://127.0.0.1:8042"],
      "web_url": "http://127.0.0.1:8050"
    }

``username`` and ``password`` are the PACS's admin account: only this file and the data
folder's Orthanc configuration hold them. ``web_url`` is the front door (DICOMweb and the
viewer, for every account); ``url`` and ``nodes`` are Orthanc's own ports, the admin's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from converter.fileio import PRIVATE_FILE, atomic_write

from server.client import Connection
from server.errors import ServerError
from server.pacs.settings import DEFAULT_USERNAME, Credentials

ENV_VAR = "VINDR_DICOM_CONFIG"
FORMAT_VERSION = 1


def config_path() -> Path:
    """Where the per-user file lives (``$VINDR_DICOM_CONFIG`` wins)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vindr-dicom" / "server.json"


@dataclass(frozen=True)
class UserConfig:
    """Contents of the per-user file; everything but the credentials is optional."""

    username: str
    password: str
    url: str | None = None
    aet: str | None = None
    dicom_port: int | None = None
    engine: str | None = None
    data_dir: str | None = None
    nodes: list[str] | None = None
    web_url: str | None = None

    @property
    def credentials(self) -> Credentials:
        """The stored credentials."""
        return Credentials(self.username, self.password)

    def __repr__(self) -> str:
        return (
            f"UserConfig(username={self.username!r}, url={self.url!r}, data_dir={self.data_dir!r})"
        )


def load_user_config(path: Path | None = None) -> UserConfig | None:
    """Read the per-user file; None when it does not exist.

    Raises
    ------
    ServerError
        When the file exists but is not a valid configuration.
    """
    path = path or config_path()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fields = {k: data.get(k) for k in UserConfig.__dataclass_fields__}
        config = UserConfig(**fields)
        Credentials(config.username, config.password)  # validates both
    except (ValueError, TypeError) as exc:
        raise ServerError(f"{path}: not a valid vindr-dicom server file ({exc})") from exc
    return config


def save_user_config(config: UserConfig, path: Path | None = None) -> Path:
    """Write the per-user file atomically with mode 600 (its folder 700)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps({"version": FORMAT_VERSION, **asdict(config)}, indent=2) + "\n"
    return atomic_write(path, text, mode=PRIVATE_FILE)


def ensure_credentials(path: Path | None = None) -> Credentials:
    """The stored credentials, generating and saving new ones on first use."""
    config = load_user_config(path)
    if config is None:
        creds = Credentials.generate(DEFAULT_USERNAME)
        save_user_config(UserConfig(creds.username, creds.password), path)
        return creds
    return config.credentials


def remember_server(path: Path | None = None, **where: object) -> UserConfig:
    """Record where the PACS now runs (url, aet, dicom_port, engine, data_dir, nodes,
    web_url)."""
    config = load_user_config(path)
    if config is None:
        raise ServerError("no credentials stored yet: call ensure_credentials() first")
    config = replace(config, **where)  # type: ignore[arg-type]
    save_user_config(config, path)
    return config


def resolve_connection(
    url: str | None = None,
    username: str | None = None,
    password: str | None = None,
    path: Path | None = None,
) -> Connection:
    """The connection to use: explicit values first, then the per-user file.

    Raises
    ------
    ServerError
        When no URL is given and none is stored.
    """
    stored = load_user_config(path)
    if stored is not None and username in (None, stored.username):
        username = stored.username
        password = password if password is not None else stored.password
    url = url or (stored.url if stored else None)
    if not url:
        raise ServerError(
            f"no PACS URL: pass --url or start one with `vindr-convert serve` ({config_path()})"
        )
    return Connection(url=url, username=username, password=password)
