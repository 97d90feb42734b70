r"""A time limit on one call, in any thread: what keeps a pathological answer from hanging grading.

Symbolic equivalence checking (:mod:`dqo_tutorial.math_problems`) can run for minutes on a
harmless-looking answer: comparing ``10^{10^{10}}`` with ``10`` makes SymPy build a
ten-billion-digit integer. :func:`call_with_time_limit` runs ``fn(*args)`` and raises
:class:`TimeoutError` once ``seconds`` have passed, in one of two ways:

- **main thread** (POSIX): an interval timer, ``signal.setitimer(ITIMER_REAL, seconds)``, whose
  ``SIGALRM`` handler raises inside the running call. No process is started, so a call costs
  nothing extra. The exception raised by the handler derives from :class:`BaseException`, so the
  ``except Exception`` blocks inside SymPy or math-verify cannot swallow it and carry on. A timer
  already armed by the caller (e.g. ``pytest-timeout``) is re-armed afterwards with the time it
  had left.
- **any other thread** (or a platform without ``SIGALRM``): signals are delivered to the main
  thread only, so the call runs in a worker process instead — one long-lived child started with
  ``spawn`` (safe beside torch's threads) and **killed** when the deadline passes; the next call
  starts a new one. Neither its start-up nor the optional untimed ``setup`` call (e.g. a heavy
  import) counts against the limit. ``fn`` and ``args`` must be picklable (a module-level
  function), calls from several threads take turns, and a script that calls this from a thread
  must guard its own code with ``if __name__ == "__main__":`` (``spawn`` re-imports it).

This is why :mod:`math_verify`'s own time limit is switched off where we call it: it uses
``signal.alarm`` in whole seconds, refuses to run outside the main thread, and its ``finally``
would cancel the timer set here.

Limits: the signal is handled between Python bytecodes, so in the main thread a single C call
that never returns to the interpreter is not interrupted (SymPy's big-integer arithmetic does
return often enough; the worker process has no such limit).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["call_with_time_limit", "STARTUP_TIMEOUT_S"]

STARTUP_TIMEOUT_S = 120.0
"""How long a new worker process may take to import its modules before it counts as broken."""


class _Expired(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that library code cannot catch it."""


def call_with_time_limit(
    fn: Callable[..., Any],
    args: tuple = (),
    seconds: float = 5.0,
    setup: Callable[[], None] | None = None,
) -> Any:
    """``fn(*args)``, or :class:`TimeoutError` if it has not returned after ``seconds``.

    ``setup()``, if given, runs first in the same process without the limit (e.g. importing a
    heavy library that ``fn`` imports lazily, so that the import is not counted). Exceptions
    raised by ``fn`` propagate unchanged (from a worker process: a copy of them).
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        if setup is not None:
            setup()
        return _call_with_timer(fn, args, seconds)
    with _worker_lock:
        if setup is not None:
            _call_in_worker(setup, (), STARTUP_TIMEOUT_S)
        return _call_in_worker(fn, args, seconds)


# ----------------------------------------------------------------------------- main thread


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Expired


def _call_with_timer(fn: Callable[..., Any], args: tuple, seconds: float) -> Any:
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    outer_left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        return fn(*args)
    except _Expired:
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} ran past {seconds:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_left > 0:  # give the caller's timer back what it had left (fire now if spent)
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - start), 1e-6))


# ----------------------------------------------------------------------------- other threads

_worker_lock = threading.Lock()
_worker: tuple[multiprocessing.process.BaseProcess, Connection] | None = None


def _serve(conn: Connection) -> None:
    """The worker's loop: run each ``(fn, args)`` received, send back ``(ok, result)``."""
    conn.send("ready")
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the parent has gone
            return
        try:
            conn.send((True, fn(*args)))
        except Exception as err:  # noqa: BLE001 - handed back to the caller, who re-raises it
            conn.send((False, err))


def _start_worker() -> tuple[multiprocessing.process.BaseProcess, Connection]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(child,), daemon=True, name="time-limit-worker")
    process.start()
    child.close()
    try:
        ready = parent.poll(STARTUP_TIMEOUT_S) and parent.recv() == "ready"
    except (EOFError, OSError):  # it died while importing
        ready = False
    if not ready:
        process.kill()
        process.join()
        raise RuntimeError(
            f"the time-limit worker process did not start within {STARTUP_TIMEOUT_S:g} s (with "
            "the 'spawn' start method a script must guard its code with "
            "`if __name__ == '__main__':`)"
        )
    return process, parent


def _stop_worker() -> None:
    global _worker
    if _worker is not None:
        process, conn = _worker
        process.kill()
        process.join()
        conn.close()
        _worker = None


def _call_in_worker(fn: Callable[..., Any], args: tuple, seconds: float) -> Any:
    """Run one call in the worker (started if needed); the caller holds ``_worker_lock``."""
    global _worker
    if _worker is None or not _worker[0].is_alive():
        _stop_worker()
        _worker = _start_worker()
    conn = _worker[1]
    try:
        conn.send((fn, args))
        finished = conn.poll(seconds)
        ok, value = conn.recv() if finished else (False, None)
    except (EOFError, OSError) as err:  # the worker died (e.g. out of memory)
        _stop_worker()
        raise RuntimeError(f"the time-limit worker died while running {fn!r}") from err
    if not finished:
        _stop_worker()  # the only way to stop a running call: kill its process
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} ran past {seconds:g} s")
    if not ok:
        raise value
    return value
