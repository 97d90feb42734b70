"""Run artifacts on disk: atomic writes and resumable run directories.

A long job (sampling, evaluation, training) writes into one directory. Two rules keep an
interruption from losing or corrupting anything:

- every file, dataset or figure is written to a temporary sibling and renamed into place
  (:func:`atomic_write_json`, :func:`save_dataset_atomically`, :func:`save_figure_atomically`),
  so a reader sees the old one or the new one, never half of one;
- the first run stores what determines the results (:func:`check_run_identity`); a rerun with the
  same identity resumes, a rerun with a different one is refused with the differing fields named.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_json",
    "save_dataset_atomically",
    "save_figure_atomically",
    "check_run_identity",
]


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


def check_run_identity(path: str | os.PathLike[str], identity: Mapping[str, Any]) -> None:
    """Store ``identity`` on the first run; on a resume, refuse any difference.

    ``identity`` is a JSON-able mapping; a nested ``"config"`` mapping is compared field by field
    so that the error names e.g. ``temperature: stored 1.0, requested 0.7``.
    """
    path = Path(path)
    if not path.exists():
        atomic_write_json(path, identity)
        return
    stored = json.loads(path.read_text())

    def flat(d: Mapping[str, Any]) -> dict[str, Any]:
        return {**d.get("config", {}), **{k: v for k, v in d.items() if k != "config"}}

    old, new = flat(stored), flat(json.loads(json.dumps(identity)))
    diff = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if diff:
        details = "; ".join(f"{k}: stored {old.get(k)!r}, requested {new.get(k)!r}" for k in diff)
        raise ValueError(
            f"{path.parent} holds results of a different configuration ({details}). "
            "Use a new output directory, or the stored configuration to resume."
        )
