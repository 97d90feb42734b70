r"""A per-token Q-value explorer: see where along a response DQO's quantities move.

DQO scores every response token as an action (docs/dqo-method.md §3–§4):

=====================  ======================================================  ==========
quantity (key)         definition, action-aligned at the h-th response token    colours
=====================  ======================================================  ==========
``logp``               log π_θ(a_h|s_h)                                         sequential
``logp_ref``           log π_ref(a_h|s_h)                                       sequential
``log_ratio``          β·log(π_θ(a_h|s_h)/π_ref(a_h|s_h)) = Q − V               diverging
``value``              V_φ(s_h), the state *before* the token                   sequential
``q``                  Q(s_h,a_h) = β·log-ratio + V_φ(s_h)                      sequential
``advantage``          Â^λ_h = r_h + T_{h+1} − V_φ(s_h) = β·log-ratio − δ^λ_h    diverging
``lambda_return``      G^λ_h, the λ-return estimate of V(s_h) (§4)              sequential
``delta``              δ^λ_h = V_φ(s_h) − G^λ_h (λ = 0: the one-step δ_h)       diverging
``reward``             r_h: outcome reward on the last action + process reward  diverging
=====================  ======================================================  ==========

The advantage is the *critic's* estimate (the λ-target minus the value), next to the policy's own
implied advantage β·log-ratio; the residual δ^λ is exactly their difference. Every number comes
from the package's one log-prob path (:func:`~dqo_tutorial.modeling.per_token_logprobs`), its
value model (:class:`~dqo_tutorial.modeling.ValueModel`) and its kernel
(:func:`~dqo_tutorial.kernels.lambda_return`); rewards come from the trainer's own
``rewards.token_rewards`` (outcome + α-shaping with Φ(terminal) = 0).

Three views share **one data model**, :class:`TokenGrid` (display tokens, a (rows × tokens) value
array, a mask, a title, one colour scale shared by all rows, the reasoning-step boundaries and,
optionally, the state values for the per-step summary, the task's ✓/✗ per line and a blame
signal):

- :func:`to_html` — HTML spans with inline styles and ``title`` tooltips carrying the exact value;
  no JavaScript, no external resources. Whitespace, newlines and byte-level pieces are made
  visible (``␣``, ``↵``, ``⇥``, ``<0xE2>``), every reasoning line is its own row, and a per-step
  table beside the tokens lists V before and after each line, the largest drop highlighted.
  :func:`export_html` writes such a page for a typed response to a file in one call.
- :func:`plot_heatmap` / :func:`plot_token_strips` — static matplotlib figures (rows =
  checkpoints or methods, columns = tokens).
- :func:`explore` — an ipywidgets explorer: problem, response (preset or typed), checkpoints
  (π_ref, a trained run directory, …), quantity, β, λ and the process-reward coefficient α; it
  recomputes and re-renders an ``ipywidgets.HTML`` of the spans on every change. It works with the
  toy π_ref (``"toy"``) and with ``"smollm2"`` on a CPU.

**Credit assignment, shown honestly.** Each line carries the task's step checker's mark (✓ right,
✗ wrong: ``Task.line_correctness``, the toy task's :func:`~dqo_tutorial.toy.line_correctness`;
no marks for a task without one), so where the first wrong line is never has to be guessed. The
"largest drop" of the step table is marked only for a fall of at least :data:`MIN_DROP`, and
every row states its verdict in words (:func:`blame_verdict`): the line of the token of lowest
blame signal (:func:`~dqo_tutorial.credit.blamed_token`), against the first wrong line. The
explorer opens at the λ the run was trained with.

Diverging quantities use a colormap centred at 0 (symmetric limits, so 0 is the map's centre
colour); V, Q, G^λ and log-probs use a sequential map. Rows share the limits, so colours compare
across checkpoints.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from torch import Tensor, nn

from .configs import TrainConfig, field_default
from .credit import blamed_token
from .kernels import lambda_return
from .modeling import per_token_logprobs, value_model_for

__all__ = [
    "MIN_DROP",
    "Quantity",
    "QUANTITIES",
    "DIVERGING_CMAP",
    "SEQUENTIAL_CMAP",
    "TokenGrid",
    "blamed_line",
    "blame_verdict",
    "visible",
    "display_tokens",
    "token_spans_html",
    "step_summary_html",
    "to_html",
    "html_document",
    "write_html",
    "export_html",
    "plot_heatmap",
    "plot_token_strips",
    "compute_quantities",
    "Checkpoint",
    "load_checkpoint",
    "Example",
    "make_example",
    "forward_example",
    "token_rewards",
    "example_quantities",
    "build_grid",
    "ExplorerSession",
    "explorer_page",
    "Explorer",
    "explore",
]

DIVERGING_CMAP = "RdBu"
"""Signed quantities: red below 0, blue above, the centre colour at exactly 0."""
SEQUENTIAL_CMAP = "viridis"
"""V, Q, G^λ and log-probabilities."""


MIN_DROP = 0.05
"""The smallest drop the explorer reads as a localisation, in the quantity's own units.

