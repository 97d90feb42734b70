"""The per-token Q-value explorer: HTML snapshots, colours, figures, quantities by hand, and
the ipywidgets explorer driven headless."""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from dataclasses import replace
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
import torch
from conftest import SMOLLM2_MISSING
from matplotlib.colors import to_hex
from safetensors.torch import save_file

from dqo_tutorial import toy
from dqo_tutorial.modeling import ValueModel
from dqo_tutorial.models import load_model_and_tokenizer, smollm2_gguf_path, tiny_causal_lm
from dqo_tutorial.tasks import get_task
from dqo_tutorial.viz import (
    MIN_DROP,
    QUANTITIES,
    Checkpoint,
    ExplorerSession,
    TokenGrid,
    blame_verdict,
    build_grid,
    compute_quantities,
    display_tokens,
    example_quantities,
    explore,
    explorer_page,
    export_html,
    forward_example,
    load_checkpoint,
    make_example,
    plot_heatmap,
    plot_token_strips,
    step_summary_html,
    to_html,
    token_spans_html,
    visible,
)

SPAN = "padding:1px 2px;margin:0 1px 0 0;border-radius:3px;white-space:pre"


# ----------------------------------------------------------------------------- HTML snapshots


def test_visible_whitespace():
    assert visible("a b\n\tc\r\u00a0") == "a␣b↵⇥c␍<U+00A0>"
    assert visible(visible(" x\n")) == "␣x↵"  # idempotent on display strings


def test_byte_level_tokens_are_made_visible(tiny_tok):
    ids = tiny_tok(" 12\nx é", add_special_tokens=False)["input_ids"]
    assert tiny_tok.convert_ids_to_tokens(ids) == ["Ġ12", "Ċ", "x", "Ġ", "Ã", "©"]
    shown = display_tokens(tiny_tok, [*ids, tiny_tok.eos_token_id])
    assert shown == ["␣12", "↵", "x", "␣", "<0xC3>", "<0xA9>", "<|im_end|>"]


def test_spans_exact_html_escaping_colours_and_tooltips():
    grid = TokenGrid(["<a>", "&", ' "q"'], [[0.0, 1.0, -0.5]], mask=[[1, 1, 0]], label="δ",
                     signed=True)  # fmt: skip
    assert (grid.vmin, grid.vmax) == (-1.0, 1.0)
    expected = (
        f'<span class="dqo-tok" style="background:#f6f7f7;color:#000000;{SPAN}" '
        'title="0: &lt;a&gt; | δ = 0.0">&lt;a&gt;</span>'
        f'<span class="dqo-tok" style="background:#053061;color:#ffffff;{SPAN}" '
        'title="1: &amp; | δ = 1.0">&amp;</span>'
        f'<span class="dqo-tok dqo-off" style="background:#ffffff;color:#999999;{SPAN}" '
        'title="2: ␣&quot;q&quot; | no value">␣&quot;q&quot;</span>'
    )
    assert token_spans_html(grid, 0) == expected


def test_zero_is_the_diverging_centre_and_limits_are_symmetric():
    rdbu = matplotlib.colormaps["RdBu"]
    grid = TokenGrid(["a", "b", "c"], [[0.0, 3.0, -1.5]], signed=True)
    assert (grid.vmin, grid.vmax) == (-3.0, 3.0)
    assert grid.color(0.0) == to_hex(rdbu(0.5)) == "#f6f7f7"
    assert grid.color(3.0) == to_hex(rdbu(1.0))
    assert grid.color(-1.5) == to_hex(rdbu(0.25))
    assert grid.color(-99.0) == to_hex(rdbu(0.0))  # clipped to the scale
    # explicit asymmetric limits are made symmetric, so 0 stays at the centre
    assert TokenGrid(["a"], [0.0], signed=True, vmin=-1, vmax=4).color(0.0) == "#f6f7f7"


