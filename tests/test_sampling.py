"""Offline DQO dataset: log μ / log π_ref correctness, termination, rewards, potentials, resume."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dqo_tutorial
from dqo_tutorial import sampling
from dqo_tutorial.collate import example_from_ids
from dqo_tutorial.gsm8k import PROMPT_TEMPLATE_VERSION, dataset_hash, load_gsm8k
from dqo_tutorial.modeling import per_token_logprobs
from dqo_tutorial.models import load_model_and_tokenizer, tiny_causal_lm, tiny_tokenizer
from dqo_tutorial.sampling import (
    Generation,
    HFSampler,
    SamplingConfig,
    build_dataset,
    generate,
    make_sampler,
    monte_carlo_potentials,
    process_rewards,
    reference_logprobs,
    step_boundaries,
)
from dqo_tutorial.tasks import TASKS

PROMPTS = ["Question: Tom has 3 apples and gets 4 more.\nAnswer:", "What is 12 + 7?"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs on one intra-op thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    """A tiny Llama with a logit bias towards EOS and newline, so that responses both end and get
    cut, and contain lines. Its generation_config carries sampling defaults that must NOT leak into
    μ (the transformers quirk: unset knobs are filled from the model's config, top_k = 50, ...)."""
    lm = tiny_causal_lm(len(tok), seed=1)
    head = nn.Linear(lm.config.hidden_size, len(tok), bias=True)
    with torch.no_grad():
        head.weight.copy_(lm.lm_head.weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 4.0
        head.bias[tok.encode("\n")[0]] = 5.0
    lm.lm_head = head
    lm.generation_config.top_k = 5
    lm.generation_config.repetition_penalty = 1.5
    lm.generation_config.temperature = 0.3
    return lm.eval()


def _fresh_logits(model, gen: Generation) -> torch.Tensor:
    """Logits scoring each response token, (H, V), from one unpadded forward pass."""
    ids = torch.tensor([gen.prompt_ids + gen.response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    n = len(gen.prompt_ids)
    return logits[n - 1 : n - 1 + len(gen.response_ids)]


def _fresh_logps(model, gen: Generation, temperature: float) -> torch.Tensor:
    ids = torch.tensor([gen.prompt_ids + gen.response_ids])
    with torch.no_grad():
        lp = per_token_logprobs(model, ids, torch.ones_like(ids), temperature=temperature)
    return lp[0, len(gen.prompt_ids) :]


# ------------------------------------------------------------------------------ log μ, log π_ref


ENGINES = ["decode", "generate"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("tau", [0.7, 1.0, 1.3])
def test_behaviour_logps_are_the_tempered_law_and_ref_logps_the_untempered(model, tok, tau, engine):
    gens = generate(model, tok, PROMPTS, num_samples=3, temperature=tau, max_new_tokens=10,
                    sampler=make_sampler(model, tok, 4, engine))  # fmt: skip
    examples = [example_from_ids(g.prompt_ids, g.response_ids) for g in gens]
    ref = reference_logprobs(model, examples, batch_size=2)
    gaps = []
    for g, ex, r in zip(gens, examples, ref):
        n = len(g.prompt_ids)
        mu = torch.tensor(g.behavior_logps)
        torch.testing.assert_close(mu, _fresh_logps(model, g, tau), atol=1e-4, rtol=0)
        assert len(r) == len(ex["input_ids"]) and r[:n] == [0.0] * n
        torch.testing.assert_close(
            torch.tensor(r[n:]), _fresh_logps(model, g, 1.0), atol=1e-4, rtol=0
        )
        gaps.append((mu - torch.tensor(r[n:])).abs().max().item())
    if tau != 1.0:
        assert max(gaps) > 1e-2  # log μ ≠ log π_ref at τ ≠ 1
    else:
        assert max(gaps) < 1e-4


def test_behaviour_logps_with_top_p_are_the_renormalised_nucleus(model, tok):
    tau, top_p = 0.9, 0.8
    gens = generate(
        model, tok, PROMPTS, num_samples=3, temperature=tau, top_p=top_p, max_new_tokens=10
    )
    truncated = False
    for g in gens:
        probs = torch.softmax(_fresh_logits(model, g) / tau, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
        keep_sorted = before < top_p  # the smallest top set reaching mass top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        nucleus = torch.where(keep, probs, 0.0)
        nucleus = nucleus / nucleus.sum(-1, keepdim=True)
        chosen = torch.tensor(g.response_ids)[:, None]
        expected = nucleus.gather(-1, chosen).log().squeeze(-1)
        torch.testing.assert_close(torch.tensor(g.behavior_logps), expected, atol=1e-4, rtol=0)
        plain = probs.gather(-1, chosen).log().squeeze(-1)
        truncated |= bool((expected - plain > 1e-3).any())
    assert truncated  # the nucleus really cut something off


def _nucleus_logps(model, g: Generation, tau: float, top_p: float) -> torch.Tensor:
    """Teacher-forced log μ by hand: softmax(z/τ), the smallest top set reaching mass top_p
    (ties broken by the sort), renormalised, at the chosen tokens."""
    probs = torch.softmax(_fresh_logits(model, g).double() / tau, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    nucleus = torch.where(keep, probs, 0.0)
    chosen = torch.tensor(g.response_ids)[:, None]
    return (nucleus / nucleus.sum(-1, keepdim=True)).gather(-1, chosen).log().squeeze(-1)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("top_p", [1.0, 0.8])
@pytest.mark.parametrize("tau", [0.7, 1.0, 1.3])
def test_log_mu_is_the_law_sampled_for_every_temperature_and_top_p(model, tok, tau, top_p, engine):
    """The recorder must see the scores after the temperature and top-p warpers: one that saw
    the raw logits would give log softmax(z) and fail every τ ≠ 1 and every cut nucleus."""
    gens = generate(model, tok, PROMPTS, num_samples=4, temperature=tau, top_p=top_p,
                    max_new_tokens=10, sampler=make_sampler(model, tok, 3, engine))  # fmt: skip
    for g in gens:
        expected = _nucleus_logps(model, g, tau, top_p).float()
        torch.testing.assert_close(torch.tensor(g.behavior_logps), expected, atol=1e-4, rtol=0)


def test_recording_log_mu_keeps_no_per_step_scores(model, tok, monkeypatch):
    """log μ costs one (B, V) buffer: generate is never asked to return every step's scores or
    logits (steps × B × V floats: 51 GB for 512 × 512 × 49,152)."""
    seen = []
    original = type(model).generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs["generation_config"])
        result = original(self, *args, **kwargs)
        assert getattr(result, "scores", None) is None and getattr(result, "logits", None) is None
        return result

    monkeypatch.setattr(type(model), "generate", spy)
    gens = generate(model, tok, PROMPTS, num_samples=2, temperature=0.7, top_p=0.9,
                    max_new_tokens=6, sampler=HFSampler(model, tok))  # fmt: skip
    assert seen and all(g.behavior_logps is not None for g in gens)
    assert not any(c.output_scores or c.output_logits for c in seen)


# ------------------------------------------------------------------------------ termination


@pytest.mark.parametrize("engine", ENGINES)
def test_eos_ends_a_response_and_length_cut_is_not_finished(model, tok, engine):
    eos = tok.eos_token_id
    gens = generate(model, tok, PROMPTS, num_samples=6, max_new_tokens=6, seed=3,
                    sampler=make_sampler(model, tok, 16, engine))  # fmt: skip
    assert len(gens) == 12
    assert [(g.prompt_index, g.sample_index) for g in gens[:7]] == [(0, j) for j in range(6)] + [
        (1, 0)
    ]
    assert {g.finished for g in gens} == {True, False}  # the fixture yields both kinds
    for g in gens:
        assert eos not in g.response_ids[:-1]
        assert len(g.behavior_logps) == len(g.response_ids)
        assert "<|im_end|>" not in g.text
        if g.finished:
            assert g.response_ids[-1] == eos and 1 <= len(g.response_ids) <= 6
        else:
            assert len(g.response_ids) == 6 and g.response_ids[-1] != eos
        assert g.text == tok.decode(g.response_ids, skip_special_tokens=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_greedy_has_no_behaviour_logps_and_repeats(model, tok, engine):
    gens = generate(model, tok, PROMPTS[:1], num_samples=2, temperature=0.0, max_new_tokens=5,
                    sampler=make_sampler(model, tok, 16, engine))  # fmt: skip
    assert gens[0].response_ids == gens[1].response_ids
    assert gens[0].behavior_logps is None
    logits = _fresh_logits(model, gens[0])
    assert logits.argmax(-1).tolist() == gens[0].response_ids


@pytest.mark.parametrize("engine", ENGINES)
def test_sampling_is_reproducible_and_leaves_the_global_rng_alone(model, tok, engine):
    state = torch.get_rng_state()
    kw = dict(num_samples=3, max_new_tokens=6, sampler=make_sampler(model, tok, 4, engine))
    a = generate(model, tok, PROMPTS, seed=7, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = generate(model, tok, PROMPTS, seed=7, **kw)
    c = generate(model, tok, PROMPTS, seed=8, **kw)
    assert a == b
    assert [g.response_ids for g in a] != [g.response_ids for g in c]


# ------------------------------------------------------------------------------ process rewards


def test_process_rewards_hand_computed():
    shaped = process_rewards(6, [(2, 0.5), (4, 0.25)], alpha=0.5, phi_start=0.25, phi_end=1.0)
    assert shaped == [0.0, 0.125, 0.0, -0.125, 0.0, 0.375]
    assert process_rewards(3, [(1, 0.7)], alpha=0.0, phi_start=0.1, phi_end=1.0) == [0.0] * 3
    assert process_rewards(1, [], alpha=2.0, phi_start=0.25, phi_end=0.0) == [-0.5]
    with pytest.raises(ValueError, match="strictly increasing"):
        process_rewards(4, [(3, 0.1), (2, 0.1)], 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        process_rewards(4, [(4, 0.1)], 1.0, 0.0, 1.0)


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    length=st.integers(1, 30),
    alpha=st.floats(0, 2),
    phi_start=st.floats(0, 1),
    reward=st.sampled_from([0.0, 1.0]),
)
def test_process_rewards_telescope(data, length, alpha, phi_start, reward):
    steps = data.draw(st.sets(st.integers(1, max(1, length - 1))).map(sorted))
    steps = [h for h in steps if h < length]
    phis = data.draw(st.lists(st.floats(0, 1), min_size=len(steps), max_size=len(steps)))
    shaped = process_rewards(length, list(zip(steps, phis)), alpha, phi_start, reward)
    assert len(shaped) == length
    assert sum(shaped) == pytest.approx(alpha * (reward - phi_start), abs=1e-9)
    nonzero = {i for i, r in enumerate(shaped) if r != 0.0}
    assert nonzero <= {h - 1 for h in steps} | {length - 1}


def test_step_boundaries_follow_newline_tokens(tok):
    ids = tok.encode("a\nb\n\n#### 5") + [tok.eos_token_id]  # a, \n, b, \n, \n, ####, ' 5', EOS
    assert [tok.decode([t]) for t in ids[:5]] == ["a", "\n", "b", "\n", "\n"]
    assert step_boundaries(tok, ids) == [2, 4, 5]
    assert step_boundaries(tok, tok.encode("x\n")) == []  # the final state is not a boundary


def test_monte_carlo_potentials(model, tok, monkeypatch):
    gens = generate(model, tok, PROMPTS, num_samples=2, max_new_tokens=8, seed=1)
    kwargs = dict(k=3, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0, batch_size=8)
    potentials = monte_carlo_potentials(model, tok, gens, ["5", "5", "19", "19"], **kwargs)
    assert sum(len(p) for p in potentials) > 0
    for g, pairs in zip(gens, potentials):
        assert [h for h, _ in pairs] == step_boundaries(tok, g.response_ids)
        assert all(phi in (0.0, 1 / 3, 2 / 3, 1.0) for _, phi in pairs)

    graded: list[str] = []
    monkeypatch.setattr(sampling, "is_correct", lambda text, gold, mode: graded.append(text) or 1)
    potentials = monte_carlo_potentials(model, tok, gens, ["5", "5", "19", "19"], **kwargs)
    assert all(phi == 1.0 for pairs in potentials for _, phi in pairs)
    states = list(
        dict.fromkeys(
            (tuple(g.prompt_ids), tuple(g.response_ids[:h]), gold)
            for g, gold in zip(gens, ["5", "5", "19", "19"])
            for h in step_boundaries(tok, g.response_ids)
        )
    )
    prefixes = [tok.decode(list(prefix), skip_special_tokens=True) for _, prefix, _ in states]
    assert len(graded) == 3 * len(prefixes)  # k rollouts per distinct state
    assert all(text.startswith(prefixes[i // 3]) for i, text in enumerate(graded))


def test_monte_carlo_potentials_roll_out_a_shared_state_once(model, tok, monkeypatch):
    gens = generate(model, tok, PROMPTS[:2], num_samples=1, max_new_tokens=8, seed=1)
    gens = [g for g in gens if step_boundaries(tok, g.response_ids)][:1]
    assert gens, "the tiny model must produce a response with a step boundary"
    calls: list[int] = []
    real_sample = sampling.DecodeSampler.sample
    monkeypatch.setattr(
        sampling.DecodeSampler,
        "sample",
        lambda self, prompts, **kw: calls.append(len(prompts)) or real_sample(self, prompts, **kw),
    )
    kwargs = dict(k=4, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0, batch_size=8)
    twice = monte_carlo_potentials(model, tok, gens * 2, ["5", "5"], **kwargs)
    n_states = len(step_boundaries(tok, gens[0].response_ids))
    assert calls == [n_states]  # the second copy of the response adds no rollouts
    assert twice[0] == twice[1]
    other_gold = monte_carlo_potentials(model, tok, gens * 2, ["5", "6"], **kwargs)
    assert calls[-1] == 2 * n_states  # same text, another gold: another state
    assert [h for h, _ in other_gold[1]] == [h for h, _ in other_gold[0]]


# ------------------------------------------------------------------------------ the dataset


def _cfg(**overrides) -> SamplingConfig:
    base = dict(
        model="tiny-test",
        data_source="embedded",
        limit=3,
        num_samples=2,
        max_new_tokens=8,
        batch_size=4,
        shard_size=1,
        process_rewards=True,
        process_k=2,
    )
    return SamplingConfig(**{**base, **overrides})


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_at_temperature_one_log_mu_is_the_stored_log_pi_ref(tmp_path, tau):
    """μ = π_ref at τ = 1, top-p = 1: one teacher-forced column, so w = exp(log π_θ − log μ)
    starts at exactly 1. A log μ recorded while decoding (KV cache, left padding) differs from
    the teacher-forced log π_ref by float noise: on the toy π_ref, 142 of 4,029 tokens, ≤ 6e-6."""
    toy_model, toy_tok = load_model_and_tokenizer("toy", dtype="float32")
    cfg = SamplingConfig(task="toy", model="toy", limit=24, num_samples=4, temperature=tau,
                         batch_size=48, shard_size=24, process_rewards=False)  # fmt: skip
    ds = build_dataset(cfg, tmp_path, model=toy_model, tokenizer=toy_tok, progress=False)
    mu, ref = ds["behavior_logps"], ds["ref_logps"]
    if tau == 1.0:
        assert mu == ref
    else:  # the tempered law is recorded, not π_ref
        gap = max(abs(a - b) for m, r in zip(mu, ref) for a, b in zip(m, r))
        assert gap > 1e-2


def test_build_dataset_resume_and_manifest(model, tok, tmp_path):
    cfg = _cfg()
    ds = build_dataset(cfg, tmp_path, model=model, tokenizer=tok, progress=False)
    assert len(ds) == 6
    assert ds["prompt_index"] == [0, 0, 1, 1, 2, 2] and ds["sample_index"] == [0, 1] * 3
    for row in ds:
        n = len(row["input_ids"])
        assert len(row["action_mask"]) == len(row["behavior_logps"]) == len(row["ref_logps"]) == n
        assert sum(row["action_mask"]) == row["response_length"] <= 8
        off = [i for i, m in enumerate(row["action_mask"]) if not m]
        assert all(row["behavior_logps"][i] == 0.0 == row["ref_logps"][i] for i in off)
        assert row["reward"] in (0.0, 1.0) and 0.0 <= row["phi_start"] <= 1.0
        assert len(row["step_boundaries"]) == len(row["step_phi"])
    expected_ref = reference_logprobs(model, [dict(r) for r in ds], batch_size=3)
    torch.testing.assert_close(
        torch.tensor([x for r in ds["ref_logps"] for x in r]),
        torch.tensor([x for r in expected_ref for x in r]),
        atol=1e-5,
        rtol=0,
    )

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    problems = load_gsm8k("train", "embedded", 3)
    assert manifest["data"]["dataset_hash"] == dataset_hash(problems)
    assert manifest["prompt_template_version"] == PROMPT_TEMPLATE_VERSION
    assert manifest["package_version"] == dqo_tutorial.__version__
    assert manifest["model"] == "tiny-test" and manifest["seed"] == 0
    assert manifest["decoding"] == {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_new_tokens": 8,
        "num_samples": 2,
    }
    assert manifest["counts"] == {"prompts": 3, "samples": 6, "shards": 3}
    summary = manifest["summary"]
    for key in (
        "positive_rate",
        "mean_response_tokens",
        "length_cut_share",
        "samples_per_s",
        "tokens_per_s",
    ):
        assert key in summary
    assert summary["mean_response_tokens"] == sum(ds["response_length"]) / 6
    assert {"sampling_s", "reference_s", "process_s", "wall_time_s_this_run"} <= set(
        manifest["timing"]
    )

    # interrupted run: the last shard, the final dataset and the manifest never got written
    before = ds.to_list()
    shutil.rmtree(tmp_path / "shards" / "shard-00002")
    shutil.rmtree(tmp_path / "dataset")
    (tmp_path / "manifest.json").unlink()
    resumed = build_dataset(cfg, tmp_path, model=model, tokenizer=tok, progress=False)
    assert resumed.to_list() == before

    with pytest.raises(ValueError, match=r"temperature: stored 1\.0, requested 0\.7"):
        build_dataset(_cfg(temperature=0.7), tmp_path, model=model, tokenizer=tok)
    with pytest.raises(ValueError, match="dataset_hash.*limit"):
        build_dataset(_cfg(limit=2), tmp_path, model=model, tokenizer=tok)


def test_rewards_are_labelled_by_is_correct(model, tok, tmp_path, monkeypatch):
    gold = load_gsm8k("train", "embedded", 1)[0].gold
    texts = [f"So\n#### {gold}", "So\n#### -1", f"the answer is {gold}"]

    def fake_generate(model, tokenizer, prompts, *, num_samples, **kwargs):
        assert len(prompts) == 1 and num_samples == len(texts)
        prompt_ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
        out = []
        for j, text in enumerate(texts):
            ids = tokenizer.encode(text) + [tokenizer.eos_token_id]
            out.append(Generation(0, j, prompt_ids, ids, True, text, [-1.0] * len(ids)))
        return out

    monkeypatch.setattr(sampling, "generate", fake_generate)
    cfg = _cfg(limit=1, num_samples=3, process_rewards=False)
    strict = build_dataset(cfg, tmp_path / "strict", model=model, tokenizer=tok, progress=False)
    assert strict["reward"] == [1.0, 0.0, 0.0]
    assert strict["response"] == texts and strict["terminal"] == [True] * 3
    flexible = build_dataset(
        _cfg(limit=1, num_samples=3, process_rewards=False, reward_mode="flexible"),
        tmp_path / "flexible",
        model=model,
        tokenizer=tok,
        progress=False,
    )
    assert flexible["reward"] == [1.0, 0.0, 1.0]


def test_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0.0)
    with pytest.raises(ValueError, match="reward_mode"):
        SamplingConfig(reward_mode="lenient")
    with pytest.raises(ValueError, match="num_samples"):
        SamplingConfig(num_samples=0)


def test_summarize():
    from datasets import Dataset

    ds = Dataset.from_dict(
        {
            "prompt_index": [0, 0, 1, 1],
            "reward": [1.0, 0.0, 0.0, 0.0],
            "response_length": [4, 6, 8, 2],
            "terminal": [True, False, True, True],
        }
    )
    stats = sampling.summarize(ds, seconds=2.0)
    assert stats == {
        "num_prompts": 2,
        "num_samples": 4,
        "positive_rate": 0.25,
        "prompts_with_positive": 0.5,
        "mean_response_tokens": 5.0,
        "length_cut_share": 0.25,
        "samples_per_s": 2.0,
        "tokens_per_s": 10.0,
    }
    assert "samples_per_s" not in sampling.summarize(ds)


@pytest.mark.parametrize("engine", ENGINES)
def test_record_logps_false_draws_the_same_responses_without_scores(model, tok, engine):
    """Evaluation turns the scores off (they take batch × steps × vocab floats on the device):
    the responses must not change, only log μ goes."""
    kw = dict(num_samples=2, temperature=1.0, max_new_tokens=6, seed=3,
              sampler=make_sampler(model, tok, 16, engine))  # fmt: skip
    with_logps = generate(model, tok, PROMPTS[:2], **kw)
    without = generate(model, tok, PROMPTS[:2], record_logps=False, **kw)
    assert [g.response_ids for g in without] == [g.response_ids for g in with_logps]
    assert all(g.behavior_logps is None for g in without)
    assert all(g.behavior_logps is not None for g in with_logps)


def test_with_monte_carlo_potentials_relabels_the_same_rows(model, tok, tmp_path, monkeypatch):
    cfg = _cfg(process_rewards=False, num_samples=3)
    ds = build_dataset(cfg, tmp_path, model=model, tokenizer=tok, progress=False)
    mc_cfg = dataclasses.replace(cfg, process_rewards=True, process_k=2)
    relabelled = sampling.with_monte_carlo_potentials(ds, mc_cfg, model, tok)
    assert len(relabelled) == len(ds)
    for old, new in zip(ds, relabelled):
        assert {k: new[k] for k in old} == old  # every sampled column kept (float32 both)
        n_prompt = len(old["input_ids"]) - sum(old["action_mask"])
        response = old["input_ids"][n_prompt:]
        assert new["step_boundaries"] == step_boundaries(tok, response)
        assert all(phi in (0.0, 0.5, 1.0) for phi in new["step_phi"])
        own = [r["reward"] for r in ds if r["prompt_index"] == old["prompt_index"]]
        assert new["phi_start"] == pytest.approx(sum(own) / len(own))
    # the grader decides Φ: always right → Φ = 1 at every boundary
    always = dataclasses.replace(TASKS[cfg.task], is_correct=lambda text, gold, mode: True)
    monkeypatch.setitem(TASKS, cfg.task, always)
    ones = sampling.with_monte_carlo_potentials(ds, mc_cfg, model, tok)
    assert all(phi == 1.0 for row in ones for phi in row["step_phi"])
    assert sum(len(row["step_phi"]) for row in ones) > 0


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_a_static_kv_cache_draws_the_same_responses(model, tok, tau):
    """kv_cache="static" (what lets transformers compile the decode step on a GPU) changes how
    keys and values are stored, not the law: the same responses for the same seed, and log μ
    equal to float noise."""
    kw = dict(num_samples=3, temperature=tau, top_p=1.0, max_new_tokens=8, seed=4)
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    dynamic = HFSampler(model, tok, batch_size=4).sample(prompt_ids, **kw)
    static = HFSampler(model, tok, batch_size=4, kv_cache="static").sample(prompt_ids, **kw)
    assert [g.response_ids for g in static] == [g.response_ids for g in dynamic]
    if tau:
        for a, b in zip(dynamic, static):
            mu_a, mu_b = torch.tensor(a.behavior_logps), torch.tensor(b.behavior_logps)
            torch.testing.assert_close(mu_b, mu_a, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="kv_cache"):
        SamplingConfig(kv_cache="paged")