Values are expected success probabilities (outcome rewards 1/0), and a critic that has learned
nothing about *where* a response goes wrong still moves by a few hundredths from token to token
(the noise of its fit); the lowest of such wiggles is no blame, just the least of many small
numbers. So a line's ΔV is marked "largest drop" only when it falls by at least ``MIN_DROP``, and
the blame verdict (:func:`blame_verdict`) blames a token only when its signal is ≤ −``MIN_DROP``;
otherwise it says "blames nothing". Both the legend and the verdict print the threshold."""


@dataclass(frozen=True)
class Quantity:
    """One quantity of the module table. ``blame`` is the key of the per-token signal its blame
    verdict reads (lower = more blamed; :func:`example_quantities` provides every key) and
    ``blame_label`` its name in the verdict: the quantity itself where low means bad (Â, β·ρ,
    r, log-probs), the token's value change ΔV_h = V(s_{h+1}) − V(s_h) for the state values (V, Q,
    G^λ: a low V is no blame, a falling one is), and −δ^λ for the residual (at λ = 0,
    −δ_h = r̃_h + ΔV_h)."""

    key: str
    label: str
    signed: bool
    needs_value: bool = False
    blame: str = ""
    blame_label: str = ""


QUANTITIES: dict[str, Quantity] = {
    q.key: q
    for q in (
        Quantity("logp", "log π_θ(a|s)", False, False, "logp", "log π_θ"),
        Quantity("logp_ref", "log π_ref(a|s)", False, False, "logp_ref", "log π_ref"),
        Quantity("log_ratio", "β·log(π_θ/π_ref)", True, False, "log_ratio", "β·log-ratio"),
        Quantity("value", "V(s)", False, True, "value_change", "ΔV"),
        Quantity("q", "Q(s,a)", False, True, "value_change", "ΔV"),
        Quantity("advantage", "advantage Â^λ", True, True, "advantage", "Â"),
        Quantity("lambda_return", "λ-return G^λ", False, True, "value_change", "ΔV"),
        Quantity("delta", "δ^λ", True, True, "neg_delta", "−δ^λ"),
        Quantity("reward", "reward r (outcome + process)", True, False, "reward", "r"),
    )
}


# ============================================================================ the data model


@dataclass
class TokenGrid:
    """One view's data: display tokens × rows (checkpoints or methods) of one quantity.

    ============== ============ =============================================================
    field          shape        meaning
    ============== ============ =============================================================
    tokens         T            display strings (already visible: see :func:`visible`)
    values         (R, T)       the quantity; a 1-D array is one row
    mask           (R, T)       True where a value is shown (default: finite values)
    title          str          heading of the view
    row_labels     R            one label per row (default ``row 0``, …)
    label          str          the quantity's name, used in tooltips and colour bars
    signed         bool         diverging colours centred at 0 (else sequential)
    vmin, vmax     float        the one colour scale shared by every row (default: from the
                                shown values; symmetric around 0 when ``signed``)
    cmap           str          matplotlib colormap name (default by ``signed``)
    step_starts    list[int]    token index where each reasoning line starts (sorted; 0 is
                                added); lines are rendered as separate rows of spans
    state_values   (R, T + 1)   optional V(s_h) before each token plus the value reached after
                                the last one; feeds the per-step summary
    line_marks     L            optional verdict of the task's step checker on each line of
                                :meth:`steps`: True ✓, False ✗, None unmarked (None: no
                                checker, no marks)
    blame          (R, T)       optional per-token blame signal, lower = more blamed (NaN: not
                                a candidate); feeds :func:`blame_verdict`
    blame_label    str          the signal's name in the verdict (``Â``, ``ΔV``, …)
    ============== ============ =============================================================
    """

    tokens: list[str]
    values: Any
    mask: Any = None
    title: str = ""
    row_labels: list[str] | None = None
    label: str = ""
    signed: bool = False
    vmin: float | None = None
    vmax: float | None = None
    cmap: str | None = None
    step_starts: list[int] = field(default_factory=list)
    state_values: Any = None
    line_marks: list[bool | None] | None = None
    blame: Any = None
    blame_label: str = ""

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[None]
        if values.ndim != 2 or values.shape[1] != len(self.tokens):
            raise ValueError(
                f"values must be (rows, {len(self.tokens)}) for {len(self.tokens)} tokens, "
                f"got {values.shape}"
            )
        self.values = values
        if self.mask is None:
            mask = np.isfinite(values)
        else:
            mask = np.broadcast_to(np.asarray(self.mask, dtype=bool), values.shape).copy()
            mask &= np.isfinite(values)
        self.mask = mask
        rows = values.shape[0]
        if self.row_labels is None:
            self.row_labels = [f"row {i}" for i in range(rows)]
        if len(self.row_labels) != rows:
            raise ValueError(f"{len(self.row_labels)} row labels for {rows} rows")
        self.step_starts = sorted(
            {0, *(int(s) for s in self.step_starts)} & set(range(max(1, len(self.tokens))))
        )
        if self.state_values is not None:
            sv = np.asarray(self.state_values, dtype=np.float64)
            if sv.ndim == 1:
                sv = sv[None]
            if sv.shape != (rows, len(self.tokens) + 1):
                raise ValueError(
                    f"state_values must be {(rows, len(self.tokens) + 1)}, got {sv.shape}"
                )
            self.state_values = sv
        if self.blame is not None:
            blame = np.asarray(self.blame, dtype=np.float64)
            blame = blame[None] if blame.ndim == 1 else blame
            if blame.shape != values.shape:
                raise ValueError(f"blame must be {values.shape}, got {blame.shape}")
            self.blame = blame
        if self.line_marks is not None:
            self.line_marks = [None if m is None else bool(m) for m in self.line_marks]
        if self.cmap is None:
            self.cmap = DIVERGING_CMAP if self.signed else SEQUENTIAL_CMAP
        shown = values[mask]
        if self.signed:
            bound = max(
                abs(self.vmin) if self.vmin is not None else 0.0,
                abs(self.vmax) if self.vmax is not None else 0.0,
            )
            if self.vmin is None and self.vmax is None:
                bound = float(np.abs(shown).max()) if shown.size else 0.0
            bound = bound if bound > 0 else 1.0
            self.vmin, self.vmax = -bound, bound
        else:
            lo = self.vmin if self.vmin is not None else (float(shown.min()) if shown.size else 0.0)
            hi = self.vmax if self.vmax is not None else (float(shown.max()) if shown.size else 1.0)
            if not hi > lo:
                lo, hi = lo - 0.5, hi + 0.5
            self.vmin, self.vmax = float(lo), float(hi)

    @property
    def norm(self) -> Normalize:
        return Normalize(vmin=self.vmin, vmax=self.vmax, clip=True)

    def rgba(self, value: float) -> tuple[float, float, float, float]:
        """The colour of ``value`` on the shared scale (clipped to the limits)."""
        return tuple(matplotlib.colormaps[self.cmap](float(self.norm(value))))

    def color(self, value: float) -> str:
        """``#rrggbb`` of ``value``; 0 on a signed grid is the colormap's centre, cmap(0.5)."""
        return to_hex(self.rgba(value), keep_alpha=False)

    def steps(self) -> list[tuple[int, int]]:
        """``(start, end)`` token ranges of the reasoning lines."""
        ends = [*self.step_starts[1:], len(self.tokens)]
        return [(s, e) for s, e in zip(self.step_starts, ends) if e > s]

    def mark(self, line: int) -> bool | None:
        """The step checker's verdict on line ``line`` (0-based): True, False or None."""
        marks = self.line_marks or []
        return marks[line] if line < len(marks) else None

    def first_wrong_line(self) -> int | None:
        """The first line (0-based) the step checker marks wrong; None if none is."""
        return next((k for k in range(len(self.steps())) if self.mark(k) is False), None)


# ============================================================================ the blame verdict


def blamed_line(grid: TokenGrid, row: int) -> int | None:
    """The line (0-based, of :meth:`TokenGrid.steps`) holding ``row``'s blamed token — the
    smallest finite ``grid.blame`` value, the first on a tie
    (:func:`~dqo_tutorial.credit.blamed_token`) — or None: no signal, or its minimum is above
    −:data:`MIN_DROP` (nothing falls far enough to blame)."""
    if grid.blame is None:
        return None
    signal = grid.blame[row]
    shown = np.isfinite(signal)
    position = int(blamed_token(torch.from_numpy(signal[None]), torch.from_numpy(shown[None]))[0])
    if position < 0:
        return None
    column = int(np.flatnonzero(shown)[position])
    if signal[column] > -MIN_DROP:
        return None
    return next(k for k, (s, e) in enumerate(grid.steps()) if s <= column < e)


def _close_second(grid: TokenGrid, row: int, blamed: int) -> int | None:
    """The line other than ``blamed`` whose lowest signal is the next lowest, if it comes within
    :data:`MIN_DROP` of the blamed token's (then the argmin is no clear localisation)."""
    signal = grid.blame[row]
    lowest = np.min(signal[np.isfinite(signal)])
    best = None
    for k, (s, e) in enumerate(grid.steps()):
        seg = signal[s:e][np.isfinite(signal[s:e])]
        if k != blamed and seg.size and seg.min() - lowest < MIN_DROP:
            if best is None or seg.min() < best[1]:
                best = (k, seg.min())
    return None if best is None else best[0]


