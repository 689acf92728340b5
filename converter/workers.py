"""The conversion's worker processes: a pool safe in a threaded parent, dying with it.

Workers are started by a fork server (:mod:`multiprocessing`'s ``forkserver`` method), never
by ``fork()`` of the calling process: that process may run threads (a progress display, a
library's), and a forked copy of a threaded process can deadlock (Python 3.12+ warns
about it). The fork server is a fresh single-threaded interpreter that imports the
converter once (:data:`PRELOAD`); each worker is a fork of it, so it starts at once.

A worker dies with the converting process (its parent is the fork server, so Linux's
``PR_SET_PDEATHSIG`` cannot say it): a thread of the worker waits on a pidfd of that
process (:func:`os.pidfd_open`, Linux 5.3+; elsewhere it polls every second) and ends the
worker at once when it ends, and the worker checks between images too. The fork server
exits by itself once no worker is left, so a killed ``convert`` leaves no process behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

log = logging.getLogger(__name__)

START_METHOD = "forkserver"
PRELOAD = ["converter.pipeline"]  # imported once by the fork server, inherited by workers
POLL_SECONDS = 1.0  # where there is no pidfd

T = TypeVar("T")
R = TypeVar("R")

_MAIN_PID: int | None = None  # the converting process; set in worker processes only


def pool_context() -> multiprocessing.context.BaseContext:
    """The start method's context, its fork server told what to import first."""
    context = multiprocessing.get_context(START_METHOD)
    context.set_forkserver_preload(PRELOAD)
    return context


def run_parallel(function: Callable[..., R], jobs: Iterable[tuple[T, tuple[Any, ...]]],
                 workers: int,
                 on_crash: Callable[[T, BaseException], R]) -> Iterator[R]:
    """``function(*args)`` for each ``(key, args)`` of ``jobs`` in ``workers`` processes,
    yielded as they complete; a job whose worker raised or died yields ``on_crash(key,
    exception)`` and the others go on."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(),
                             initializer=worker_init, initargs=(os.getpid(),)) as pool:
        futures: dict[Future[R], T] = {pool.submit(function, *args): key
                                       for key, args in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # a crashed worker: report the job, go on
                yield on_crash(futures[future], exc)


def worker_init(main_pid: int) -> None:
    """Worker initializer: die with the process ``main_pid`` that runs the conversion."""
    global _MAIN_PID
    _MAIN_PID = main_pid
    threading.Thread(target=_die_with, args=(main_pid,), name="die-with-convert",
                     daemon=True).start()
    exit_if_orphaned()  # it may have died already


def _die_with(pid: int) -> None:
    """Wait for process ``pid`` to end, then end this process at once."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here, or ``pid`` is gone already
        while _alive(pid):
            time.sleep(POLL_SECONDS)
    else:
        select.select([fd], [], [])  # a pidfd turns readable when its process ends
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_if_orphaned() -> None:
    """In a worker whose converting process has died, stop at once."""
    if _MAIN_PID is not None and not _alive(_MAIN_PID):
        os._exit(1)


def format_traceback(exc: BaseException) -> str:
    """The full traceback, the worker's own included (ProcessPoolExecutor chains it)."""
    return "".join(traceback.format_exception(exc))
