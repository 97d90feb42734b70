"""The generation seam: sampling and evaluation run through any `Sampler` (issue 16).

A fake sampler returns canned responses with a known log μ; the dataset and the evaluation built
from them must hold exactly those responses, that log μ, the task's grades, and log π_ref scored
by the (tiny) model teacher-forced — nothing of the Hugging Face engine is involved.
"""

from __future__ import annotations

import json

from dqo_tutorial import toy
from dqo_tutorial.configs import EvalConfig, SamplingConfig
from dqo_tutorial.evaluate import evaluate
from dqo_tutorial.models import load_model_and_tokenizer
from dqo_tutorial.sampling import Generation, build_dataset, reference_logprobs


class CannedSampler:
    """Sample j of every prompt answers ``answers[j]`` (toy solution text), log μ = −0.5 each."""

    def __init__(self, tokenizer, answers):
        self.tok, self.answers, self.calls = tokenizer, answers, []

    def sample(self, prompt_ids, *, num_samples, temperature, top_p, max_new_tokens, seed,
               record_logps=True, stream_ids=None):  # fmt: skip
        self.calls.append(dict(n=len(prompt_ids), k=num_samples, t=temperature, seed=seed))
        out = []
        for i, prompt in enumerate(prompt_ids):
            for j in range(num_samples):
                text = self.answers[j % len(self.answers)]
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
                ids = ids + [self.tok.eos_token_id]
                logps = [-0.5] * len(ids) if (record_logps and temperature > 0) else None
                out.append(Generation(i, j, list(prompt), ids, True, text, logps))
        return out


def test_build_dataset_through_a_fake_sampler(tmp_path):
    model, tok = load_model_and_tokenizer("toy", device="cpu", dtype="float32")
    problems = toy.load_toy("train", 2)
    answers = [problems[0].answer, "1+1=2\n#### 2"]  # problem 0's gold, then a wrong one
    sampler = CannedSampler(tok, answers)
    cfg = SamplingConfig(
        model="toy", task="toy", limit=2, num_samples=2, shard_size=2, temperature=0.7
    )  # τ ≠ 1: μ ≠ π_ref, the sampler's log μ is kept
    data = build_dataset(cfg, tmp_path / "d", model=model, tokenizer=tok, progress=False,
                         sampler=sampler)  # fmt: skip
    assert len(data) == 4 and sampler.calls[0]["k"] == 2 and sampler.calls[0]["t"] == 0.7
    assert list(data["response"]) == [answers[0], answers[1]] * 2
    assert list(data["reward"]) == [1.0, 0.0, float(problems[0].gold == problems[1].gold), 0.0]
    ex = [{"input_ids": r["input_ids"], "action_mask": r["action_mask"]} for r in data]
    for row, ref in zip(data, reference_logprobs(model, ex), strict=True):
        n_prompt = len(row["action_mask"]) - sum(row["action_mask"])
        assert row["behavior_logps"][n_prompt:] == [-0.5] * sum(row["action_mask"])
        assert row["ref_logps"] == ref  # log π_ref: the model, teacher-forced, not the sampler
        assert row["terminal"] is True


def test_evaluate_through_a_fake_sampler_needs_no_model(tmp_path):
    _, tok = load_model_and_tokenizer("toy", device="cpu", dtype="float32")
    problems = toy.load_toy("test", 3)
    sampler = CannedSampler(tok, [problems[0].answer])
    cfg = EvalConfig(model="toy", task="toy", limit=3, num_samples=2, batch_size=3)
    res = evaluate(cfg, tmp_path / "e", progress=False, sampler=sampler)
    rows = [json.loads(x) for x in (tmp_path / "e" / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 3 and {r["response"] for r in rows} == {problems[0].answer}
    expect = [float(r["gold"] == problems[0].gold) for r in rows if r["decoding"] == "greedy"]
    assert res["accuracy"]["greedy"]["strict"]["mean"] == sum(expect) / 3
    assert [c["t"] for c in sampler.calls] == [0.0, 1.0]  # greedy pass, then sampling pass