def blame_verdict(grid: TokenGrid, row: int) -> str:
    """``row``'s credit assignment in words: which line its blame signal points at
    (:func:`blamed_line`; lines numbered from 1 as displayed) against the first line the task's
    step checker marks wrong (``grid.line_marks``), e.g.

    - ``Â blames line 2 (the first wrong line) ✓``
    - ``Â blames line 4, but the first wrong line is 2 ✗``
    - ``Â blames line 3, but no line is wrong ✗`` (a correct response)
    - ``Â: no drop above the threshold (0.05): blames nothing, but the first wrong line is 2 ✗``
    - ``… blames line 3 (no step checker to judge it)`` (a task without a checker)

    When another line's lowest signal comes within :data:`MIN_DROP` of the blamed token's, the
    verdict adds ``(line 1 comes within 0.05: no clear localisation)``: the argmin then picks
    between near-equal lines (e.g. a whole prefix pushed down together) and says little.

    Empty string when the grid has no blame signal or the row has no finite value of it (no
    value model)."""
    if grid.blame is None or not np.isfinite(grid.blame[row]).any():
        return ""
    label, blamed, wrong = grid.blame_label, blamed_line(grid, row), grid.first_wrong_line()
    checked = grid.line_marks is not None
    if blamed is None:
        text = f"{label}: no drop above the threshold ({MIN_DROP:g}): blames nothing"
        if not checked:
            return text
        if wrong is None:
            return text + "; no line is wrong ✓"
        return text + f", but the first wrong line is {wrong + 1} ✗"
    text = f"{label} blames line {blamed + 1}"
    if not checked:
        text += " (no step checker to judge it)"
    elif wrong is None:
        text += ", but no line is wrong ✗"
    elif blamed == wrong:
        text += " (the first wrong line) ✓"
    else:
        text += f", but the first wrong line is {wrong + 1} ✗"
    second = _close_second(grid, row, blamed)
    if second is not None:
        text += f" (line {second + 1} comes within {MIN_DROP:g}: no clear localisation)"
    return text


def _text_color(rgba: Sequence[float]) -> str:
    r, g, b = rgba[:3]
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#ffffff"


# ============================================================================ tokens made visible

_WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(text: str) -> str:
    """Whitespace made visible: space ``␣``, newline ``↵``, tab ``⇥``, CR ``␍``, any other
    whitespace character as ``<U+XXXX>``. Everything else is left alone (escape it for HTML)."""
    out = []
    for ch in text:
        if ch in _WHITESPACE:
            out.append(_WHITESPACE[ch])
        elif ch.isspace():
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    return "".join(out)


def _byte_level_table() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins (``Ġ`` = space, ``Ċ`` = newline, …) → the byte.

    Bytes that are printable Latin-1 stand for themselves; the others (controls, space, a few
    Latin-1 gaps) are numbered 256, 257, … in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in table.values():
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_LEVEL = _byte_level_table()


