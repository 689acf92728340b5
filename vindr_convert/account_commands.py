"""The ``vindr-convert users`` commands: the PACS's accounts besides the admin.

Each command only parses, calls :mod:`server.pacs.accounts` and :mod:`server.pacs.supervisor`
(which applies the change to a running PACS) and prints. Wire them with :func:`register`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .console import fail, out, reported_errors

users = typer.Typer(no_args_is_help=True, help="The PACS's accounts besides the admin.")

_DATA = typer.Option(None, "--data", help="The PACS's data folder (default: the last one served).")


def _apply(data_dir: Path) -> None:
    from server.pacs import supervisor

    if supervisor.reload(data_dir):
        out.print("in effect: the running PACS restarted its nodes one by one with it")
    else:
        out.print("no PACS runs on that folder: the change applies at its next `serve`")


@users.command("add")
def add(
    name: str = typer.Argument(..., help="Account name (A-Z a-z 0-9 . _ -)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input (one line)."),
    write: bool = typer.Option(False, "--write", help="May also store (STOW-RS)."),
    data: Optional[Path] = _DATA,
) -> None:
    """Add an account (read-only unless --write), or change its password or role."""
    with reported_errors():
        from server.pacs import accounts, engine
        from server.userconfig import ensure_credentials

        if not password_stdin:
            fail("give the password on standard input with --password-stdin (never on the "
                 "command line, where other users can read it)", 2)
        password = sys.stdin.readline().rstrip("\r\n")
        data_dir = engine.stored_data_dir(data)
        role = accounts.WRITE if write else accounts.READ
        replaced = accounts.add(data_dir, accounts.Account(name, password, role),
                                admin=ensure_credentials().username)
        out.print(f"account {name} {'changed' if replaced else 'added'} ({role})")
        _apply(data_dir)


@users.command("remove")
def remove(name: str = typer.Argument(..., help="Account name."), data: Optional[Path] = _DATA,
           ) -> None:
    """Remove an account."""
    with reported_errors():
        from server.pacs import accounts, engine

        data_dir = engine.stored_data_dir(data)
        if not accounts.remove(data_dir, name):
            fail(f"no account {name}")
        out.print(f"account {name} removed")
        _apply(data_dir)


@users.command("list")
def list_accounts(data: Optional[Path] = _DATA) -> None:
    """List the accounts and their roles (never their passwords)."""
    with reported_errors():
        from server.pacs import accounts, engine
        from server.userconfig import ensure_credentials

        data_dir = engine.stored_data_dir(data)
        found = accounts.read_accounts(data_dir)
        admin = ensure_credentials().username
    table = Table(title=f"accounts of {data_dir}")
    table.add_column("account")
    table.add_column("may")
    table.add_row(admin, "everything (the admin: Orthanc's own port; load, verify, stop)")
    for account in sorted(found.values(), key=lambda a: a.name):
        table.add_row(account.name, "search, retrieve, view, store" if account.role == "write"
                      else "search, retrieve, view")
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``users`` (add, remove, list) to ``app``."""
    app.add_typer(users, name="users")