def test_sequential_scale_is_shared_across_rows_and_exact_value_in_tooltip():
    grid = TokenGrid(["x", "y"], [[0.0, 1.0], [2.0, 4.0]], row_labels=["ref", "dqo"], label="V")
    assert grid.cmap == "viridis" and (grid.vmin, grid.vmax) == (0.0, 4.0)
    viridis = matplotlib.colormaps["viridis"]
    assert grid.color(0.0) == "#440154" and grid.color(4.0) == "#fde725"
    assert grid.color(1.0) == to_hex(viridis(0.25))
    row0, row1 = token_spans_html(grid, 0), token_spans_html(grid, 1)
    assert f"background:{to_hex(viridis(0.25))}" in row0  # row 0's 1.0 on the shared scale
    v = float(np.float32(0.1))
    assert repr(v) == "0.10000000149011612"
    assert 'title="0: x | V = 0.10000000149011612"' in token_spans_html(
        TokenGrid(["x"], [v], label="V"), 0
    )
    assert row1.count("dqo-tok") == 2


def test_html_has_steps_summary_and_no_scripts():
    tokens = ["1", "+", "1", "=", "3", "↵", "#", "3", "<eos>"]
    values = np.arange(9.0)[None]
    state = np.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.4, -0.4, -0.4, 0.0]])
    grid = TokenGrid(tokens, values, title="t <1>", row_labels=["dqo"], label="V",
                     step_starts=[6], state_values=state)  # fmt: skip
    page = to_html(grid)
    assert page.count('class="dqo-line"') == 2
    assert '<div class="dqo-line" data-step="2"' in page
    assert "t &lt;1&gt;" in page
    lowered = page.lower()
    assert "<script" not in lowered and "http" not in lowered and "onclick" not in lowered
    table = step_summary_html(grid, 0)
    # line 1: 0.5 → -0.4 (the drop), line 2: -0.4 → 0.0
    assert (
        '<tr class="dqo-step dqo-worst" style="background:#fde0dd;font-weight:bold"><td>1</td>'
        "<td>1+1=3↵</td><td>+0.500</td><td>-0.400</td><td>-0.900 ◀ largest drop</td></tr>"
    ) in table
    assert "<td>2</td><td>#3&lt;eos&gt;</td><td>-0.400</td><td>+0.000</td><td>+0.400</td>" in table
    assert step_summary_html(TokenGrid(["a"], [1.0]), 0) == ""


def test_grid_validates_shapes():
    with pytest.raises(ValueError, match="values must be"):
        TokenGrid(["a", "b"], [[1.0]])
    with pytest.raises(ValueError, match="row labels"):
        TokenGrid(["a"], [[1.0], [2.0]], row_labels=["x"])
    grid = TokenGrid(["a", "b"], [[1.0, math.nan]])
    assert grid.mask.tolist() == [[True, False]]  # NaN is never coloured


def test_matplotlib_heatmap_and_strips():
    grid = TokenGrid(["a", "␣", "b↵", "c"], [[0.1, -0.2, 0.3, math.nan], [0.0, 0.2, -0.4, 0.1]],
                     row_labels=["π_ref", "DQO"], label="δ", signed=True,
                     step_starts=[3])  # fmt: skip
    heat = plot_heatmap(grid)
    ax = heat.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["π_ref", "DQO"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "␣", "b↵", "c"]
    assert ax.images[0].norm.vmin == -0.4 and ax.images[0].norm.vmax == 0.4
    strips = plot_token_strips(grid)
    assert len(strips.axes) == 3  # two strips and the shared colour bar
    assert [t.get_text() for t in strips.axes[0].texts] == ["a", "␣", "b↵", "c"]
    for fig in (heat, strips):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- quantities by hand


