"""Evaluation under torchrun (2 gloo processes on CPU) writes what one process writes.

Chunk c (``batch_size`` problems, each seeded by its problem index) goes to one process; each writes
its chunks' records into ``chunks/``, the main process appends them to ``outputs.jsonl`` in chunk
order and writes ``results.json``. The reference is a one-process run of the same configuration (in
this process, to spare a start-up): the records must match line for line, the accuracies exactly,
and the stored configurations too. A resume after an interruption, with another process count than
the interrupted run, must give the same files again.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_distributed import launch

from dqo_tutorial import evaluate as ev

LIMIT, BATCH = 9, 2  # 5 chunks (2, 2, 2, 2, 1 problems): an odd number, rank 0 does one more
PER_PROBLEM = 1 + 2  # greedy + 2 samples


def eval_args(out):
    return ["-m", "dqo_tutorial.cli", "eval", "--task", "toy", "--model", "toy",
            "--limit", str(LIMIT), "--num-samples", "2", "--batch-size", str(BATCH),
            "--out", str(out)]  # fmt: skip


def chunk_lines(lines: list[str], c: int) -> list[str]:
    """The records of chunk c in a complete outputs.jsonl (chunks of BATCH problems)."""
    start = c * BATCH * PER_PROBLEM
    return lines[start : start + min(BATCH, LIMIT - c * BATCH) * PER_PROBLEM]


def evaluate_here(folder, batch_size: int = BATCH) -> None:
    """The command of :func:`eval_args` as one process, in this one (no start-up to pay)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the numerics of the launched processes' OMP_NUM_THREADS=1
    try:
        cfg = ev.EvalConfig(
            model="toy", task="toy", limit=LIMIT, num_samples=2, batch_size=batch_size,
        )  # fmt: skip
        ev.evaluate(cfg, folder, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process's folder: outputs.jsonl and results.json."""
    out = tmp_path_factory.mktemp("eval") / "one"
    evaluate_here(out)
    return out


def outputs(folder) -> list[str]:
    return (folder / "outputs.jsonl").read_text().splitlines()


def results(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


def assert_same_as(folder, reference):
    assert outputs(folder) == outputs(reference)
    a, b = results(folder), results(reference)
    assert a["accuracy"] == b["accuracy"]
    for key in ("data", "length_cut_share", "mean_response_tokens", "model"):
        assert a[key] == b[key], key
    assert not (folder / "chunks").exists()  # merged, then removed


def test_two_processes_evaluate_what_one_process_evaluates(reference, tmp_path):
    done = launch(eval_args(tmp_path), processes=2)
    assert_same_as(tmp_path, reference)
    assert len(outputs(reference)) == LIMIT * PER_PROBLEM
    stored = [json.loads((d / "eval_config.json").read_text()) for d in (tmp_path, reference)]
    assert stored[0] == stored[1]
    assert done.stderr.count(f"| 0/{LIMIT} [") == 1  # one progress bar, the main process's


def cut(lines: list[str]) -> str:
    """``lines`` as an interrupted write leaves them: the last one cut off mid-way."""
    return "\n".join(lines[:-1]) + "\n" + lines[-1][:9]


def interrupted_one_process(reference, folder):
    """``folder`` as one process killed while appending chunk 2 leaves it."""
    folder.mkdir()
    shutil.copy(reference / "eval_config.json", folder)
    lines = outputs(reference)
    (folder / "outputs.jsonl").write_text(cut(lines[: 2 * BATCH * PER_PROBLEM + 1]))


def interrupted_two_processes(reference, folder):
    """``folder`` as two processes killed mid-way leave it: chunk 0 and part of chunk 1 in
    outputs.jsonl (the main process was appending it), chunk 3 in its file (rank 1 was ahead),
    a half-written temporary file of chunk 4, no results.json."""
    folder.mkdir()
    shutil.copy(reference / "eval_config.json", folder)
    lines = outputs(reference)
    (folder / "outputs.jsonl").write_text(cut(chunk_lines(lines, 0) + chunk_lines(lines, 1)[:3]))
    (folder / "chunks").mkdir()
    (folder / "chunks" / "chunk-00003.jsonl").write_text("\n".join(chunk_lines(lines, 3)) + "\n")
    (folder / "chunks" / ".chunk-00004.jsonl.tmp").write_text(chunk_lines(lines, 4)[0][:20])


def test_two_processes_resume_what_one_process_left(reference, tmp_path):
    interrupted_one_process(reference, tmp_path / "run")
    launch(eval_args(tmp_path / "run"), processes=2)
    assert_same_as(tmp_path / "run", reference)


def test_one_process_resumes_what_two_processes_left(reference, tmp_path, monkeypatch):
    """In-process, so the chunks evaluated can be counted: chunk 0 (outputs.jsonl) and chunk 3
    (its file) are kept, chunks 1, 2 and 4 are evaluated."""
    interrupted_two_processes(reference, tmp_path / "run")
    seen, real = [], ev._chunk_records
    monkeypatch.setattr(ev, "_chunk_records", lambda *a: seen.append(a[4]) or real(*a))
    evaluate_here(tmp_path / "run")
    assert seen == [1, 2, 4]
    assert_same_as(tmp_path / "run", reference)


@pytest.mark.parametrize("batch_size", [3, 256])
def test_the_batch_size_changes_no_byte_of_the_outputs(reference, tmp_path, batch_size):
    """Each sampled response is seeded by its problem and sample index (not by its chunk, as
    before: 4 of 12 responses changed between batch sizes 2 and 3), and the records are written
    problem by problem, so ``outputs.jsonl`` is byte for byte the batch-2 file (and, by the test
    above, the 2-process one): models evaluated at different batch sizes share their randomness."""
    evaluate_here(tmp_path / "e", batch_size)
    assert (tmp_path / "e" / "outputs.jsonl").read_bytes() == (
        reference / "outputs.jsonl"
    ).read_bytes()
