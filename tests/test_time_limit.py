"""call_with_time_limit: the SIGALRM timer in the main thread, the worker process elsewhere."""

from __future__ import annotations

import operator
import signal
import threading
import time

import pytest

from dqo_tutorial.time_limit import call_with_time_limit


def stubborn_sleep(seconds: float) -> None:
    """Sleeps, and swallows every Exception on the way (as library code sometimes does)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.01)
        except Exception:  # noqa: BLE001, S110 - the point of the test
            pass


def in_thread(fn, *args):
    """fn(*args) in a fresh thread: ``(result, exception, seconds)``."""
    out: dict = {}

    def run():
        start = time.monotonic()
        try:
            out["result"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - reported to the test
            out["error"] = err
        out["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return out.get("result"), out.get("error"), out["seconds"]


def test_main_thread_returns_results_and_passes_exceptions_through():
    assert call_with_time_limit(operator.add, (2, 3), 1.0) == 5
    with pytest.raises(ZeroDivisionError):
        call_with_time_limit(operator.truediv, (1, 0), 1.0)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        call_with_time_limit(operator.add, (1, 2), 0)


@pytest.mark.parametrize("slow", [time.sleep, stubborn_sleep])
def test_main_thread_stops_a_slow_call(slow):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="ran past 0.2 s"):
        call_with_time_limit(slow, (30,), 0.2)
    assert time.monotonic() - start < 2


def test_main_thread_gives_back_the_callers_timer_and_handler():
    fired = []

    def outer(signum, frame):
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        call_with_time_limit(operator.add, (1, 2), 0.5)
        with pytest.raises(TimeoutError):
            call_with_time_limit(time.sleep, (5,), 0.1)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left <= 30 and signal.getsignal(signal.SIGALRM) is outer and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_other_threads_use_a_worker_process_killed_at_the_deadline():
    result, error, _ = in_thread(call_with_time_limit, operator.add, (2, 3), 5.0)
    assert result == 5 and error is None
    _, error, seconds = in_thread(call_with_time_limit, time.sleep, (30,), 0.3)
    assert isinstance(error, TimeoutError) and seconds < 5
    # the killed worker is replaced; exceptions come back as themselves
    result, error, _ = in_thread(call_with_time_limit, operator.add, (4, 5), 5.0)
    assert result == 9 and error is None
    _, error, _ = in_thread(call_with_time_limit, operator.truediv, (1, 0), 5.0)
    assert isinstance(error, ZeroDivisionError)
