"""The package's decode loop (dqo_tutorial.decoding): the draw against hand-computed CDFs and
frequencies, greedy decoding token for token against Hugging Face generate, one stream per row
(the batch size changes nothing), budgets, one prefill per prompt and dropped rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from dqo_tutorial import decoding
from dqo_tutorial.configs import EvalConfig, SamplingConfig
from dqo_tutorial.decoding import DecodeSampler, draw, row_uniforms, sampling_law
from dqo_tutorial.errors import ConfigError
from dqo_tutorial.models import load_model_and_tokenizer, tiny_causal_lm, tiny_tokenizer
from dqo_tutorial.sampling import HFSampler
from dqo_tutorial.tasks import get_task


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs on one intra-op thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _biased(lm: nn.Module, tok) -> nn.Module:
    """A tiny LM whose responses both end (EOS bias) and get cut, of many different lengths."""
    head = nn.Linear(lm.config.hidden_size, len(tok), bias=True)
    with torch.no_grad():
        head.weight.copy_(lm.lm_head.weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 3.0
    lm.lm_head = head
    return lm.eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tok):
    return _biased(tiny_causal_lm(len(tok), seed=3, arch=request.param), tok)


@pytest.fixture(scope="module")
def toy():
    model, tok = load_model_and_tokenizer("toy", dtype="float32")
    task = get_task("toy")
    prompts = [
        tok(task.format_prompt(p.question, tok), add_special_tokens=False)["input_ids"]
        for p in task.load("train", None, 24)
    ]
    return model, tok, prompts


def _prompts(tok) -> list[list[int]]:
    texts = [
        "Question: 3 + 4?\nAnswer:",
        "12 + 7",
        "a much longer prompt with many words in it",
        "x",
    ]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


# ------------------------------------------------------------------------------ the draw


def test_draw_inverts_a_hand_computed_cdf():
    """μ = (0.1, 0, 0.6, 0.3): F = (0.1, 0.1, 0.7, 1.0); token a owns [F(a−1), F(a))."""
    log_mu = torch.tensor([0.1, 0.0, 0.6, 0.3]).log().expand(7, 4)
    u = torch.tensor([0.0, 0.0999, 0.1001, 0.5, 0.6998, 0.7002, 0.999999], dtype=torch.float64)
    assert draw(log_mu, u).tolist() == [0, 0, 2, 2, 2, 3, 3]


def test_draw_frequencies_follow_the_law_and_never_take_a_zero():
    """400,000 draws of a 6-token law with an excluded token: every frequency within 4.5
    standard errors of its probability (a wrong rule — e.g. ``right=False``, a missing scale,
    an off-by-one — moves a frequency by far more)."""
    probs = torch.tensor([0.05, 0.0, 0.4, 0.15, 0.3, 0.1], dtype=torch.float64)
    n = 400_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_mu = probs.float().log().expand(n, 6)
    counts = torch.bincount(draw(log_mu, u), minlength=6).double()
    assert counts[1] == 0
    se = (probs * (1 - probs) / n).sqrt()
    assert ((counts / n - probs).abs() <= 4.5 * se + 1e-12).all(), (counts / n, probs)


def test_draw_on_a_boundary_takes_the_next_token_with_mass():
    """u·F(V) exactly on a boundary of F belongs to the token *after* it (token a owns
    [F(a−1), F(a))): u = 0 under μ = (0, 1) is token 1, never the zero-probability token 0.
    Kills ``searchsorted(..., right=True)`` → ``right=False`` (which draws token 0 there)."""
    assert draw(torch.tensor([[0.0, 1.0]]).log(), torch.zeros(1, dtype=torch.float64)).item() == 1
    log_mu = torch.tensor([0.5, 0.0, 0.5]).log().expand(2, 3)
    u = torch.tensor([0.0, 0.5], dtype=torch.float64)  # 0.5 = F(0) = F(1): token 2's start
    assert draw(log_mu, u).tolist() == [0, 2]


def test_draw_at_u_one_takes_the_last_token_with_mass():
    """u = 1 (outside [0, 1), but u·F(V) can round up to F(V)) lands past the end of F: the
    draw is clamped to the last token of positive probability, never a zero-probability tail
    token nor an index out of range. Kills a dropped or shifted clamp."""
    one = torch.ones(1, dtype=torch.float64)
    assert draw(torch.tensor([[0.5, 0.5]]).log(), one).item() == 1
    assert draw(torch.tensor([[0.25, 0.75, 0.0, 0.0]]).log(), one).item() == 1


@pytest.mark.parametrize(
    ("temperature", "top_p"), [(-1.0, 0.9), (float("nan"), 1.0), (1.0, 0.0), (1.0, 2.0)]
)
def test_the_sampler_refuses_a_law_outside_its_domain(temperature, top_p):
    """τ < 0 would sample the *least* likely tokens, top-p ∉ (0, 1] keeps no token or means
    nothing: a one-line ConfigError naming both values. Kills the argument check's
    ``or`` → ``and`` (τ = −1 with a valid top-p then passes) and a relaxed top-p bound."""
    with pytest.raises(ConfigError, match=r"temperature.*top_p") as err:
        DecodeSampler(model=None, tokenizer=None).sample(
            [[1]], num_samples=1, temperature=temperature, top_p=top_p, max_new_tokens=1, seed=0
        )
    assert "\n" not in str(err.value)


def _nucleus(logits: torch.Tensor, tau: float, top_p: float) -> torch.Tensor:
    """log μ by hand in float64: softmax(z/τ), the smallest top set reaching mass top_p,
    renormalised; −inf outside it."""
    probs = torch.softmax(logits.double() / tau, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    nucleus = torch.where(keep, probs, 0.0)
    return (nucleus / nucleus.sum(-1, keepdim=True)).log()


@pytest.mark.parametrize("top_p", [1.0, 0.8, 0.3])
@pytest.mark.parametrize("tau", [0.7, 1.0, 1.3])
def test_sampling_law_is_the_tempered_nucleus(tau, top_p):
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(1)) * 3
    got, expected = sampling_law(logits, tau, top_p), _nucleus(logits, tau, top_p)
    assert torch.equal(got.isinf(), expected.isinf())
    finite = ~expected.isinf()
    torch.testing.assert_close(got[finite].double(), expected[finite], atol=1e-5, rtol=0)
    if top_p < 1:
        assert expected.isinf().any()  # the nucleus really cut something off


def test_a_row_stream_depends_on_its_key_only():
    a = row_uniforms([11, 22, 33], 5)
    b = row_uniforms([33, 11], 5)
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1])
    assert not torch.equal(a[0], a[1])
    assert a.dtype == torch.float64 and ((0 <= a) & (a < 1)).all()


def test_row_streams_use_all_64_bits_of_their_key():
    """Keys are 63-bit (derive_seed); a generator that keeps only the low 32 bits gives keys
    that differ above bit 32 the same stream (5 colliding rows in 200,000 did). Also the
    first uniforms of many keys spread like U[0, 1) (a two-sided Kolmogorov–Smirnov bound)."""
    import random

    low = 12345
    keys = [low, low + 2**32, low + 2**40, low + 2**62]
    u = row_uniforms(keys, 4)
    assert len({tuple(r.tolist()) for r in u}) == 4
    rng = random.Random(0)
    first = row_uniforms([rng.getrandbits(63) for _ in range(4000)], 1)[:, 0].sort().values
    grid = torch.arange(1, 4001, dtype=torch.float64) / 4000
    assert (first - grid).abs().max() < 1.95 / 4000**0.5  # KS at about the 0.1 % level


# ------------------------------------------------------------------------------ the loop


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_decoding_is_token_for_token_generate(tok, arch):
    """Unbiased tiny models never pick EOS: 12 tokens per row, prompts of 1–9 tokens
    left-padded together (rotary and learned absolute positions)."""
    model = tiny_causal_lm(len(tok), seed=3, arch=arch)
    prompts = _prompts(tok)
    kw = dict(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=12, seed=0)
    ours = DecodeSampler(model, tok, batch_size=3).sample(prompts, **kw)
    theirs = HFSampler(model, tok, batch_size=3).sample(prompts, **kw)
    assert [g.response_ids for g in ours] == [g.response_ids for g in theirs]
    assert all(len(g.response_ids) == 12 for g in ours)


def test_greedy_decoding_of_the_toy_reference_is_generate(toy):
    model, tok, prompts = toy
    kw = dict(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=64, seed=0)
    ours = DecodeSampler(model, tok, batch_size=8).sample(prompts, **kw)
    theirs = HFSampler(model, tok, batch_size=8).sample(prompts, **kw)
    assert [g.response_ids for g in ours] == [g.response_ids for g in theirs]
    assert [g.finished for g in ours] == [g.finished for g in theirs]
    assert len({len(g.response_ids) for g in ours}) > 3  # rows end at different steps


@pytest.mark.parametrize(("tau", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_the_same_seed_draws_the_same_responses_at_any_batch_size(toy, tau, top_p):
    """Each row reads its own stream: batches of 1, 3 and 12 prompts × 4 samples (prompts
    grouped and padded differently, rows dropped at different steps) draw the same responses
    and log μ."""
    model, tok, prompts = toy
    prompts = prompts[:12]
    kw = dict(num_samples=4, temperature=tau, top_p=top_p, max_new_tokens=64, seed=5)
    runs = [DecodeSampler(model, tok, batch_size=b).sample(prompts, **kw) for b in (4, 12, 48)]
    for other in runs[1:]:
        assert [g.response_ids for g in other] == [g.response_ids for g in runs[0]]
        for a, b in zip(runs[0], other):
            mu_a, mu_b = torch.tensor(a.behavior_logps), torch.tensor(b.behavior_logps)
            # float32 logits of another batch shape: rounding grows with |log μ| (1.1e-5 seen
            # at log μ = −3.8), so the bound is relative as well
            torch.testing.assert_close(mu_b, mu_a, atol=1e-5, rtol=1e-5)
    assert len({len(g.response_ids) for g in runs[0]}) > 3  # rows end at different steps
    other_seed = DecodeSampler(model, tok, batch_size=48).sample(prompts, **{**kw, "seed": 6})
    assert [g.response_ids for g in other_seed] != [g.response_ids for g in runs[0]]


def test_rows_end_at_eos_or_at_their_own_budget(model, tok):
    prompts = _prompts(tok)
    budgets = [0, 1, 5, 9]
    gens = DecodeSampler(model, tok, batch_size=16).sample(
        prompts, num_samples=3, temperature=1.0, top_p=1.0, max_new_tokens=budgets, seed=2
    )
    eos = tok.eos_token_id
    assert [(g.prompt_index, g.sample_index) for g in gens[:4]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    for g in gens:
        budget = budgets[g.prompt_index]
        assert g.prompt_ids == prompts[g.prompt_index]
        assert len(g.response_ids) <= budget and len(g.behavior_logps) == len(g.response_ids)
        assert eos not in g.response_ids[:-1]
        assert g.finished == (bool(g.response_ids) and g.response_ids[-1] == eos)
        if not g.finished:
            assert len(g.response_ids) == budget
        assert g.text == tok.decode(g.response_ids, skip_special_tokens=True)
    assert all(g.response_ids == [] and not g.finished for g in gens[:3])  # budget 0


def test_each_distinct_prompt_is_prefilled_once_and_ended_rows_are_dropped(toy, monkeypatch):
    model, tok, prompts = toy
    prefilled, step_rows = [], []
    real_prefill = decoding._prefill
    monkeypatch.setattr(decoding, "_prefill", lambda m, p, *a: prefilled.append(len(p))
                        or real_prefill(m, p, *a))  # fmt: skip
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: step_rows.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        DecodeSampler(model, tok, batch_size=96).sample(
            prompts, num_samples=4, temperature=1.0, top_p=1.0, max_new_tokens=64, seed=0
        )
    finally:
        hook.remove()
    assert prefilled == [24]  # 24 prompts × 4 samples: one prefill row per prompt
    decode_rows = [b for b, t in step_rows if t == 1]
    assert decode_rows[0] == 96 and min(decode_rows) < 48  # ended rows left the batch


def test_a_dynamic_cache_draws_the_same_responses(toy, monkeypatch):
    """The preallocated buffer changes how keys are stored, not what is drawn: the same as
    transformers' DynamicCache (the path of sliding-window models)."""
    model, tok, prompts = toy
    kw = dict(num_samples=2, temperature=1.0, top_p=1.0, max_new_tokens=64, seed=1)
    buffered = DecodeSampler(model, tok, batch_size=16).sample(prompts, **kw)
    monkeypatch.setattr(decoding, "_new_cache", lambda m, capacity: DynamicCache())
    dynamic = DecodeSampler(model, tok, batch_size=16).sample(prompts, **kw)
    assert [g.response_ids for g in dynamic] == [g.response_ids for g in buffered]