def _hand_quantities(policy, ref, vm, ids, n_prompt, rewards, beta, lam, terminal):
    """Prefix-by-prefix forwards and a backward loop over the response: no package kernels."""
    t = ids.shape[1]
    logp, logp_ref, values = [], [], []
    with torch.no_grad():
        for j in range(n_prompt, t):
            prefix = ids[:, :j]
            logp.append(torch.log_softmax(policy(prefix).logits[0, -1].double(), -1)[ids[0, j]])
            logp_ref.append(torch.log_softmax(ref(prefix).logits[0, -1].double(), -1)[ids[0, j]])
            h = vm.trunk(input_ids=prefix).last_hidden_state[0, -1]
            values.append(vm.head.proj(h).double().squeeze())
        v_end = vm.head.proj(vm.trunk(input_ids=ids).last_hidden_state[0, -1]).double().squeeze()
    lp, lr, v = (torch.stack(x) for x in (logp, logp_ref, values))
    rho = lp - lr
    r = torch.tensor(rewards, dtype=torch.float64)
    shaped = r - beta * rho
    b = 0.0 if terminal else float(v_end)
    g = torch.zeros_like(v)
    n = len(v)
    for h in reversed(range(n)):
        if h == n - 1:
            g[h] = shaped[h] + b
        else:
            g[h] = shaped[h] + (1 - lam) * v[h + 1] + lam * g[h + 1]
    delta = v - g
    return {
        "logp": lp,
        "logp_ref": lr,
        "log_ratio": beta * rho,
        "value": v,
        "q": beta * rho + v,
        "lambda_return": g,
        "delta": delta,
        "advantage": r + (g - shaped) - v,  # r_h + T_{h+1} − V(s_h), T_{h+1} = G_h − r̃_h
        "reward": r,
        "state_values": torch.cat([v, torch.tensor([r[-1] + b], dtype=torch.float64)]),
    }


@pytest.mark.parametrize("terminal", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_quantities_match_a_hand_computation(tiny_tok, terminal, lam):
    policy = tiny_causal_lm(len(tiny_tok), seed=0)
    ref = tiny_causal_lm(len(tiny_tok), seed=1)
    vm = ValueModel.from_causal_lm(policy)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        vm.head.proj.weight.normal_(0, 0.5)
        vm.head.proj.bias.fill_(0.2)
    task = get_task("gsm8k")
    ex = make_example(tiny_tok, task, "What is 2 + 3?", "5", "2 + 3 = 5\n#### 5",
                      terminal=terminal)  # fmt: skip
    assert ex.reward == (1.0 if terminal else 0.0)
    assert ex.step_starts[0] == 0 and len(ex.step_starts) == 2  # one newline: two lines
    ckpt = Checkpoint("dqo", policy, tiny_tok, vm)
    got = example_quantities(ex, forward_example(ckpt, ref, ex), beta=0.3, lam=lam, alpha=0.0)
    ids = torch.tensor([ex.input_ids])
    h = len(ex.input_ids) - ex.n_prompt
    rewards = [0.0] * (h - 1) + [ex.reward]
    want = _hand_quantities(policy, ref, vm, ids, ex.n_prompt, rewards, 0.3, lam, terminal)
    assert set(want) == {*QUANTITIES, "state_values"}
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-4, atol=2e-5, err_msg=key)
    # the critic's advantage and the policy's implied one differ by exactly δ
    np.testing.assert_allclose(got["log_ratio"] - got["advantage"], got["delta"], atol=1e-6)


def test_without_a_value_model_v_quantities_are_missing(tiny_tok):
    m = torch.tensor([[0, 1, 1]])
    q = compute_quantities(
        torch.tensor([[0.0, -1.0, -2.0]]), torch.tensor([[0.0, -1.5, -2.0]]), None, None,
        torch.tensor([[0.0, 0.0, 1.0]]), m, torch.tensor([True]), beta=0.5, lam=1.0,
    )  # fmt: skip
    assert q["log_ratio"].tolist() == [[0.0, 0.25, 0.0]]
    assert torch.isnan(q["value"]).all() and torch.isnan(q["delta"]).all()
    grid = TokenGrid(["a", "b"], q["value"][:, 1:].numpy(), label="V")
    assert "dqo-off" in token_spans_html(grid, 0)


def test_process_rewards_follow_the_exact_potentials():
    tok = load_model_and_tokenizer("toy")[1]
    task = get_task("toy")
    # 7 +5 *2: the slip is at step 1, so Φ drops to 0 after the first line
    ex = make_example(tok, task, "7 +5 *2", "24", "7+5=13\n13*2=26\n#### 26")
    assert ex.reward == 0.0 and ex.boundary_phi == [(7, 0.0), (15, 0.0)]
    fwd = {"logp": torch.zeros(1, len(ex.input_ids))}
    fwd |= {"logp_ref": fwd["logp"], "values": None, "final": None}
    r = example_quantities(ex, fwd, beta=0.1, lam=1.0, alpha=0.5)["reward"]
    newline = ex.tokens.index("↵")
    assert r[newline] == -0.5 and r.sum() == -0.5  # α·(Φ=0 − Φ_start=1), terminal Φ = 0