def _piece_bytes(piece: str) -> bytes | None:
    if all(ch in _BYTE_LEVEL for ch in piece):
        return bytes(_BYTE_LEVEL[ch] for ch in piece)
    return None


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Display strings of token ids: each token decoded alone, whitespace made visible.

    Byte-level BPE pieces come out as text (``Ġthe`` → ``␣the``, ``Ċ`` → ``↵``); a piece that is
    only part of a UTF-8 character (decodes to U+FFFD) is shown as its bytes, ``<0xE2><0x80>``.
    Special tokens keep their names (``<eos>``)."""
    out = []
    for t in ids:
        text = tokenizer.decode(
            [int(t)], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        if "\ufffd" in text:
            piece = tokenizer.convert_ids_to_tokens(int(t))
            raw = _piece_bytes(piece) if isinstance(piece, str) else None
            if raw is not None:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = "".join(f"<0x{b:02X}>" for b in raw)
        out.append(visible(text))
    return out


# ============================================================================ HTML

_FONT = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px"
_SPAN = "padding:1px 2px;margin:0 1px 0 0;border-radius:3px;white-space:pre"


def _fmt(value: float) -> str:
    """The exact value of a float (Python's shortest round-trip repr)."""
    return repr(float(value))


def _short(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.3f}"


def token_spans_html(grid: TokenGrid, row: int, start: int = 0, end: int | None = None) -> str:
    """The ``<span>`` of every token of ``row`` in ``[start, end)``, concatenated.

    A shown token: ``<span class="dqo-tok" style="background:#rrggbb;color:#rrggbb;…"
    title="j: token | label = exact value">token</span>``; a masked one gets the class
    ``dqo-tok dqo-off``, no colour and the tooltip ``j: token | no value``. Text and tooltips are
    HTML-escaped."""
    end = len(grid.tokens) if end is None else end
    parts = []
    for j in range(start, end):
        tok = visible(grid.tokens[j])
        if grid.mask[row, j]:
            v = float(grid.values[row, j])
            rgba = grid.rgba(v)
            style = f"background:{to_hex(rgba)};color:{_text_color(rgba)};{_SPAN}"
            title = f"{j}: {tok} | {grid.label} = {_fmt(v)}"
            cls = "dqo-tok"
        else:
            style = f"background:#ffffff;color:#999999;{_SPAN}"
            title = f"{j}: {tok} | no value"
            cls = "dqo-tok dqo-off"
        parts.append(
            f'<span class="{cls}" style="{style}" title="{html.escape(title)}">'
            f"{html.escape(tok)}</span>"
        )
    return "".join(parts)


def _colorbar_html(grid: TokenGrid, stops: int = 11) -> str:
    cmap = matplotlib.colormaps[grid.cmap]
    gradient = ",".join(
        f"{to_hex(cmap(i / (stops - 1)))} {100 * i / (stops - 1):.0f}%" for i in range(stops)
    )
    mid = "0" if grid.signed else _short((grid.vmin + grid.vmax) / 2)
    return (
        f'<div class="dqo-scale" style="display:flex;align-items:center;gap:6px;margin:4px 0">'
        f"<span>{html.escape(grid.label)}</span><span>{_short(grid.vmin)}</span>"
        f'<span style="display:inline-block;width:180px;height:10px;'
        f'background:linear-gradient(to right,{gradient})"></span>'
        f'<span>{_short(grid.vmax)}</span><span style="color:#666">(centre {mid}, '
        f"{html.escape(grid.cmap)}, shared by all rows)</span></div>"
    )


def step_summary_html(grid: TokenGrid, row: int) -> str:
    """The per-step table of ``row``: V before and after every reasoning line and their
    difference; the line with the largest drop is marked (the likely wrong step) when it falls
    by at least :data:`MIN_DROP` — a smaller fall is no localisation, and no line is marked.

    Needs ``grid.state_values``; empty string without it."""
    if grid.state_values is None:
        return ""
    sv = grid.state_values[row]
    steps = grid.steps()
    drops = [sv[e] - sv[s] for s, e in steps]
    finite = [(d, k) for k, d in enumerate(drops) if math.isfinite(d)]
    worst = min(finite)[1] if finite and min(finite)[0] <= -MIN_DROP else None
    head = (
        '<tr style="color:#555"><th style="text-align:left">step</th>'
        '<th style="text-align:left">line</th><th>V before</th><th>V after</th><th>ΔV</th></tr>'
    )
    body = []
    for k, (s, e) in enumerate(steps):
        text = visible("".join(grid.tokens[s:e]))
        text = text if len(text) <= 28 else text[:27] + "…"
        mark = k == worst
        style = ' style="background:#fde0dd;font-weight:bold"' if mark else ""
        body.append(
            f'<tr class="dqo-step{" dqo-worst" if mark else ""}"{style}><td>{k + 1}</td>'
            f"<td>{html.escape(text)}</td><td>{_short(sv[s])}</td><td>{_short(sv[e])}</td>"
            f"<td>{_short(drops[k])}{' ◀ largest drop' if mark else ''}</td></tr>"
        )
    return (
        '<table class="dqo-steps" style="border-collapse:separate;border-spacing:10px 1px;'
        f'font-size:12px;flex:0 0 auto">{head}{"".join(body)}</table>'
    )


MARK_COLORS = {True: "#1a7f37", False: "#c62828"}
"""✓ green, ✗ red: the step checker's marks (HTML and figures)."""


def _mark_html(grid: TokenGrid, line: int) -> str:
    """The ✓/✗ of ``line`` (0-based), a blank of the same width for an unmarked line, nothing
    at all when the grid has no step checker."""
    if grid.line_marks is None:
        return ""
    box = "display:inline-block;width:1.3em;font-weight:bold"
    mark = grid.mark(line)
    if mark is None:
        return f'<span style="{box}"></span>'
    cls, word = ("dqo-ok", "right") if mark else ("dqo-bad", "wrong")
    title = f"line {line + 1} is {word} (the task's step checker)"
    return (
        f'<span class="dqo-mark {cls}" style="color:{MARK_COLORS[mark]};{box}" '
        f'title="{html.escape(title)}">{"✓" if mark else "✗"}</span>'
    )


def _legend_html(grid: TokenGrid, summary: bool) -> str:
    """What the marks mean, with the :data:`MIN_DROP` threshold; empty if nothing is marked."""
    parts = []
    if grid.line_marks is not None:
        parts.append("✓ / ✗ the line is right / wrong (the task's step checker)")
    if summary and grid.state_values is not None:
        parts.append(
            f"◀ largest drop: the line whose V falls most, marked only for a fall of at least "
            f"{MIN_DROP:g} (a smaller one is no localisation)"
        )
    if grid.blame is not None:
        parts.append(
            f"verdict: the line of the token of lowest {grid.blame_label} (the first on a tie), "
            f"blamed only at {grid.blame_label} ≤ −{MIN_DROP:g}"
        )
    if not parts:
        return ""
    text = html.escape(" · ".join(parts))
    return f'<div class="dqo-legend" style="color:#666;font-size:12px;margin:2px 0">{text}</div>'


def _row_html(grid: TokenGrid, r: int, summary: bool) -> str:
    """One row of :func:`to_html`: label, verdict, the lines of spans and the step table."""
    lines = []
    for k, (s, e) in enumerate(grid.steps()):
        lines.append(
            f'<div class="dqo-line" data-step="{k + 1}" style="margin:2px 0;padding-left:4px;'
            f'border-left:3px solid #bbbbbb"><span class="dqo-stepno" style="color:#888;'
            f'display:inline-block;width:2.2em">{k + 1}</span>{_mark_html(grid, k)}'
            f"{token_spans_html(grid, r, s, e)}</div>"
        )
    table = step_summary_html(grid, r) if summary else ""
    verdict = blame_verdict(grid, r)
    if verdict:
        verdict = f'<div class="dqo-verdict" style="color:#333">{html.escape(verdict)}</div>'
    label = html.escape((grid.row_labels or [])[r])
    return (
        f'<div class="dqo-row" data-row="{r}" style="margin:8px 0">'
        f'<div class="dqo-label" style="font-weight:bold">{label}</div>{verdict}'
        f'<div style="display:flex;gap:24px;align-items:flex-start">'
        f'<div class="dqo-tokens" style="flex:1 1 auto;line-height:1.9">{"".join(lines)}</div>'
        f"{table}</div></div>"
    )


def to_html(grid: TokenGrid, *, summary: bool = True, header: str = "") -> str:
    """The whole view as one self-contained HTML fragment (inline styles, no scripts).

    Title, colour bar, a legend of the marks (with the :data:`MIN_DROP` threshold), then per
    row: its label, its blame verdict (:func:`blame_verdict`), one line of spans per reasoning
    step (numbered at the left: the step boundaries; then ✓/✗ from the task's step checker) and,
    with ``summary``, the per-step table beside them. ``header`` is inserted verbatim under the
    title (already HTML). :func:`html_document` makes it a file of its own."""
    rows = "".join(_row_html(grid, r, summary) for r in range(len(grid.row_labels or [])))
    title = f'<div class="dqo-title" style="font-weight:bold">{html.escape(grid.title)}</div>'
    return (
        f'<div class="dqo-viz" style="{_FONT}">{title}{header}{_colorbar_html(grid)}'
        f"{_legend_html(grid, summary)}{rows}</div>"
    )


def html_document(fragment: str, title: str = "DQO Q-value explorer") -> str:
    """A complete, self-contained HTML page around a fragment of :func:`to_html`: UTF-8, no
    scripts, no stylesheets, no external resources (it opens offline, in any browser)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="margin:16px">{fragment}</body></html>\n'
    )


# ============================================================================ matplotlib


def _masked(grid: TokenGrid) -> np.ma.MaskedArray:
    return np.ma.masked_array(grid.values, mask=~grid.mask)


def _draw_marks(ax: Any, grid: TokenGrid) -> None:
    """✓/✗ of the step checker above each marked line's columns (in ``ax``'s data x)."""
    for k, (s, e) in enumerate(grid.steps()):
        mark = grid.mark(k)
        if mark is not None:
            ax.text((s + e - 1) / 2, 1.02, "✓" if mark else "✗", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=10, fontweight="bold",
                    color=MARK_COLORS[mark])  # fmt: skip


def plot_heatmap(grid: TokenGrid, *, width: float | None = None) -> Figure:
    """A heatmap: rows = checkpoints/methods, columns = tokens (the display strings as tick
    labels), one shared colour scale, dashed lines at the reasoning-step boundaries, ✓/✗ of the
    task's step checker above each line (``grid.line_marks``)."""
    n_rows, n_tok = grid.values.shape
    fig = Figure(figsize=(width or max(6.0, 0.22 * n_tok + 2), 1.0 + 0.45 * n_rows + 0.6))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[grid.cmap].with_extremes(bad="#eeeeee")
    im = ax.imshow(_masked(grid), aspect="auto", cmap=cmap, norm=grid.norm, interpolation="none")
    ax.set_xticks(
        range(n_tok),
        [visible(t) for t in grid.tokens],
        rotation=90,
        fontsize=7,
        fontfamily="monospace",
    )
    ax.set_yticks(range(n_rows), grid.row_labels)
    for s in grid.step_starts[1:]:
        ax.axvline(s - 0.5, color="black", lw=0.8, ls="--")
    _draw_marks(ax, grid)
    ax.set_title(grid.title, fontsize=10, pad=18 if grid.line_marks is not None else 6)
    fig.colorbar(im, ax=ax, label=grid.label, pad=0.01)
    fig.tight_layout()
    return fig


def plot_token_strips(grid: TokenGrid, *, width: float | None = None) -> Figure:
    """Token strips: one strip per row, every token a coloured cell with its text written in
    it (black or white for contrast), step boundaries as thick vertical lines, ✓/✗ of the task's
    step checker above the first strip and each row's blame verdict (:func:`blame_verdict`)
    under its strip."""
    n_rows, n_tok = grid.values.shape
    verdicts = grid.blame is not None  # a line of text under every strip
    fig = Figure(
        figsize=(width or max(6.0, 0.32 * n_tok + 1.5), 0.9 + (0.8 if verdicts else 0.55) * n_rows),
        layout="constrained",  # room for the marks above and the verdicts under the strips
    )
    axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
    cmap = matplotlib.colormaps[grid.cmap].with_extremes(bad="#eeeeee")
    for r, ax in enumerate(axes):
        ax.imshow(_masked(grid)[r : r + 1], aspect="auto", cmap=cmap, norm=grid.norm)
        for j, tok in enumerate(map(visible, grid.tokens)):
            color = _text_color(grid.rgba(grid.values[r, j])) if grid.mask[r, j] else "#999999"
            ax.text(
                j, 0, tok, ha="center", va="center", fontsize=7, family="monospace", color=color
            )
        for s in grid.step_starts[1:]:
            ax.axvline(s - 0.5, color="black", lw=2)
        ax.set_xticks([])
        ax.set_yticks([0], [grid.row_labels[r]])
        ax.set_xlabel(blame_verdict(grid, r), fontsize=8, loc="left")
    _draw_marks(axes[0], grid)
    axes[0].set_title(
        f"{grid.title} — {grid.label}", fontsize=10, pad=18 if grid.line_marks is not None else 6
    )
    fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=grid.norm, cmap=cmap), ax=list(axes), label=grid.label
    )
    return fig