@pytest.mark.parametrize("cache", ["buffer", "dynamic"])
def test_per_prompt_counts_draw_the_first_samples_of_each_stream(toy, monkeypatch, cache):
    """sample_counts(prompts, counts) is sample(prompts, num_samples=max(counts)) with sample j
    of prompt i kept for j < counts[i] (0 and 5 included; batches of 7 rows split prompts of
    uneven counts): same tokens, log μ to float rounding, prompt-major order."""
    model, tok, prompts = toy
    prompts = prompts[:8]
    counts = [3, 0, 5, 1, 2, 4, 0, 5]
    if cache == "dynamic":
        monkeypatch.setattr(decoding, "_new_cache", lambda m, capacity: DynamicCache())
    kw = dict(temperature=1.0, top_p=1.0, max_new_tokens=64, seed=3, stream_ids=range(10, 18))
    full = DecodeSampler(model, tok, batch_size=40).sample(prompts, num_samples=5, **kw)
    some = DecodeSampler(model, tok, batch_size=7).sample_counts(prompts, counts, **kw)
    kept = [g for g in full if g.sample_index < counts[g.prompt_index]]
    assert [(g.prompt_index, g.sample_index) for g in some] == [
        (g.prompt_index, g.sample_index) for g in kept
    ]
    assert [g.response_ids for g in some] == [g.response_ids for g in kept]
    for a, b in zip(some, kept):
        torch.testing.assert_close(torch.tensor(a.behavior_logps), torch.tensor(b.behavior_logps),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
    assert (
        DecodeSampler(model, tok).sample_counts(prompts[:2], [0, 0], **{**kw, "stream_ids": None})
        == []
    )  # noqa: E501


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_full_attention_models_decode_into_the_preallocated_buffer(tok, arch):
    """Every forward of the loop gets a cache made of buffer layers (one per model layer), not
    transformers' DynamicCache: the speed path is the default. Kills a ``_new_cache`` that sends
    every model to DynamicCache (which changes no drawn token, so no other test notices)."""
    model = tiny_causal_lm(len(tok), seed=3, arch=arch)
    caches = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: caches.append(kw.get("cache", kw.get("past_key_values"))),
        with_kwargs=True,
    )
    try:
        DecodeSampler(model, tok).sample(
            _prompts(tok), num_samples=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=0
        )
    finally:
        hook.remove()
    assert len(caches) == 6  # the prefill and five decode steps
    for cache in caches:
        assert not isinstance(cache, DynamicCache)
        assert [type(layer) for layer in cache.layers] == [decoding._BufferLayer] * 2


def test_sliding_window_models_keep_a_dynamic_cache(tok):
    model = tiny_causal_lm(len(tok), seed=3, layer_types=["sliding_attention", "full_attention"],
                           sliding_window=4)  # fmt: skip
    assert isinstance(decoding._new_cache(model, 16), DynamicCache)


def test_the_engine_is_a_config_field():
    assert SamplingConfig().engine == EvalConfig().engine == "decode"
    with pytest.raises(ConfigError, match="engine"):
        SamplingConfig(engine="vllm")
    with pytest.raises(ConfigError, match="kv_cache.*engine: generate"):
        EvalConfig(kv_cache="static")
    assert EvalConfig(engine="generate", kv_cache="static").kv_cache == "static"