# ----------------------------------------------------------------------------- the explorer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training-run directory in train's layout: a perturbed π_ref and a value model."""
    out = tmp_path_factory.mktemp("dqo-run")
    policy, tok = load_model_and_tokenizer("toy")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
        vm = ValueModel.from_causal_lm(policy)
        vm.head.proj.weight.normal_(0, 0.1)
    policy.save_pretrained(str(out / "policy"))
    tok.save_pretrained(str(out / "policy"))
    save_file({k: v.contiguous() for k, v in vm.state_dict().items()},
              str(out / "value_model.safetensors"))  # fmt: skip
    cfg = {"method": "dqo", "model": "toy", "beta": 0.2, "lam": 0.6, "value_model": "separate"}
    (out / "train_config.json").write_text(json.dumps({"config": cfg}))
    return out


def test_load_checkpoint_reads_the_value_model(run_dir):
    ckpt = load_checkpoint(str(run_dir))
    assert ckpt.reference == "toy" and ckpt.config["beta"] == 0.2
    state = ckpt.value_model.state_dict()
    from safetensors.torch import load_file

    saved = load_file(str(run_dir / "value_model.safetensors"))
    assert all(torch.equal(state[k], saved[k]) for k in saved)


def test_explorer_callbacks_change_the_html(run_dir):
    widget = explore("toy", {"π_ref": "toy", "DQO": str(run_dir)}, problems=4)
    e = widget.explorer
    assert e.status.value == "" and e.beta.value == pytest.approx(0.2)  # β from the run
    assert e.checkpoints.value == ("π_ref", "DQO")
    html0 = e.view.value
    assert html0.count('class="dqo-row"') == 2 and 'class="dqo-line"' in html0

    seen = {html0}

    def changed() -> str:
        assert e.status.value == "", e.status.value
        assert e.view.value not in seen
        seen.add(e.view.value)
        return e.view.value

    e.quantity.value = "log_ratio"
    changed()
    e.beta.value = 0.05  # β·log-ratio scales
    changed()
    e.quantity.value = "lambda_return"
    changed()
    e.lam.value = 0.0
    changed()
    e.quantity.value = "value"
    page = changed()
    assert "largest drop" in page or "dqo-steps" in page
    e.quantity.value = "reward"
    changed()
    e.alpha.value = 0.5  # process reward on the gold solution: Φ stays 1, only outcome changes?
    e.response.value = "slip at step 1"
    page = changed()
    assert e.text.value.splitlines()[0] != e._presets["gold solution"].splitlines()[0]
    assert "title=" in page and "-0.5" in page  # α·(0 − 1) at the slipped line's newline
    e.text.value = e.text.value + "\n"  # typing switches to the custom response
    assert e.response.value == e.CUSTOM
    changed()
    first_problem_tokens = e.example.tokens
    e.problem.value = 1
    changed()
    assert e.example.tokens != first_problem_tokens and e.response.value == "gold solution"
    e.checkpoints.value = ("DQO",)
    assert changed().count('class="dqo-row"') == 1
    e.response.value = e.GREEDY
    changed()
    assert e.text.value  # the greedy sample of the first selected checkpoint


def test_explorer_add_checkpoint_and_errors_are_shown(run_dir):
    e = explore("toy", problems=2).explorer
    assert e.checkpoints.options == ("π_ref",)
    e.quantity.value = "delta"  # no value model for π_ref: rendered as n/a, noted
    assert "no value model: π_ref" in e.view.value and "dqo-off" in e.view.value
    e.add_path.value = str(run_dir)
    e.add_button.click()
    assert e.checkpoints.value == ("π_ref", run_dir.name)
    assert e.view.value.count('class="dqo-row"') == 2
    e.add_path.value = "/no/such/model"
    e.add_button.click()
    assert "no model file" in e.status.value and len(e.checkpoints.options) == 2


@pytest.mark.slow
def test_explorer_runs_smollm2_on_cpu():
    if smollm2_gguf_path() is None:
        pytest.skip(SMOLLM2_MISSING)
    e = explore("gsm8k", problems=2, quantity="logp").explorer
    assert e.status.value == "", e.status.value
    assert e.example.tokens[-1] == "<|im_end|>"
    assert any(t.startswith("␣") for t in e.example.tokens)  # byte-level Ġ made visible
    assert len(e.example.step_starts) > 1  # GSM8K solutions have several lines
    before = e.view.value
    e.quantity.value = "reward"
    assert e.view.value != before
    assert e.alpha.disabled  # no exact potentials for GSM8K


