"""The machinery every checker shares: the verdict, the one comparison, random inputs."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .. import tabular

N_INPUTS = 20


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``status`` is "pass", "fail", "not_implemented" or "error".

    A failing or raising check keeps the case that ended it: ``fn(*args, **kwargs)`` with
    ``args, kwargs = verdict.inputs`` reproduces it; ``expected`` is the reference's answer
    there and ``got`` yours, both as the checker compared them; ``slip`` names the known
    wrong answer yours matches (None when it matches none)."""

    name: str
    status: str
    message: str
    inputs: tuple[tuple, dict] | None = field(default=None, compare=False, repr=False)
    expected: Any = field(default=None, compare=False, repr=False)
    got: Any = field(default=None, compare=False, repr=False)
    slip: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __str__(self) -> str:
        return self.message


def _copy(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_copy(v) for v in x)
    return x


def _describe(args: tuple, kwargs: dict) -> str:
    def one(x: Any) -> str:
        if isinstance(x, Tensor):
            return f"tensor{tuple(x.shape)}"
        if isinstance(x, tabular.TreeMDP):
            return f"TreeMDP(K={x.vocab_size}, H={x.horizon})"
        if isinstance(x, float):
            return f"{x:.3g}"
        return repr(x)

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


class Slip(NamedTuple):
    """A wrong answer an exercise's text names: ``fn`` computes it (with the signature of the
    function the exercise asks for) and ``message`` says what it is and what to do instead. A
    checker names the slip when your answer equals ``fn``'s on the input where it fails (and
    ``fn``'s differs from the reference there): it compares outputs, never reads your code."""

    fn: Callable[..., Any]
    message: str

    def wrapped(self, wrap: Callable[[Callable], Callable]) -> Slip:
        """The slip with ``fn`` wrapped as the checker wraps the function it checks."""
        return Slip(wrap(self.fn), self.message)


