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
- one run at a time writes into a folder (:func:`run_lock`);
- a folder that cannot be made is refused before any work (:func:`check_output_folder`), and a
  write that fails for want of room or rights becomes one line naming the path
  (:func:`output_error`): the files already written stay whole, so the rerun resumes.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import MismatchError, OutputError, RunLockedError

__all__ = [
    "atomic_write_json",
    "save_dataset_atomically",
    "save_figure_atomically",
    "check_run_identity",
    "holds_results",
    "run_lock",
    "check_output_folder",
    "output_error",
    "source_commit",
]

JOB_OF_IDENTITY = {
    "sampling_config.json": "sample",
    "train_config.json": "train",
    "eval_config.json": "eval",
    "pipeline_config.json": "run",
    "experiment_config.json": "experiment",
    "spec.json": "experiment",
}
"""The files in which the jobs store their run identity, and the command whose job each is."""

IDENTITY_FILES = frozenset(JOB_OF_IDENTITY)
"""The run-identity files (bookkeeping, not results)."""

SMOKE_RUN_MB = 114
"""Disk a toy ``dqo-tutorial run --smoke`` fills (``du -sm``: 114 MB, nearly all of it the five
methods' checkpoints; measured 2026-12-04 at commit 80ae2ca on the 2-core CPU box)."""


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
    _refuse_another_jobs_folder(path)
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


def _refuse_another_jobs_folder(path: Path) -> None:
    """A folder holding another kind of job's results (``eval --out`` into a sampled dataset)."""
    others = [n for n in JOB_OF_IDENTITY if n != path.name and (path.parent / n).is_file()]
    if others and holds_results(path.parent):
        raise MismatchError(
            f"{path.parent} holds the results of a `dqo-tutorial {JOB_OF_IDENTITY[others[0]]}` "
            f"job ({others[0]}): give another --out, this job's own folder"
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


def check_output_folder(folder: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuse, before any work and creating nothing, an output folder that cannot be made: an
    empty path (an unset shell variable), a file, a path under a file, a place not writable."""
    if not str(folder).strip():
        example = f", e.g. {flag} runs/NAME" if flag.startswith("--") else ""
        raise OutputError(
            f"{flag} is empty (an unset shell variable?): give the output folder{example}"
        )
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: give another path")
    base = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not base.is_dir():
        raise OutputError(
            f"{flag} {path}: {base} is a file, so no folder can be made under it: give another path"
        )
    read_only = os.statvfs(base).f_flag & os.ST_RDONLY
    if read_only or not os.access(base, os.W_OK):
        code = errno.EROFS if read_only else errno.EACCES
        raise OutputError(_cannot_write(base, os.strerror(code), flag))


def _cannot_write(path: Path | str, reason: str, flag: str) -> str:
    return f"cannot write {path}: {reason.lower()}: give another {flag} (a folder you can write)"


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_NO_RIGHT = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


def output_error(
    err: BaseException, folder: str | os.PathLike[str], flag: str = "--out"
) -> OutputError | None:
    """The one-line :class:`~dqo_tutorial.errors.OutputError` for a write into ``folder`` that
    failed: no room (``ENOSPC``, also as torch's serialisation error ``inline_container …
    unexpected pos``), or no right (a file in the way, a read-only or foreign folder) on a path
    in or above ``folder``. None for any other error (it keeps its traceback)."""
    seen: BaseException | None = err
    for _ in range(8):  # the exception and what it was raised from or during
        if seen is None:
            break
        text = str(seen)
        if isinstance(seen, OSError) and seen.errno in _NO_ROOM:
            return _no_room(seen.filename or folder, Path(folder))
        if "inline_container" in text and ("unexpected pos" in text or "write failed" in text):
            return _no_room(folder, Path(folder))
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, OSError) and err.errno in _NO_RIGHT and err.filename:
        where, target = Path(err.filename).absolute(), Path(folder).absolute()
        if where == target or target in where.parents or where in target.parents:
            return OutputError(_cannot_write(err.filename, err.strerror or "", flag))
    return None


def _megabytes(paths: Iterator[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def _no_room(path: str | os.PathLike[str], folder: Path) -> OutputError:
    """No space left writing ``path``: how much is free there, and how much a job needs."""
    base = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    free = shutil.disk_usage(base).free / 1e6
    checkpoints = sorted((folder / "checkpoints").glob("step-*"))
    need = (
        f"the newest checkpoint there takes {_megabytes(checkpoints[-1].rglob('*')):.0f} MB"
        if checkpoints
        else f"a toy `run --smoke` needs about {SMOKE_RUN_MB} MB"
    )
    return OutputError(
        f"no space left on device writing {path} ({free:.0f} MB free there; {need}): free some "
        "space, then rerun the same command to resume (what was written is kept)"
    )


@functools.cache
def source_commit() -> str | None:
    """The short git commit of the package's source, or None (no git, not a checkout); read once
    per process, so a job started before a later commit names the commit it started on (a job
    calls it when it starts)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