def test_explorer_session_computes_without_widgets(run_dir):
    """The session (state + computation) is usable from a script; the widget shows its numbers."""
    s = ExplorerSession("toy", {"π_ref": "toy", "DQO": str(run_dir)}, problems=3)
    assert s.beta == pytest.approx(0.2)  # the run's own β
    presets = s.presets(0)
    assert list(presets)[0] == "gold solution" and "slip at step 1" in presets
    example, rows = s.rows(["π_ref", "DQO"], 0, presets["slip at step 1"],
                           beta=0.2, lam=1.0, alpha=0.0)  # fmt: skip
    assert set(rows) == {"π_ref", "DQO"} and example.reward == 0.0
    assert not np.isfinite(rows["π_ref"]["value"]).any()  # π_ref has no value model
    assert np.isfinite(rows["DQO"]["value"]).all()
    # independent of the session: the kernels on a fresh forward of the same example
    ckpt = load_checkpoint(str(run_dir))
    ref, _ = load_model_and_tokenizer("toy", dtype="float32")
    direct = example_quantities(example, forward_example(ckpt, ref, example),
                                beta=0.2, lam=1.0, alpha=0.0)  # fmt: skip
    for key in ("logp", "logp_ref", "value", "q", "lambda_return"):
        np.testing.assert_allclose(rows["DQO"][key], direct[key], rtol=1e-6, atol=1e-6)
    grid, page = explorer_page(example, rows, "q", beta=0.2, lam=1.0, alpha=0.0)
    assert grid.values.shape == (2, len(example.tokens)) and "outcome reward 0" in page
    e = explore("toy", {"π_ref": "toy", "DQO": str(run_dir)}, problems=3).explorer
    e.response.value = "slip at step 1"
    e.quantity.value = "q"
    np.testing.assert_allclose(e.grid.values, grid.values, rtol=1e-6, equal_nan=True)


def test_explorer_session_add_failure_leaves_rows_unchanged():
    s = ExplorerSession("toy", problems=1)
    with pytest.raises(Exception, match="no model file"):
        s.add("/no/such/model")
    assert list(s.specs) == ["π_ref"]
    assert s.presets(0).keys() >= {"gold solution"}
    assert get_task("gsm8k").variants is None  # no presets beyond the gold solution


# ----------------------------------------------------------------------- credit shown honestly

LINE_TOKENS = list("1+1=2↵2+2=5↵#5")  # three lines: columns 0-5, 6-11, 12-13


def _lines_of(page: str) -> dict[int, str]:
    """The HTML of every reasoning line of a page (the line divs hold spans only)."""
    found = re.findall(r'<div class="dqo-line" data-step="(\d+)"(.*?)</div>', page)
    return {int(k): body for k, body in found}


