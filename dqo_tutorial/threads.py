"""CPU threads for the cores that are free: intra-op threads that share a core with another busy
process wait on each other, and a tiny model's ops then stall.

Measured on this project's 2-core machine (toy π_ref, 20 DQO steps with the reference pass):
idle, 2 threads 37.8 s and 1 thread 53.3 s; beside one busy process, 2 threads 118.0 s (3.1× its
idle time) and 1 thread 62.0 s (1.2×). So a CPU stage takes as many threads as there are cores
that other processes leave free, at least one: :func:`fit_threads`, called by the command line
at the start of every stage. An explicit ``OMP_NUM_THREADS`` is left alone.
"""

from __future__ import annotations

import os
import time

__all__ = ["threads_for", "busy_cores_of_others", "fit_threads"]


def threads_for(cores: int, others_busy: float) -> int:
    """Threads for a CPU stage: the cores other processes leave free (rounded), at least 1."""
    return max(1, min(cores, round(cores - others_busy)))


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy seconds of the whole machine, of this process) so far; None without /proc."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
        mine = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    ticks = [int(x) for x in fields]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # minus idle, iowait
    return busy / tick, (int(mine[11]) + int(mine[12])) / tick  # utime + stime


def busy_cores_of_others(seconds: float = 0.2) -> float | None:
    """How many cores other processes kept busy over the next ``seconds`` (None: unknown)."""
    before = _cpu_seconds()
    start = time.perf_counter()
    time.sleep(seconds)
    after = _cpu_seconds()
    if before is None or after is None:
        return None
    elapsed = time.perf_counter() - start
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / elapsed)


def fit_threads(device: str | None = None) -> int | None:
    """Set torch's intra-op threads to :func:`threads_for` the free cores when the stage runs
    on the CPU and ``OMP_NUM_THREADS`` is unset; returns the number set (None: left alone)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS") or (device or "cpu") != "cpu":
        return None
    if device is None and torch.cuda.is_available():
        return None
    others = busy_cores_of_others()
    if others is None:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = threads_for(cores or 1, others)
    torch.set_num_threads(threads)
    return threads
