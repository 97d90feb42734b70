r"""Helpers of the notebook course (``notebooks/``): set-up check, comparisons, smoke mode, copies.

Every notebook starts with::

    from dqo_tutorial import course
    course.require("0.1.0")        # prints the versions in use, fails if the package is too old

and compares each quantity it derives by hand with the package kernel::

    course.check_close("λ-return", ours, dqo.kernels.lambda_return(...))

==============================  ==============================================================
name                            what it does
==============================  ==============================================================
``require(minimum)``            print python / torch / transformers / dqo_tutorial versions;
                                ``RuntimeError`` if ``dqo_tutorial.__version__ < minimum``
``check_close(name, a, b)``     ✓ with the largest difference, or ``AssertionError`` naming the
                                worst entry (shapes must agree)
``is_smoke()``                  True when the environment variable ``DQO_SMOKE`` is set to a
                                true value (``1``, ``true``, ``yes``)
``sized(full, smoke)``          ``smoke`` in smoke mode, else ``full``: smoke mode shrinks sizes
                                (samples, steps, lengths), never code paths
``make_student_copies(s, d)``   copy every notebook of ``s`` into ``d`` with each solution region
                                (``### BEGIN SOLUTION`` … ``### END SOLUTION``) replaced by
                                ``raise NotImplementedError`` and all outputs cleared
==============================  ==============================================================

The solution markers are nbgrader's, so an instructor can use nbgrader instead of
:func:`make_student_copies`; the two produce the same kind of student copy.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "SMOKE_ENV",
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "require",
    "versions",
    "check_close",
    "is_smoke",
    "sized",
    "strip_solutions",
    "make_student_copies",
]

SMOKE_ENV = "DQO_SMOKE"
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# set-up check
# --------------------------------------------------------------------------------------------


def _older(have: str, minimum: str) -> bool:
    """True when ``have`` is older than ``minimum`` (PEP 440 order: 0.2.0rc1 < 0.2.0)."""
    from packaging.version import Version

    return Version(have) < Version(minimum)


def versions() -> dict[str, str]:
    """Versions in use: python, torch, transformers, dqo_tutorial (and the smoke mode)."""
    import torch
    import transformers

    import dqo_tutorial

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dqo_tutorial": dqo_tutorial.__version__,
        "smoke mode": "on" if is_smoke() else "off",
    }


def require(minimum: str) -> None:
    """Print the versions in use and fail clearly when ``dqo_tutorial`` is older than ``minimum``.

    Returns None (so a notebook cell shows only the printed table; :func:`versions` gives the
    dict). Raises ``RuntimeError`` naming both versions and the fix.
    """
    found = versions()
    width = max(len(k) for k in found)
    for name, version in found.items():
        print(f"{name:<{width}}  {version}")
    have = found["dqo_tutorial"]
    if _older(have, minimum):
        raise RuntimeError(
            f"this notebook needs dqo_tutorial >= {minimum}, but version {have} is installed.\n"
            "Update it from the repository root: `make setup` (or `pip install -e .`), then "
            "restart the kernel."
        )


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def check_close(
    name: str, ours: Any, reference: Any, *, atol: float = 1e-6, rtol: float = 1e-5
) -> None:
    """Compare a hand-derived quantity with the package's; print ✓ or raise ``AssertionError``.

    ``ours`` and ``reference`` are tensors, arrays, lists or numbers of the same shape; they are
    compared by the exercise checkers' own rule (:func:`dqo_tutorial.exercises.mismatch`):
    float64, ``|ours − reference| ≤ atol + rtol·|reference|``, equal infinities and NaN against
    NaN agree. Returns None, so that a notebook cell shows only the printed line.
    """
    import torch

    from .exercises import mismatch

    wrong = mismatch(ours, reference, atol, rtol, who="ours")
    if wrong is not None:
        raise AssertionError(f"✗ {name}: differs {wrong}")
    a = torch.as_tensor(ours).detach().to("cpu", torch.float64)
    b = torch.as_tensor(reference).detach().to("cpu", torch.float64)
    finite = torch.isfinite(a) & torch.isfinite(b)
    worst = float((a - b)[finite].abs().max()) if bool(finite.any()) else 0.0
    print(f"✓ {name}: matches, max |diff| = {worst:.2e} over {a.numel()} entries")


# --------------------------------------------------------------------------------------------
# smoke mode
# --------------------------------------------------------------------------------------------


def is_smoke() -> bool:
    """True when ``DQO_SMOKE`` is set to ``1``/``true``/``yes`` (read at every call)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def sized(full: T, smoke: T) -> T:
    """``smoke`` when smoke mode is on, else ``full``. Only sizes change, never code paths."""
    return smoke if is_smoke() else full


# --------------------------------------------------------------------------------------------
# student copies
# --------------------------------------------------------------------------------------------


def strip_solutions(source: str) -> str:
    """Replace each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region (markers included) by
    ``raise NotImplementedError`` at the BEGIN marker's indentation; code before and after stays.

    Raises ``ValueError`` on an unmatched or nested marker.
    """
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if inside:
                raise ValueError("nested '### BEGIN SOLUTION'")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}raise NotImplementedError")
        elif stripped == END_SOLUTION:
            if not inside:
                raise ValueError("'### END SOLUTION' without '### BEGIN SOLUTION'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("'### BEGIN SOLUTION' without '### END SOLUTION'")
    return "\n".join(out)


def make_student_copies(src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str]):
    """Write a student copy of every ``*.ipynb`` in ``src_dir`` into ``dst_dir`` (same names).

    Solution regions of code cells are replaced by ``raise NotImplementedError``
    (:func:`strip_solutions`); every output and execution count is cleared. The source
    notebooks are not modified. Returns the list of written paths, sorted.
    """
    import nbformat

    src, dst = Path(src_dir), Path(dst_dir)
    if src.resolve() == dst.resolve():
        raise ValueError("dst_dir must differ from src_dir (the solutions would be lost)")
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
        out = dst / path.name
        nbformat.write(nb, out)
        written.append(out)
    return written
