"""Comparing two training runs' parameters after AdamW where that comparison is defined.

AdamW moves an entry by about lr · m̂ / (√v̂ + ε): a step of order lr whatever the gradient's
size, as long as |g| ≫ ε = 1e-8. Where the exact gradient is 0 but float rounding leaves one ulp
of it (a cut, zero-reward row at V_φ = 0 has δ = β·Σρ with ρ exactly 0 or 4.8e-7, depending on
the batch shape the CPU kernels saw), one run stays put and the other takes a step of ~0.5·lr:
the two runs then differ by lr in that entry although both computed the same gradient to 1e-8.
Which way such an entry rounds depends on the machine (``ATEN_CPU_CAPABILITY`` flips it).

So parameters must agree where Adam's step is well-conditioned: entries whose bias-corrected
second moment has √v̂ ≥ ``FLOOR`` in both runs — gradients 50× above that noise (here ≤ 2e-8).
Elsewhere they may disagree, but such entries must be few (≤ 2 % of the entries that moved), or
a real disagreement could hide among them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FLOOR = 1e-6  # √v̂ below this: the gradient is float noise, the Adam step is noise-defined
MOVED = 1e-7  # |θ_final − θ_start| above this: the entry moved


def adam_scale(state: dict, betas: tuple[float, float]) -> torch.Tensor:
    """√v̂ = √(v / (1 − β₂ᵗ)) of one parameter's AdamW state (its gradient's RMS over steps)."""
    return (state["exp_avg_sq"] / (1 - betas[1] ** float(state["step"]))).sqrt()


def compare(a: dict, b: dict, scale_a: dict, scale_b: dict, start: dict, *, atol: float,
            rtol: float) -> dict[str, float]:  # fmt: skip
    """Parameter dicts of two runs agree wherever AdamW's step is well-conditioned (√v̂ ≥ FLOOR
    in both runs), and the entries that disagree elsewhere are at most 2 % of those that moved.
    Returns the max |a − b| over the well-conditioned entries and that share; raises on a
    mismatch."""
    left_out = moved = 0
    worst = 0.0
    for name in start:
        ok = torch.minimum(scale_a[name], scale_b[name]) >= FLOOR
        went = ((a[name] - start[name]).abs() > MOVED) | ((b[name] - start[name]).abs() > MOVED)
        apart = (a[name] - b[name]).abs() > atol + rtol * a[name].abs()
        moved += int(went.sum())
        left_out += int((apart & ~ok).sum())
        torch.testing.assert_close(b[name][ok], a[name][ok], atol=atol, rtol=rtol, msg=name)
        if ok.any():
            worst = max(worst, float((b[name][ok] - a[name][ok]).abs().max()))
    share = left_out / max(moved, 1)
    assert share <= 0.02, f"{left_out} of {moved} moved entries disagree where noise-defined"
    return {"max_abs_diff": worst, "left_out_share": share, "moved": moved}


def _optimizer_state(run: Path, index: int) -> tuple[list[dict], tuple[float, float]]:
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    name = "optimizer.bin" if index == 0 else f"optimizer_{index}.bin"
    saved = torch.load(ckpt / name, weights_only=False)
    group = saved["param_groups"][0]
    return [saved["state"][i] for i in group["params"]], tuple(group["betas"])


def assert_runs_agree(
    one: Path, two: Path, start_model: Any, *, value: bool, atol: float = 2e-5, rtol: float = 1e-4
) -> list[dict[str, float]]:
    """The policy (and the separate V_φ when ``value``) of runs ``one`` and ``two`` agree on
    every well-conditioned entry; ``start_model``: the π_ref both started from (a model or its
    folder)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from dqo_tutorial.modeling import value_model_for

    def named(model):
        return {n: p.detach() for n, p in model.named_parameters()}

    start = start_model
    if isinstance(start_model, str | Path):
        start = AutoModelForCausalLM.from_pretrained(start_model)
    runs = [AutoModelForCausalLM.from_pretrained(d / "policy") for d in (one, two)]
    starts = [named(start)]
    finals = [[named(m) for m in runs]]
    if value:
        starts.append(named(value_model_for(start, "separate")))
        finals.append([load_file(d / "value_model.safetensors") for d in (one, two)])
    reports = []
    for index, (begin, (a, b)) in enumerate(zip(starts, finals, strict=True)):
        scales = []
        for run in (one, two):
            states, betas = _optimizer_state(run, index)
            scales.append({n: adam_scale(x, betas) for n, x in zip(begin, states, strict=True)})
        reports.append(compare(a, b, *scales, begin, atol=atol, rtol=rtol))
    return reports