# ============================================================================ quantities


def compute_quantities(
    logp: Tensor,
    logp_ref: Tensor,
    values: Tensor | None,
    final: Tensor | None,
    rewards: Tensor,
    mask: Tensor,
    terminal: Tensor,
    *,
    beta: float,
    lam: float,
) -> dict[str, Tensor]:
    r"""Every quantity of the module table, (B, T) action-aligned, 0 off-mask.

    ρ = log π_θ − log π_ref; r̃ = r − β·ρ; b = 0 for terminal rows, V(s_{H+1}) = ``final``
    otherwise; G^λ = :func:`~dqo_tutorial.kernels.lambda_return` (r̃, V, mask, λ, b);
    δ^λ = V − G^λ; Q = β·ρ + V; Â = β·ρ − δ^λ (= r + T_{h+1} − V). Without a value model
    (``values=None``) the V-dependent quantities are NaN. Also returns ``"final"`` (B,): the
    value reached after the last action, r_H + b (the outcome for a terminal row)."""
    m = mask.bool()
    zero = torch.zeros((), dtype=torch.float32)
    logp, logp_ref, rewards = (x.float() for x in (logp, logp_ref, rewards))
    rho = torch.where(m, logp - logp_ref, zero)
    r = torch.where(m, rewards, zero)
    out = {
        "logp": torch.where(m, logp, zero),
        "logp_ref": torch.where(m, logp_ref, zero),
        "log_ratio": beta * rho,
        "reward": r,
    }
    last = torch.where(m, torch.arange(m.shape[1]), -1).max(dim=1).values.clamp(min=0)
    r_last = r.gather(1, last[:, None]).squeeze(1)
    if values is None:
        nan = torch.full_like(rho, math.nan)
        out |= {k: nan for k in ("value", "q", "advantage", "lambda_return", "delta")}
        out["final"] = torch.full_like(r_last, math.nan)
        return out
    v = torch.where(m, values.float(), zero)
    b = torch.where(terminal.bool(), torch.zeros_like(final.float()), final.float())
    g = lambda_return(r - beta * rho, v, m, lam, b)
    delta = torch.where(m, v - g, zero)
    out |= {
        "value": v,
        "q": torch.where(m, beta * rho + v, zero),
        "advantage": torch.where(m, beta * rho - delta, zero),
        "lambda_return": g,
        "delta": delta,
        "final": r_last + b,
    }
    return out


# ============================================================================ models and examples


@dataclass
class Checkpoint:
    """A policy π_θ with its tokenizer and, for a DRO/DQO run, its value model V_φ.

    ``reference`` is the model spec of the run's π_ref (its ``train_config.json``), None when
    unknown (a bare model: the explorer's reference is used); ``config`` the run's train config."""

    name: str
    policy: nn.Module
    tokenizer: Any
    value_model: nn.Module | None = None
    shared_value: bool = False
    reference: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _run_config(run: Path) -> dict[str, Any]:
    for name in ("train_config.json", "train_summary.json"):
        if (run / name).is_file():
            data = json.loads((run / name).read_text())
            return dict(data.get("config", data))
    return {}


def load_checkpoint(spec: str, name: str | None = None, *, device: str = "cpu") -> Checkpoint:
    """A checkpoint from a model spec (``"toy"``, ``"smollm2"``, a model directory, …) or a
    training run directory (``policy/`` + ``value_model.safetensors``, see
    :mod:`dqo_tutorial.train`), loaded in float32 on ``device`` in eval mode."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars in the explorer's output
    try:
        return _load_checkpoint(spec, name, device)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_checkpoint(spec: str, name: str | None, device: str) -> Checkpoint:
    from .models import load_model_and_tokenizer

    path = Path(spec).expanduser()
    if path.is_dir() and (path / "policy").is_dir():
        cfg = _run_config(path)
        policy, tok = load_model_and_tokenizer(str(path / "policy"), device=device, dtype="float32")
        value, shared = None, False
        weights = path / "value_model.safetensors"
        if weights.is_file():
            from safetensors.torch import load_file

            state = load_file(str(weights), device=str(device))
            kind = cfg.get("value_model", "separate")
            shared = kind == "shared"
            value = value_model_for(
                policy,
                kind,
                extra_layers=cfg.get("value_extra_layers", 0),
                head_width=cfg.get("value_head_width", 0),
            )
            value.load_state_dict(state)
            value.to(device=device, dtype=torch.float32).eval()
        return Checkpoint(name or path.name, policy, tok, value, shared, cfg.get("model"), cfg)
    policy, tok = load_model_and_tokenizer(spec, device=device, dtype="float32")
    return Checkpoint(name or spec, policy, tok)


@dataclass
class Example:
    """One (problem, response) tokenised once (:func:`~dqo_tutorial.collate.tokenize_example`).

    ``input_ids``/``action_mask`` cover prompt + response (+ EOS when ``terminal``);
    ``n_prompt`` prompt tokens come first; ``step_starts`` are response-token indices where a
    reasoning line starts; ``boundary_phi`` the exact ``(h, Φ)`` potentials (toy task) or None;
    ``line_marks`` the task's step checker on each of those lines (True ✓, False ✗, None for a
    line the checker does not grade, e.g. an EOS alone after a final newline), None when the
    task has no step checker (``Task.line_correctness``)."""

    question: str
    gold: str
    prompt: str
    response: str
    input_ids: list[int]
    action_mask: list[int]
    terminal: bool
    n_prompt: int
    tokens: list[str]
    step_starts: list[int]
    reward: float
    boundary_phi: list[tuple[int, float]] | None
    line_marks: list[bool | None] | None = None


def _line_marks(
    tokenizer: Any, task: Any, question: str, response: str, ids: Sequence[int], starts: list[int]
) -> list[bool | None] | None:
    """The step checker's verdict on each displayed line (one per ``starts``): the response
    line it shows is the number of newlines decoded before its first token."""
    if task.line_correctness is None:
        return None
    flags = task.line_correctness(question, response)
    marks: list[bool | None] = []
    for start in starts:
        line = tokenizer.decode(
            list(ids[:start]), skip_special_tokens=False, clean_up_tokenization_spaces=False
        ).count("\n")
        marks.append(flags[line] if line < len(flags) else None)
    return marks


def make_example(
    tokenizer: Any, task: Any, question: str, gold: str, response: str, *, terminal: bool = True
) -> Example:
    """Tokenise ``task``'s prompt for ``question`` with ``response``; grade it against ``gold``
    (outcome reward 1/0, only for a terminal response), find its step boundaries and mark each
    line with the task's step checker (if it has one)."""
    from .collate import tokenize_example
    from .sampling import step_boundaries

    prompt = task.format_prompt(question, tokenizer)
    ex = tokenize_example(tokenizer, prompt, response, add_eos=terminal)
    n_prompt = ex["action_mask"].index(1) if 1 in ex["action_mask"] else len(ex["action_mask"])
    resp_ids = ex["input_ids"][n_prompt:]
    phi = None
    if task.exact_potentials is not None and resp_ids:
        phi = list(task.exact_potentials(tokenizer, question, resp_ids))
    starts = [0, *step_boundaries(tokenizer, resp_ids)] if resp_ids else []
    return Example(
        question=question,
        gold=gold,
        prompt=prompt,
        response=response,
        input_ids=ex["input_ids"],
        action_mask=ex["action_mask"],
        terminal=bool(ex["terminal"]),
        n_prompt=n_prompt,
        tokens=display_tokens(tokenizer, resp_ids),
        step_starts=starts,
        reward=float(task.is_correct(response, gold, "strict")) if ex["terminal"] else 0.0,
        boundary_phi=phi,
        line_marks=_line_marks(tokenizer, task, question, response, resp_ids, starts),
    )


