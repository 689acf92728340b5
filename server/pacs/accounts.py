"""The PACS's accounts: the admin, and those ``vindr-convert users add`` creates.

Orthanc checks every password (``RegisteredUsers``, HTTP basic authentication); what each
account may do is decided inside Orthanc, request by request, by the front's filter
(:mod:`server.front.plugin.policy`):

- the **admin** (``serve`` generates it; kept in the per-user file of
  :mod:`server.userconfig`, keys ``username`` and ``password``) may use Orthanc's whole REST
  API on its own port: ``load``, ``verify`` and ``stop`` use it;
- a **read** account (the default) may search and retrieve through the front door: QIDO-RS,
  WADO-RS, WADO-URI and the viewer;
- a **write** account may also store (STOW-RS).

Accounts other than the admin are kept in ``DATA/accounts.json`` (mode 600, like Orthanc's
configuration, which must hold the passwords in clear: Orthanc compares them as given).
A password is never printed nor put on a command line; ``users add`` reads it from stdin.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from converter.fileio import PRIVATE_FILE, atomic_write

from server.errors import SettingsError
from server.pacs.layout import DataLayout

READ, WRITE, ADMIN = "read", "write", "admin"
ROLES = (READ, WRITE)
MIN_PASSWORD = 12
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Account:
    """One account of the PACS besides the admin."""

    name: str
    password: str = field(repr=False)
    role: str = READ

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.role not in ROLES:
            raise SettingsError(f"account {self.name}: role {self.role!r}, choose "
                                f"{' or '.join(ROLES)}")
        check_password(self.password, self.name)


def check_name(name: str) -> str:
    """``name`` if it can be an account name (1-64 of ``A-Z a-z 0-9 . _ -``)."""
    if not _NAME.match(name):
        raise SettingsError(f"account name {name!r}: use 1 to 64 characters among "
                            "A-Z a-z 0-9 . _ -")
    return name


def check_password(password: str, name: str = "") -> str:
    """``password`` if it is acceptable: at least 12 characters on one line (a ``:`` is
    fine: HTTP basic authentication splits the pair at the name's end)."""
    if len(password) < MIN_PASSWORD:
        raise SettingsError(f"password of {name or 'the account'}: at least {MIN_PASSWORD} "
                            "characters")
    if any(ch in password for ch in "\r\n\0"):
        raise SettingsError(f"password of {name or 'the account'}: one line, no NUL")
    return password


def read_accounts(data_dir: Path) -> dict[str, Account]:
    """The accounts of ``data_dir`` by name (none when the file does not exist).

    Raises
    ------
    SettingsError
        When the file is not a valid accounts file (naming it).
    """
    path = DataLayout.of(data_dir).accounts
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        accounts = [Account(a["name"], a["password"], a.get("role", READ))
                    for a in data["accounts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"{path}: not a valid accounts file ({exc})") from exc
    return {a.name: a for a in accounts}


def write_accounts(data_dir: Path, accounts: dict[str, Account]) -> Path:
    """Write ``accounts`` to ``data_dir``'s file (mode 600), sorted by name."""
    path = DataLayout.of(data_dir).accounts
    rows = [{"name": a.name, "password": a.password, "role": a.role}
            for a in sorted(accounts.values(), key=lambda a: a.name)]
    text = json.dumps({"version": FORMAT_VERSION, "accounts": rows}, indent=2) + "\n"
    return atomic_write(path, text, mode=PRIVATE_FILE)


def add(data_dir: Path, account: Account, admin: str) -> bool:
    """Add or replace ``account``; True when it replaced one.

    Raises
    ------
    SettingsError
        When the name is the admin's.
    """
    if account.name == admin:
        raise SettingsError(f"{account.name} is the admin account: its password is in the "
                            "per-user file, and serve generates it")
    accounts = read_accounts(data_dir)
    replaced = account.name in accounts
    accounts[account.name] = account
    write_accounts(data_dir, accounts)
    return replaced


def remove(data_dir: Path, name: str) -> bool:
    """Remove the account ``name``; False when there was none."""
    accounts = read_accounts(data_dir)
    if accounts.pop(name, None) is None:
        return False
    write_accounts(data_dir, accounts)
    return True