def _answer(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """``fn``'s answer on a fresh copy of the inputs, or ``_RAISED``."""
    try:
        return fn(*_copy(args), **_copy(kwargs))
    except Exception:
        return _RAISED


_RAISED = object()


def _matching_slip(got, expected, slips, args, kwargs, differ, fn, later) -> Slip | None:
    """The slip your answer ``got`` is: among the slips whose answer on ``args``/``kwargs``
    differs from ``expected`` and equals ``got`` (``differ(a, b)`` is None when a and b
    agree), the one that also equals ``fn``'s answer on the most of the ``later`` cases
    ``(args, kwargs)`` (several slips can give the same answer on one input); None if none."""

    def same(a: Any, b: Any) -> bool:
        return a is not _RAISED and b is not _RAISED and differ(a, b) is None

    candidates = []
    for slip in slips:
        theirs = _answer(slip.fn, args, kwargs)
        if theirs is not _RAISED and not same(theirs, expected) and same(got, theirs):
            candidates.append(slip)
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    score = [0] * len(candidates)
    for a, k in later:
        yours = _answer(fn, a, k)
        for j, slip in enumerate(candidates):
            score[j] += same(yours, _answer(slip.fn, a, k))
    return candidates[score.index(max(score))]


_LIBRARY = tuple(
    str(Path(p).resolve())
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
) + (str(Path(__file__).resolve().parents[1]),)


def _in_library(filename: str) -> bool:
    path = str(Path(filename).resolve())
    return any(path == lib or path.startswith(lib + os.sep) for lib in _LIBRARY)


def _your_line(exc: BaseException) -> str | None:
    """Where ``exc`` left your code: the innermost frame outside the package, the standard
    library and the installed packages, as "file, line N: source" (None if there is none)."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and not _in_library(f.filename)
    ]
    if not frames:
        return None
    f = frames[-1]
    source = f": {f.line.strip()}" if f.line else ""
    return f"{f.filename}, line {f.lineno}{source}"


def mismatch(
    ours: Any, ref: Any, atol: float = 1e-6, rtol: float = 1e-5, *, who: str = "yours"
) -> str | None:
    """The one comparison of the course (exercise checkers and :func:`course.check_close`):
    None when ``ours`` and ``ref`` agree in float64 to ``|ours − ref| ≤ atol + rtol·|ref|`` —
    equal infinities and NaN against NaN agree —, else one line on the worst mismatch."""
    try:
        a = torch.as_tensor(ours).detach().to("cpu", torch.float64)
    except Exception as exc:  # e.g. a list of strings
        return f"the result is not a tensor of numbers ({type(exc).__name__}: {exc})"
    b = torch.as_tensor(ref).detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} but the reference has shape {tuple(b.shape)}"
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))  # equal infinities and NaNs agree
    diff = torch.where(same, 0.0, (a - b).abs()).nan_to_num(nan=math.inf, posinf=math.inf)
    bad = diff > atol + rtol * b.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0)
    if not bool(bad.any()):
        return None
    idx = tuple(int(i) for i in bad.nonzero()[0]) if a.dim() else ()
    at = f"at index {idx}: " if idx else ""
    return (
        f"{at}{who} {float(a[idx]):.6g} vs reference {float(b[idx]):.6g}, "
        f"max |diff| = {float(diff.max()):.3g} ({int(bad.sum())} of {a.numel()} entries wrong)"
    )


class _CallWatch:
    """Notes the first of ``functions`` that runs while the watch is on, whatever name it is
    called by (an alias, ``from … import``, a lambda around it): ``sys.setprofile`` sees the
    code object of every Python call. It catches calling the package; it cannot catch a copy
    of its source, which is writing the function after all."""

    def __init__(self, functions: Sequence[Callable[..., Any]]):
        self.names = {
            inspect.unwrap(f).__code__: f"{f.__module__}.{f.__qualname__}" for f in functions
        }
        self.seen: str | None = None

    def _profile(self, frame, event, arg):
        if event == "call" and self.seen is None:
            self.seen = self.names.get(frame.f_code)

    def __enter__(self) -> _CallWatch:
        self._previous = sys.getprofile()
        if self.names:
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(self._previous)


def _run_one(name: str, fn: Callable[..., Any], args: tuple, kwargs: dict, i: int, watch):
    """``fn``'s result on input ``i``, or the Verdict that ends the check there."""
    try:
        with watch:
            return fn(*_copy(args), **_copy(kwargs)), None
    except NotImplementedError:
        message = f"… {name}: not implemented yet (raises NotImplementedError)"
        return None, Verdict(name, "not_implemented", message)
    except Exception as exc:
        where = f"on input {i} ({_describe(args, kwargs)})"
        message = f"✗ {name} raised {type(exc).__name__} {where}: {exc}"
        line = _your_line(exc)
        if line is not None:
            message += f"\n  in {line}"
        return None, Verdict(name, "error", message, inputs=(args, kwargs))


def _failure(name, i, inputs, expected, got, problem, slips, differ, fn, later) -> Verdict:
    """The verdict of input ``i``, where ``got`` differs from ``expected`` by ``problem``;
    ``later`` yields the inputs after ``i`` (to tell apart slips that agree on input ``i``)."""
    args, kwargs = inputs
    message = f"✗ {name} differs on input {i} ({_describe(args, kwargs)}): {problem}"
    slip = _matching_slip(got, expected, slips, args, kwargs, differ, fn, later)
    if slip is not None:
        message += f"\n  → {slip.message}"
    return Verdict(
        name, "fail", message, inputs, expected, got, None if slip is None else slip.message
    )


def check_function(
    name: str,
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    make_inputs: Callable[[torch.Generator, int], tuple[tuple, dict]],
    *,
    n: int = N_INPUTS,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    quiet: bool = False,
    forbidden: Sequence[Callable[..., Any]] = (),
    compare: Callable[[Any, Any], str | None] | None = None,
    slips: Sequence[Slip] = (),
) -> Verdict:
    """Run ``fn`` and ``reference`` on ``n`` random inputs; print and return the verdict.

    ``make_inputs(generator, i)`` returns ``(args, kwargs)`` for input ``i``; the generator is
    seeded with ``seed``, so another seed gives other inputs (a hidden test of an assignment
    uses one). Each call gets its own copy of the inputs. NotImplementedError →
    "not_implemented"; any other exception → "error"; a call, inside ``fn``, of one of the
    ``forbidden`` functions (the package's own version of what the exercise asks you to write)
    → "fail"; the first mismatching input → "fail"; otherwise "pass". ``compare(yours,
    reference)`` returns None or what differs; the default, :func:`mismatch`, compares numbers
    (the reference's result made a tensor), another one compares e.g. strings exactly. On a
    failing input, an answer equal to one of the ``slips`` gets that slip's message. The
    verdict of a failure or an error keeps its input, the reference's answer and yours.
    """
    gen = torch.Generator().manual_seed(seed)
    differ = compare or (lambda a, b: mismatch(a, b, atol, rtol))
    verdict = None
    for i in range(n):
        args, kwargs = make_inputs(gen, i)
        expected = reference(*_copy(args), **_copy(kwargs))
        if compare is None:
            expected = torch.as_tensor(expected)
        watch = _CallWatch(forbidden)
        got, verdict = _run_one(name, fn, args, kwargs, i, watch)
        if verdict is not None:
            verdict = dataclasses.replace(verdict, expected=expected)
            break
        if watch.seen is not None:
            message = (
                f"✗ {name} calls {watch.seen}, the package's own version of what this exercise "
                "asks you to write: write it yourself"
            )
            verdict = Verdict(name, "fail", message, (args, kwargs), expected, got)
            break
        problem = differ(got, expected)
        if problem is not None:
            later = (make_inputs(gen, j) for j in range(i + 1, n))
            verdict = _failure(
                name, i, (args, kwargs), expected, got, problem, slips, differ, fn, later
            )
            break
    if verdict is None:
        verdict = Verdict(name, "pass", f"✓ {name} matches the reference on {n} random inputs")
    if not quiet:
        print(verdict.message)
    return verdict


# --------------------------------------------------------------------------------------------
# random inputs
# --------------------------------------------------------------------------------------------


def random_mask(gen: torch.Generator, batch: int, width: int, side: str | None = None) -> Tensor:
    """(B, T) bool action mask: one contiguous block of ≥ 1 actions per row, after ≥ 1 prompt
    column; ``side`` "right" (pads after the response), "left" (response ends the row) or None
    (chosen at random)."""
    if side is None:
        side = "left" if torch.rand((), generator=gen) < 0.5 else "right"
    mask = torch.zeros(batch, width, dtype=torch.bool)
    for b in range(batch):
        length = int(torch.randint(1, width, (), generator=gen))  # 1 … T−1 actions
        if side == "left":
            mask[b, width - length :] = True
        else:
            start = int(torch.randint(1, width - length + 1, (), generator=gen))
            mask[b, start : start + length] = True
    return mask


def edge_case_mask(gen: torch.Generator, i: int, batch: int, width: int) -> Tensor:
    """The action mask of input ``i`` of a batch checker, with the cases the text demands:
    input 1 left-padded, input 2 right-padded, others either; input 4 (mod 10) all-masked (a
    batch of empty responses: the answer must be 0, not NaN); input 7 (mod 10) with its first
    row empty."""
    side = {1: "left", 2: "right"}.get(i)
    mask = random_mask(gen, batch, width, side)
    if i % 10 == 4:
        mask[:] = False
    elif i % 10 == 7:
        mask[0] = False
    return mask


def _shape(gen: torch.Generator, i: int) -> tuple[int, int]:
    if i == 0:
        return 1, 2  # the smallest case: one row, one action
    return int(torch.randint(1, 6, (), generator=gen)), int(torch.randint(2, 12, (), generator=gen))


def _garbage(x: Tensor, mask: Tensor, gen: torch.Generator) -> Tensor:
    """Fill off-mask entries with large junk: a correct function must never read them."""
    junk = 100.0 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return torch.where(mask, x, junk)


def _beta(gen: torch.Generator) -> float:
    return float(torch.empty(()).uniform_(0.05, 1.0, generator=gen))


def _lam(gen: torch.Generator, i: int) -> float:
    if i % 5 == 1:
        return 0.0
    if i % 5 == 2:
        return 1.0
    return float(torch.rand((), generator=gen))


def _batch_inputs(gen: torch.Generator, i: int, garbage: bool = True):
    b, t = _shape(gen, i)
    mask = edge_case_mask(gen, i, b, t)
    pol, ref = (-3 * torch.rand(b, t, generator=gen, dtype=torch.float64) for _ in range(2))
    values = torch.randn(b, t, generator=gen, dtype=torch.float64)
    rewards = torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.3
    if garbage:
        pol, ref, values, rewards = (_garbage(x, mask, gen) for x in (pol, ref, values, rewards))
    if i % 3 == 0:
        bootstrap = None
    else:  # some rows cut by the length limit (b ≠ 0), the others terminal (b = 0)
        cut = torch.rand(b, generator=gen) < 0.5
        bootstrap = torch.where(cut, torch.randn(b, generator=gen, dtype=torch.float64), 0.0)
    return mask, pol, ref, values, rewards, bootstrap