def token_rewards(example: Example, alpha: float) -> list[float]:
    """Action-aligned r_h of ``example`` exactly as the trainer builds them: the outcome reward
    on the last action of a terminal response plus α-shaped process rewards (needs exact
    potentials; α is ignored without them)."""
    from . import rewards

    row: dict[str, Any] = {
        "input_ids": example.input_ids,
        "action_mask": example.action_mask,
        "terminal": example.terminal,
        "reward": example.reward,
    }
    if example.boundary_phi is not None and alpha:
        row |= {
            "step_boundaries": [h for h, _ in example.boundary_phi],
            "step_phi": [p for _, p in example.boundary_phi],
            "phi_start": 1.0,
        }
    else:
        alpha = 0.0
    return rewards.token_rewards(row, alpha)


@torch.no_grad()
def forward_example(
    checkpoint: Checkpoint, reference: nn.Module, example: Example
) -> dict[str, Tensor | None]:
    """The model outputs one view needs, (1, T): log π_θ, log π_ref, V(s_h) and V(s_{H+1})."""
    device = next(checkpoint.policy.parameters()).device
    ids = torch.tensor([example.input_ids], device=device)
    att = torch.ones_like(ids)
    shared = checkpoint.value_model is not None and checkpoint.shared_value
    out = per_token_logprobs(checkpoint.policy, ids, att, output_hidden=shared)
    logp, hidden = out if shared else (out, None)
    ref = per_token_logprobs(reference, ids.to(next(reference.parameters()).device), att)
    values = final = None
    if checkpoint.value_model is not None:
        v = checkpoint.value_model(hidden, att) if shared else checkpoint.value_model(ids, att)
        values, final = v.values.cpu(), v.final.cpu()
    return {"logp": logp.cpu(), "logp_ref": ref.cpu(), "values": values, "final": final}


def example_quantities(
    example: Example, fwd: Mapping[str, Tensor | None], *, beta: float, lam: float, alpha: float
) -> dict[str, np.ndarray]:
    """:func:`compute_quantities` of one example, cut to its response tokens (numpy, length H;
    ``"state_values"`` has length H + 1: V before each token, then the value reached), with the
    blame signals of :data:`QUANTITIES` beside them: ``"value_change"`` V(s_{h+1}) − V(s_h) and
    ``"neg_delta"`` −δ^λ_h."""
    mask = torch.tensor([example.action_mask])
    rewards = torch.tensor([token_rewards(example, alpha)], dtype=torch.float32)
    q = compute_quantities(
        fwd["logp"],
        fwd["logp_ref"],
        fwd["values"],
        fwd["final"],
        rewards,
        mask,
        torch.tensor([example.terminal]),
        beta=beta,
        lam=lam,
    )
    n = example.n_prompt
    out = {k: v[0, n:].double().numpy() for k, v in q.items() if k != "final"}
    out["state_values"] = np.append(out["value"], float(q["final"][0]))
    out["value_change"] = np.diff(out["state_values"])
    out["neg_delta"] = -out["delta"]
    return out


def build_grid(
    example: Example,
    per_row: Mapping[str, Mapping[str, np.ndarray]],
    quantity: str,
    *,
    title: str = "",
) -> TokenGrid:
    """The :class:`TokenGrid` of one quantity for several checkpoints (rows) of one example,
    with the example's line marks and the quantity's blame signal (:class:`Quantity`)."""
    spec = QUANTITIES[quantity]
    labels = list(per_row)
    return TokenGrid(
        tokens=example.tokens,
        values=np.stack([per_row[k][quantity] for k in labels]),
        title=title or spec.label,
        row_labels=labels,
        label=spec.label,
        signed=spec.signed,
        step_starts=example.step_starts,
        state_values=np.stack([per_row[k]["state_values"] for k in labels]),
        line_marks=example.line_marks,
        blame=np.stack([per_row[k][spec.blame] for k in labels]),
        blame_label=spec.blame_label,
    )


# ============================================================================ the explorer
#
# Two units: ExplorerSession holds the state and does the computation (checkpoints, caches,
# examples, quantities, the rendered page) and knows nothing of widgets; Explorer is the layout
# and the callbacks, reading its controls and handing them to the session.


