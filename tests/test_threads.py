"""CPU threads follow the cores other processes leave free (dqo_tutorial.threads)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from dqo_tutorial.threads import busy_cores_of_others, fit_threads, threads_for


@pytest.mark.parametrize(
    ("cores", "others", "expected"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 3.5, 1),
     (16, 0.0, 16), (16, 4.2, 12), (1, 0.0, 1)],
)  # fmt: skip
def test_threads_for_the_free_cores(cores, others, expected):
    assert threads_for(cores, others) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_busy_process_beside_us_is_seen():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        busy = busy_cores_of_others(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and busy >= 0.3, busy


def test_fit_threads_sets_torch_threads_and_respects_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert fit_threads("cpu") is None and torch.get_num_threads() == before
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert fit_threads("cuda") is None
        if sys.platform.startswith("linux"):
            n = fit_threads("cpu")
            assert n is not None and n >= 1 and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
