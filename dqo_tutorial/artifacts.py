"""Run artifacts on disk: atomic writes and resumable run directories.

A long job (sampling, evaluation, training) writes into one directory. Two rules keep an
interruption from losing or corrupting anything:

- every file, dataset or figure is written to a temporary sibling and renamed into place
  (:func:`atomic_write_json`, :func:`save_dataset_atomically`, :func:`save_figure_atomically`),
  so a reader sees the old one or the new one, never half of one;
- the first run stores what determines the results (:func:`check_run_identity`) once its inputs
  have loaded; a rerun with the same identity resumes, a rerun with a different one is refused
  with the differing fields named — unless the folder holds no results yet (a run that failed
  before producing any never blocks the corrected rerun);
- one run at a time writes into a folder (:func:`run_lock`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import MismatchError, RunLockedError

__all__ = [
    "atomic_write_json",
    "save_dataset_atomically",
    "save_figure_atomically",
    "check_run_identity",
    "holds_results",
    "run_lock",
]

IDENTITY_FILES = frozenset(
    {
        "sampling_config.json",
        "train_config.json",
        "eval_config.json",
        "pipeline_config.json",
        "experiment_config.json",
        "spec.json",
    }
)
"""The files in which the jobs store their run identity (bookkeeping, not results)."""


def atomic_write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_dataset_atomically(
    dataset: Any, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> None:
    """``dataset.save_to_disk`` (a 🤗 Dataset) into a temporary sibling, then rename: ``path``
    exists only when complete. ``extra``: a ``timing.json`` written inside it first."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)  # debris of an interrupted run
    dataset.save_to_disk(str(tmp))
    if extra is not None:
        atomic_write_json(tmp / "timing.json", extra)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def save_figure_atomically(fig: Any, path: str | os.PathLike[str]) -> None:
    """A matplotlib ``Figure`` as a PNG at ``path`` (tight layout, 120 dpi), through a rename."""
    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, path)


def holds_results(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds any result: a non-empty file that is neither a run identity
    (:data:`IDENTITY_FILES`) nor hidden (locks, temporary files)."""
    for p in Path(folder).rglob("*"):
        hidden = any(part.startswith(".") for part in p.relative_to(folder).parts)
        if not hidden and p.name not in IDENTITY_FILES and p.is_file() and p.stat().st_size:
            return True
    return False


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (``sample.temperature``); a top-level
    ``"config"`` mapping is merged in without its name."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = "" if (not prefix and k == "config") else f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out |= _flat(v, f"{key}." if key else "")
        else:
            out[key] = v
    return out


def check_run_identity(path: str | os.PathLike[str], identity: Mapping[str, Any]) -> None:
    """Store ``identity`` on the first run; on a resume, refuse any difference.

    ``identity`` is a JSON-able mapping, compared key by key (nested mappings as dotted keys) so
    that the :class:`~dqo_tutorial.errors.MismatchError` names e.g. ``temperature: stored 1.0,
    requested 0.7``. A folder that holds no results yet (:func:`holds_results`) takes the new
    identity: call this once the run's inputs have loaded, just before its first result.
    """
    path = Path(path)
    new_json = json.loads(json.dumps(identity))
    if not path.exists() or not holds_results(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, identity)
        return
    old, new = _flat(json.loads(path.read_text())), _flat(new_json)
    diff = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if diff:
        details = "; ".join(f"{k}: stored {old.get(k)!r}, requested {new.get(k)!r}" for k in diff)
        raise MismatchError(
            f"{path.parent} holds results of a different configuration ({details}): use a new "
            "output directory, or the stored configuration to resume"
        )


@contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder/.lock`` exclusively while the block runs; a second run into the same folder
    raises :class:`~dqo_tutorial.errors.RunLockedError` at once instead of racing the first.

    An OS lock (``flock``): a killed run releases it, so nothing stale blocks the rerun. A
    folder this call created and that holds nothing but the lock afterwards (a run that failed
    on its inputs) is removed again. Without ``fcntl`` (Windows) the block runs unlocked.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield folder
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read_text().strip() or "?"
            raise RunLockedError(
                f"{folder} is in use by another run (process {holder}): wait for it to "
                "finish, or write into another output directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield folder
    finally:
        os.close(fd)
        if created and [p.name for p in folder.iterdir()] == [".lock"]:
            lock.unlink(missing_ok=True)
            folder.rmdir()