class ExplorerSession:
    """The explorer's state and computation, without widgets (scriptable, and what
    :class:`Explorer` displays).

    ``specs`` maps a row name to a model spec or run directory; checkpoints load on first use
    and stay cached, as do tokenised examples, model forwards and greedy samples, so moving β, λ
    or α only reruns the kernels. ``beta`` and ``lam`` are the first run's own β and λ (its
    train config), else TrainConfig's defaults (π_ref alone: λ = 1)."""

    def __init__(
        self,
        task: str = "toy",
        checkpoints: Mapping[str, str] | None = None,
        *,
        reference: str | None = None,
        split: str = "test",
        problems: int | None = 20,
        source: str | None = None,
        device: str = "cpu",
    ):
        from .tasks import get_task

        self.task = get_task(task)
        self.reference_spec = reference or self.task.default_model
        self.device = device
        self.specs: dict[str, str] = dict(checkpoints or {"π_ref": self.reference_spec})
        self.problems = self.task.load(split, source, problems)
        self._models: dict[str, Checkpoint] = {}
        self._refs: dict[str, nn.Module] = {}
        self._examples: dict[tuple, Example] = {}
        self._forwards: dict[tuple, dict] = {}
        self._greedy: dict[tuple, str] = {}

    def _run_setting(self, key: str) -> float:
        """``key`` of the first training run among the rows (its train config, as
        :func:`load_checkpoint` reads it), else TrainConfig's default."""
        for spec in self.specs.values():
            cfg = _run_config(Path(spec).expanduser())
            if key in cfg:
                return float(cfg[key])
        return float(field_default(TrainConfig, key))

    @property
    def beta(self) -> float:
        """The β of the first training run among the rows, else TrainConfig's default."""
        return self._run_setting("beta")

    @property
    def lam(self) -> float:
        """The λ of the first training run among the rows — the λ its critic was trained for,
        so its advantages are read as trained — else TrainConfig's default, 1.0."""
        return self._run_setting("lam")

    def problem_index(self, question: int | str) -> int:
        """``question`` as an index of :attr:`problems`: an index is checked, a question text
        is looked up (spaces at the ends ignored)."""
        if isinstance(question, int):
            if not 0 <= question < len(self.problems):
                raise IndexError(f"problem {question}: the session has {len(self.problems)}")
            return question
        text = question.strip()
        for i, p in enumerate(self.problems):
            if p.question.strip() == text:
                return i
        raise ValueError(
            f"question {question!r} is not among the {len(self.problems)} loaded problems of "
            f"task {self.task.name!r} (pass split= to look in another split)"
        )

    def checkpoint(self, name: str) -> Checkpoint:
        if name not in self._models:
            self._models[name] = load_checkpoint(self.specs[name], name, device=self.device)
        return self._models[name]

    def reference_for(self, ckpt: Checkpoint) -> nn.Module:
        spec = ckpt.reference or self.reference_spec
        for other in self._models.values():  # π_ref itself is often one of the rows
            if self.specs.get(other.name) == spec and other.value_model is None:
                return other.policy
        if spec not in self._refs:
            self._refs[spec] = load_checkpoint(spec, device=self.device).policy
        return self._refs[spec]

    def add(self, spec: str) -> str:
        """Load ``spec`` as a new row and return its name; on failure nothing is added."""
        name = Path(spec).name or spec
        while name in self.specs and self.specs[name] != spec:
            name += "'"
        self.specs[name] = spec
        try:
            self.checkpoint(name)
        except BaseException:
            del self.specs[name]
            raise
        return name

    def presets(self, index: int) -> dict[str, str]:
        """Named responses to problem ``index``: its gold solution, then the task's variants."""
        p = self.problems[index]
        variants = self.task.variants(p) if self.task.variants else {}
        return {"gold solution": self.task.gold_solution(p), **variants}

    def greedy_text(self, name: str, index: int) -> str:
        """The greedy response of checkpoint ``name`` to problem ``index`` (cached)."""
        from .sampling import generate

        p = self.problems[index]
        key = (name, p.question)
        if key not in self._greedy:
            ckpt = self.checkpoint(name)
            prompt = self.task.format_prompt(p.question, ckpt.tokenizer)
            (gen,) = generate(  # the one generation seam (sampling.Sampler), greedy
                ckpt.policy,
                ckpt.tokenizer,
                [prompt],
                temperature=0.0,
                max_new_tokens=self.task.max_new_tokens,
                record_logps=False,
            )
            self._greedy[key] = gen.text
        return self._greedy[key]

    def example(self, index: int, text: str, terminal: bool, tokenizer: Any) -> Example:
        p = self.problems[index]
        key = (p.question, text, terminal)
        if key not in self._examples:
            self._examples[key] = make_example(
                tokenizer, self.task, p.question, p.gold, text, terminal=terminal
            )
        return self._examples[key]

    def rows(
        self,
        names: Sequence[str],
        index: int,
        text: str,
        *,
        terminal: bool = True,
        beta: float,
        lam: float,
        alpha: float,
    ) -> tuple[Example, dict[str, dict[str, np.ndarray]]]:
        """The example of (problem ``index``, ``text``) and every named checkpoint's quantities
        on it (:func:`example_quantities`)."""
        names = list(names) or list(self.specs)[:1]
        first = self.checkpoint(names[0])
        example = self.example(index, text, terminal, first.tokenizer)
        out = {}
        for name in names:
            ckpt = self.checkpoint(name)
            if len(ckpt.tokenizer) != len(first.tokenizer):
                raise ValueError(f"{name!r} has another tokenizer than {names[0]!r}")
            fkey = (name, example.question, text, terminal)
            if fkey not in self._forwards:
                self._forwards[fkey] = forward_example(ckpt, self.reference_for(ckpt), example)
            out[name] = example_quantities(
                example, self._forwards[fkey], beta=beta, lam=lam, alpha=alpha
            )
        return example, out

    def page(
        self,
        names: Sequence[str],
        question: int | str,
        text: str,
        *,
        quantity: str,
        terminal: bool = True,
        beta: float | None = None,
        lam: float | None = None,
        alpha: float = 0.0,
    ) -> tuple[TokenGrid, str]:
        """The grid and HTML page of ``quantity`` for ``text`` as the response to ``question``
        (an index or a question text, :meth:`problem_index`); β and λ default to the run's."""
        beta = self.beta if beta is None else beta
        lam = self.lam if lam is None else lam
        example, rows = self.rows(
            names, self.problem_index(question), text,
            terminal=terminal, beta=beta, lam=lam, alpha=alpha,
        )  # fmt: skip
        return explorer_page(example, rows, quantity, beta=beta, lam=lam, alpha=alpha)