class _Spans(HTMLParser):
    """Texts of the spans of a class, and every src/href attribute of a page."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.texts: dict[str, list[str]] = {"dqo-tok": [], "dqo-mark": [], "dqo-verdict": []}
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [(tag, k, v) for k, v in attrs if k in ("src", "href")]
        cls = (a.get("class") or "").split()
        self.open.append(next((c for c in cls if c in self.texts), ""))
        if self.open[-1]:
            self.texts[self.open[-1]].append("")

    def handle_endtag(self, tag):
        self.open.pop()

    def handle_data(self, data):
        inside = [c for c in self.open if c]
        if inside:
            self.texts[inside[-1]][-1] += data


def test_each_line_gets_the_step_checkers_mark_in_html_and_figures():
    """Before: no mark at all (the old grid had no line_marks field)."""
    grid = TokenGrid(LINE_TOKENS, np.arange(14.0)[None], step_starts=[6, 12],
                     line_marks=[True, False, None])  # fmt: skip
    lines = _lines_of(to_html(grid))
    assert sorted(lines) == [1, 2, 3]
    assert "✓" in lines[1] and "✗" not in lines[1] and "dqo-ok" in lines[1]
    assert "✗" in lines[2] and "✓" not in lines[2] and "dqo-bad" in lines[2]
    assert "dqo-mark" not in lines[3]  # the checker says nothing about this line
    assert "dqo-mark" not in to_html(TokenGrid(LINE_TOKENS, np.arange(14.0), step_starts=[6, 12]))
    heat = plot_heatmap(grid)
    assert [t.get_text() for t in heat.axes[0].texts] == ["✓", "✗"]
    strips = plot_token_strips(grid)
    assert [t.get_text() for t in strips.axes[0].texts] == [*LINE_TOKENS, "✓", "✗"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph warns: ✓ and ✗ must be drawable
        for fig in (heat, strips):
            fig.savefig(io.BytesIO(), format="png")


def test_make_example_marks_each_line_by_the_task_step_checker():
    tok = load_model_and_tokenizer("toy")[1]
    task = get_task("toy")
    # 7 +5 *2: 7+5=12, 12*2=24; the slip writes 25 on line 2, so lines 2 and 3 are wrong
    slip = make_example(tok, task, "7 +5 *2", "24", "7+5=12\n12*2=25\n#### 25")
    assert slip.line_marks == [True, False, False]
    gold = make_example(tok, task, "7 +5 *2", "24", "7+5=12\n12*2=24\n#### 24")
    assert gold.line_marks == [True, True, True]
    trailing = make_example(tok, task, "7 +5 *2", "24", "7+5=12\n12*2=24\n#### 24\n")
    assert trailing.tokens[-1] == "<eos>" and trailing.line_marks == [True, True, True, None]
    bare = make_example(tok, replace(task, line_correctness=None), "7 +5 *2", "24", slip.response)
    assert bare.line_marks is None
    fwd = {"logp": torch.zeros(1, len(slip.input_ids))}
    fwd |= {"logp_ref": fwd["logp"], "values": None, "final": None}
    page = to_html(build_grid(bare, {"π_ref": example_quantities(
        bare, fwd, beta=0.1, lam=1.0, alpha=0.0)}, "logp"))  # fmt: skip
    assert "dqo-mark" not in page  # no step checker: no ✓/✗
    # α = 1: the only non-zero reward is α·(Φ = 0 − Φ = 1) = −1 on the newline closing line 2
    # (the outcome 0 adds nothing); on the gold solution r_H = α·(0 − 1) + 1 = 0: no drop at all
    grids = {}
    for name, ex in (("slip", slip), ("gold", gold)):
        qv = example_quantities(ex, fwd, beta=0.1, lam=0.0, alpha=1.0)
        grids[name] = build_grid(ex, {"π_ref": qv}, "reward")
    assert blame_verdict(grids["slip"], 0) == "r blames line 2 (the first wrong line) ✓"
    assert blame_verdict(grids["gold"], 0) == (
        "r: no drop above the threshold (0.05): blames nothing; no line is wrong ✓"
    )
    assert "r blames line 2 (the first wrong line) ✓" in to_html(grids["slip"])


def _verdict(blame, marks=(True, False, False), label="Â") -> str:
    grid = TokenGrid(LINE_TOKENS, np.zeros((1, 14)), step_starts=[6, 12],
                     line_marks=None if marks is None else list(marks),
                     blame=blame, blame_label=label)  # fmt: skip
    return blame_verdict(grid, 0)


def test_the_blame_verdict_in_words():
    """argmin of the per-token signal (credit.blamed_token), its line against the first line the
    checker marks wrong (line 2 here); a minimum above −MIN_DROP blames nothing."""
    assert MIN_DROP == 0.05
    s = np.zeros(14)
    s[10] = -0.9  # the '5' of line 2
    assert _verdict(s) == "Â blames line 2 (the first wrong line) ✓"
    s[13] = -1.0  # the '5' of line 3 is lower still
    assert _verdict(s) == "Â blames line 3, but the first wrong line is 2 ✗"
    tie = np.zeros(14)
    tie[[3, 10]] = -0.5  # a tie: the first token is blamed, as credit.blamed_token does
    assert _verdict(tie) == (
        "Â blames line 1, but the first wrong line is 2 ✗ "
        "(line 2 comes within 0.05: no clear localisation)"
    )
    flat = np.zeros(14)
    flat[:6], flat[6:12] = -0.50, -0.52  # the whole prefix is red, line 2 only barely lowest
    assert _verdict(flat) == (
        "Â blames line 2 (the first wrong line) ✓ (line 1 comes within 0.05: no clear localisation)"
    )
    tie[3] = math.nan  # no value there: never blamed
    assert _verdict(tie) == "Â blames line 2 (the first wrong line) ✓"
    small = np.full(14, 0.3)
    small[4] = -0.04  # the lowest, but not a drop of 0.05
    assert _verdict(small) == (
        "Â: no drop above the threshold (0.05): blames nothing, but the first wrong line is 2 ✗"
    )
    assert _verdict(small, marks=(True, True, True)) == (
        "Â: no drop above the threshold (0.05): blames nothing; no line is wrong ✓"
    )
    assert _verdict(s, marks=(True, True, True)) == "Â blames line 3, but no line is wrong ✗"
    assert _verdict(s, marks=None) == "Â blames line 3 (no step checker to judge it)"
    assert _verdict(small, marks=None) == ("Â: no drop above the threshold (0.05): blames nothing")
    assert _verdict(np.full(14, math.nan)) == ""  # no signal (no value model): no verdict
    assert blame_verdict(TokenGrid(LINE_TOKENS, np.zeros(14)), 0) == ""


def test_the_largest_drop_is_marked_only_above_min_drop():
    """Before: any drop below 0 was 'the largest drop', −0.03 included."""
    tokens = ["1", "+", "1", "=", "3", "↵", "#", "3", "<eos>"]
    small = np.array([[0.5] * 6 + [0.47] * 3 + [0.5]])  # line 1: −0.03, line 2: +0.03
    grid = TokenGrid(tokens, np.arange(9.0), step_starts=[6], state_values=small)
    assert "largest drop" not in step_summary_html(grid, 0) and "dqo-worst" not in to_html(grid)
    large = np.array([[0.5] * 6 + [0.42] * 3 + [0.5]])  # line 1: −0.08
    table = step_summary_html(TokenGrid(tokens, np.arange(9.0), step_starts=[6],
                                        state_values=large), 0)  # fmt: skip
    assert "<td>1</td><td>1+1=3↵</td><td>+0.500</td><td>+0.420</td><td>-0.080 ◀ largest drop" in (
        table
    )
    legend = re.search(r'<div class="dqo-legend".*?</div>', to_html(grid)).group(0)
    assert "0.05" in legend and "largest drop" in legend


def test_explorer_opens_at_the_runs_lambda(run_dir, tmp_path):
    """Before: λ = 1.0 whatever the run was trained with."""
    e = explore("toy", {"π_ref": "toy", "DQO": str(run_dir)}, problems=1).explorer
    assert e.session.lam == 0.6 and e.lam.value == pytest.approx(0.6)
    assert "λ = 0.6" in e.view.value
    assert ExplorerSession("toy", problems=1).lam == 1.0  # π_ref alone: no run, λ = 1
    assert explore("toy", {"DQO": str(run_dir)}, problems=1, lam=0.25).explorer.lam.value == 0.25
    saved = e.export_html(tmp_path / "view.html")
    assert e.view.value in saved.read_text(encoding="utf-8")


def test_export_html_writes_one_self_contained_file(run_dir, tmp_path):
    question = toy.load_toy("test", 1)[0].question
    response = toy.slipped_solution(question, 1)  # line 2 is the first wrong line
    n_lines = len(toy.parse_question(question)[1]) + 1
    path = export_html(str(run_dir), question, response, tmp_path / "slip.html", alpha=1.0)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    parsed = _Spans()
    parsed.feed(text)
    # the toy tokenizer has one token per character, then EOS
    assert parsed.texts["dqo-tok"] == [visible(c) for c in response] + ["<eos>"]
    assert parsed.texts["dqo-mark"] == ["✓"] + ["✗"] * (n_lines - 1)
    assert len(parsed.texts["dqo-verdict"]) == 1 and "first wrong line is" in text
    assert "λ = 0.6" in text and "α = 1" in text  # the run's λ, the given α
    assert parsed.links == []  # no src / href at all
    lowered = text.lower()
    for external in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert external not in lowered, external