def write_html(path: str | Path, fragment: str, title: str = "DQO Q-value explorer") -> Path:
    """Write :func:`html_document` of ``fragment`` to ``path`` (UTF-8; parents created)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_document(fragment, title), encoding="utf-8")
    return path


def export_html(
    run: str | Path | Mapping[str, str],
    question: int | str,
    response: str,
    path: str | Path,
    *,
    task: str = "toy",
    quantity: str | None = None,
    beta: float | None = None,
    lam: float | None = None,
    alpha: float = 0.0,
    terminal: bool = True,
    split: str = "test",
    **session: Any,
) -> Path:
    """One call: the explorer's view of a typed ``response`` written to ``path`` as one
    self-contained HTML file (inline styles; no scripts, stylesheets, fonts or links: it opens
    offline and can be mailed or attached); returns the path.

    ``run``: a training run directory or model spec (one row), or ``{name: spec}`` for several
    rows. ``question``: a question of ``task``'s ``split`` (its text, or its index there).
    ``quantity`` defaults to the critic's advantage when the first row has a value model, else
    log π. β and λ default to the run's own (:class:`ExplorerSession`), α (process rewards) to
    0; ``terminal``: the response ended with EOS. Other keywords go to the session
    (``reference``, ``source``, ``device``). The page holds what :func:`to_html` shows: the
    tokens, ✓/✗ per line, the step table and the blame verdict::

        q = toy.load_toy("test", 1)[0].question
        viz.export_html("outputs/toy/train/dqo", q, toy.slipped_solution(q, 1), "slip.html")

    From the explorer widget, ``Explorer.export_html(path)`` saves the view on screen.
    """
    specs = dict(run) if isinstance(run, Mapping) else {Path(run).name or str(run): str(run)}
    s = ExplorerSession(task, specs, split=split, problems=None, **session)
    names = list(specs)
    if quantity is None:
        quantity = "advantage" if s.checkpoint(names[0]).value_model is not None else "logp"
    _, page = s.page(
        names, question, response,
        quantity=quantity, terminal=terminal, beta=beta, lam=lam, alpha=alpha,
    )  # fmt: skip
    return write_html(path, page)


def explorer_page(
    example: Example,
    rows: Mapping[str, Mapping[str, np.ndarray]],
    quantity: str,
    *,
    beta: float,
    lam: float,
    alpha: float,
) -> tuple[TokenGrid, str]:
    """The grid and the HTML page the explorer shows for one quantity: a line of settings and
    the outcome reward, the prompt (folded), then :func:`to_html`."""
    spec = QUANTITIES[quantity]
    grid = build_grid(example, rows, spec.key, title=f"{spec.label} per response token")
    notes = [
        f"β = {beta:.3g}, λ = {lam:.3g}, α = {alpha:.3g}",
        f"outcome reward {example.reward:g}" + ("" if example.terminal else " (cut: not terminal)"),
    ]
    missing = [n for n in rows if not np.isfinite(rows[n]["value"]).any()]
    if spec.needs_value and missing:
        notes.append("no value model: " + ", ".join(missing))
    header = (
        f'<div style="color:#444">{html.escape(" · ".join(notes))}</div>'
        f'<details><summary>prompt</summary><pre style="white-space:pre-wrap">'
        f"{html.escape(example.prompt)}</pre></details>"
    )
    return grid, to_html(grid, header=header)


def _error_html(err: BaseException) -> str:
    return f'<span style="color:#b00">{html.escape(repr(err))}</span>'


class Explorer:
    """The ipywidgets explorer behind :func:`explore`; ``.widget`` is what to display and
    ``.session`` (:class:`ExplorerSession`) does the work.

    Controls (plain ipywidgets, so tests can set ``.value`` headless): ``problem``,
    ``response`` (preset), ``text`` (the response actually scored; typing switches to
    ``custom``), ``eos`` (the response ended), ``checkpoints`` (rows), ``add_path`` +
    ``add_button`` (load a run directory or model), ``quantity``, ``beta``, ``lam``, ``alpha``;
    outputs ``view`` (an ``ipywidgets.HTML`` of :func:`to_html`) and ``status``. β and λ start
    at the first run's own (``None``); :meth:`export_html` saves the view as a file."""

    CUSTOM = "custom (edit the text)"
    GREEDY = "greedy sample of the first checkpoint"

    def __init__(
        self,
        task: str = "toy",
        checkpoints: Mapping[str, str] | None = None,
        *,
        quantity: str = "logp",
        beta: float | None = None,
        lam: float | None = None,
        alpha: float = 0.0,
        **session: Any,
    ):
        self.session = ExplorerSession(task, checkpoints, **session)
        self._busy = False
        beta = self.session.beta if beta is None else beta
        self._build_controls(quantity, beta, self.session.lam if lam is None else lam, alpha)
        self._set_response_options()
        self.problem.observe(self._on_problem, "value")
        self.response.observe(self._on_preset, "value")
        self.text.observe(self._on_text, "value")
        self.add_button.on_click(self._on_add)
        for c in (self.eos, self.checkpoints, self.quantity, self.beta, self.lam, self.alpha):
            c.observe(lambda _change: self.refresh(), "value")
        self.widget = self._layout()
        self.widget.explorer = self  # the controls stay reachable from the displayed widget
        self.refresh()

    # ------------------------------------------------------------------ layout

    def _build_controls(self, quantity: str, beta: float, lam: float, alpha: float) -> None:
        import ipywidgets as w

        def short(q: str) -> str:
            q = " ".join(q.split())
            return q if len(q) <= 70 else q[:69] + "…"

        style, wide = {"description_width": "90px"}, w.Layout(width="640px")
        specs, problems = self.session.specs, self.session.problems
        self.problem = w.Dropdown(
            options=[(f"{i}: {short(p.question)}", i) for i, p in enumerate(problems)],
            value=0, description="problem", layout=wide, style=style,
        )  # fmt: skip
        self.response = w.Dropdown(
            description="response", style=style, layout=w.Layout(width="auto")
        )
        self.text = w.Textarea(
            description="text", style=style, layout=w.Layout(width="640px", height="110px")
        )
        self.eos = w.Checkbox(value=True, description="ended with EOS (terminal)", indent=False)
        self.checkpoints = w.SelectMultiple(
            options=list(specs), value=list(specs), description="checkpoints",
            rows=min(4, max(2, len(specs))), style=style,
        )  # fmt: skip
        self.add_path = w.Text(
            placeholder="run directory or model spec", description="add", style=style
        )
        self.add_button = w.Button(description="load")
        self.quantity = w.Dropdown(
            options=[(q.label, q.key) for q in QUANTITIES.values()],
            value=quantity, description="quantity", style=style,
        )  # fmt: skip
        self.beta = w.FloatSlider(
            value=beta, min=0.005, max=1.0, step=0.005, description="β", style=style,
            readout_format=".3f",
        )  # fmt: skip
        self.lam = w.FloatSlider(value=lam, min=0, max=1, step=0.05, description="λ", style=style)
        self.alpha = w.FloatSlider(
            value=alpha, min=0, max=1, step=0.05, description="α (process)", style=style,
            disabled=self.session.task.exact_potentials is None,
        )  # fmt: skip
        self.status = w.HTML()
        self.view = w.HTML()

    def _layout(self) -> Any:
        import ipywidgets as w

        return w.VBox(
            [
                w.HBox([self.problem, self.response]),
                w.HBox([self.text, w.VBox([self.eos, self.quantity])]),
                w.HBox([self.checkpoints, w.VBox([self.add_path, self.add_button])]),
                w.HBox([self.beta, self.lam, self.alpha]),
                self.status,
                self.view,
            ]
        )

    # ------------------------------------------------------------------ callbacks

    def _set_values(self, **values: Any) -> None:
        """Set controls without the callbacks reacting (one refresh afterwards, if any)."""
        self._busy = True
        try:
            for name, value in values.items():
                getattr(self, name).value = value
        finally:
            self._busy = False

    def _set_response_options(self) -> None:
        self._presets = self.session.presets(self.problem.value)
        self._busy = True
        try:
            self.response.options = [*self._presets, self.GREEDY, self.CUSTOM]
        finally:
            self._busy = False
        self._set_values(response="gold solution", text=self._presets["gold solution"])

    def _on_problem(self, _change: Any) -> None:
        self._set_response_options()
        self.refresh()

    def _on_preset(self, change: Any) -> None:
        if self._busy or change["new"] == self.CUSTOM:
            return
        if change["new"] == self.GREEDY:
            text = self.session.greedy_text(self._names()[0], self.problem.value)
        else:
            text = self._presets[change["new"]]
        self._set_values(text=text)
        self.refresh()

    def _on_text(self, _change: Any) -> None:
        if not self._busy:
            self._set_values(response=self.CUSTOM)
            self.refresh()

    def _on_add(self, _button: Any) -> None:
        spec = self.add_path.value.strip()
        if not spec:
            return
        try:
            name = self.session.add(spec)
        except Exception as err:  # show the failure, keep the explorer usable
            self.status.value = _error_html(err)
            return
        selected = (*self.checkpoints.value, name)
        self._busy = True  # new options clear the selection: restore it, then refresh once
        try:
            self.checkpoints.options = list(self.session.specs)
            self.checkpoints.value = ()
        finally:
            self._busy = False
        self.checkpoints.value = selected

    # ------------------------------------------------------------------ recomputation

    def _names(self) -> list[str]:
        return list(self.checkpoints.value) or list(self.session.specs)[:1]

    def rows(self) -> dict[str, dict[str, np.ndarray]]:
        """Quantities of every selected checkpoint on the current example (forwards cached;
        β, λ, α only rerun the kernels)."""
        self.example, rows = self.session.rows(
            self._names(),
            self.problem.value,
            self.text.value,
            terminal=bool(self.eos.value),
            beta=self.beta.value,
            lam=self.lam.value,
            alpha=self.alpha.value,
        )
        return rows

    def refresh(self) -> None:
        """Recompute and re-render ``view`` (errors go to ``status``, the view is kept)."""
        if self._busy:
            return
        try:
            rows = self.rows()
        except Exception as err:
            self.status.value = _error_html(err)
            return
        self.grid, self.view.value = explorer_page(
            self.example,
            rows,
            self.quantity.value,
            beta=self.beta.value,
            lam=self.lam.value,
            alpha=self.alpha.value,
        )
        self.status.value = ""

    def export_html(self, path: str | Path) -> Path:
        """Save the view on screen as one self-contained HTML file (:func:`write_html`)."""
        return write_html(path, self.view.value)


def explore(
    task: str = "toy",
    checkpoints: Mapping[str, str] | None = None,
    **kwargs: Any,
):
    """The explorer widget (an ``ipywidgets.VBox``; its :class:`Explorer` is ``.explorer``).

    ``checkpoints`` maps a row name to a model spec or a training run directory, e.g.
    ``{"π_ref": "toy", "DQO": "outputs/toy/train/dqo"}`` (default: the task's π_ref only).
    Other keywords go to :class:`Explorer`: ``quantity``, ``beta``, ``lam`` (both default to the
    first run's own), ``alpha``, and to
    its :class:`ExplorerSession`: ``reference``, ``split``, ``problems``, ``source`` (the
    task's data source, None = its default), ``device``."""
    return Explorer(task, checkpoints, **kwargs).widget
