"""Pooled Monte-Carlo values (dqo_tutorial.rollouts) against an exact tabular V.

A tabular policy over three tokens (a, b, EOS) whose next-token law depends on the last token
stands in for μ; V(s) = P(the text contains "ab" | s) under a token budget is enumerated exactly.
The pooled estimator must be unbiased for V, give every state at least k rollouts, and draw fewer
rollouts than k per state; counts are also checked by hand on a deterministic policy.
"""

from __future__ import annotations

import functools
import math
import random

import pytest

from dqo_tutorial.decoding import Generation, derive_seed
from dqo_tutorial.rollouts import pooled_rollout_counts, prefix_parents
from dqo_tutorial.sampling import monte_carlo_potentials

EOS, A, B, START = 0, 1, 2, 9
LAW = {START: (0.1, 0.6, 0.3), A: (0.2, 0.3, 0.5), B: (0.3, 0.4, 0.3)}
"""P(EOS), P(a), P(b) after each last token."""
BUDGET = 5


class Letters:
    """decode: a → "a", b → "b", EOS and the start token dropped."""

    eos_token_id = EOS

    def decode(self, ids, skip_special_tokens=True):
        return "".join({A: "a", B: "b"}.get(t, "") for t in ids)


class TabularSampler:
    """μ of :data:`LAW`, one ``random.Random`` per row stream (seed, stream, j) — the
    :class:`~dqo_tutorial.decoding.Sampler` contract; counts the rows it draws."""

    def __init__(self, law=LAW):
        self.law, self.rows = law, 0

    def sample(
        self,
        prompt_ids,
        *,
        num_samples,
        temperature,
        top_p,
        max_new_tokens,
        seed,
        record_logps=True,
        stream_ids=None,
    ):
        names = list(range(len(prompt_ids))) if stream_ids is None else list(stream_ids)
        budgets = (
            [max_new_tokens] * len(prompt_ids)
            if isinstance(max_new_tokens, int)
            else max_new_tokens
        )  # noqa: E501
        out = []
        for i, prompt in enumerate(prompt_ids):
            for j in range(num_samples):
                rng, last, ids = (
                    random.Random(derive_seed(seed, "row", names[i], j)),
                    prompt[-1],
                    [],
                )
                while len(ids) < budgets[i] and (not ids or ids[-1] != EOS):
                    last = rng.choices((EOS, A, B), weights=self.law[last])[0]
                    ids.append(last)
                out.append(
                    Generation(i, j, list(prompt), ids, bool(ids) and ids[-1] == EOS, "", None)
                )  # noqa: E501
                self.rows += 1
        return out


class CountingTabularSampler(TabularSampler):
    """The same law with the engine's ``sample_counts`` (one call per wave)."""

    def sample_counts(self, prompt_ids, counts, **kw):
        streams = kw.pop("stream_ids")
        return [
            g
            for p, c, s in zip(prompt_ids, counts, streams)
            for g in self.sample([p], num_samples=c, stream_ids=[s], **kw)
        ]


def wins(text: str, gold: str = "", mode: str = "strict") -> bool:
    return "ab" in text


@functools.cache
def exact_value(prefix: tuple[int, ...]) -> float:
    """V(s) by enumeration: the text so far, then every continuation within the budget."""
    text = Letters().decode(prefix)
    if len(prefix) == BUDGET or (prefix and prefix[-1] == EOS):
        return float(wins(text))
    last = prefix[-1] if prefix else START
    return sum(p * exact_value(prefix + (t,)) for t, p in zip((EOS, A, B), LAW[last]))


RESPONSES = [(A, A, B, EOS), (A, B, B, A, A), (B, A, EOS), (B, B, A, B, EOS)]


def _potentials(seed: int, k: int, pooled: bool, sampler=None):
    gens = [
        Generation(0, j, [START], list(r), r[-1] == EOS, "", None) for j, r in enumerate(RESPONSES)
    ]  # noqa: E501
    positions = [list(range(len(r))) for r in RESPONSES]
    return monte_carlo_potentials(
        None,
        Letters(),
        gens,
        [""] * len(gens),
        k=k,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=BUDGET,
        seed=seed,
        batch_size=8,
        grader=wins,
        sampler=sampler or TabularSampler(),
        positions=positions,
        pooled=pooled,
    )


def test_pooled_estimates_are_unbiased_for_the_exact_value():
    """Mean of the pooled estimate over 400 seeds within 4.5 standard errors (of 4 rollouts per
    seed) of the enumerated V at every one of the 12 distinct states."""
    seeds, k = 400, 4
    sums: dict[tuple[int, ...], float] = {}
    for seed in range(seeds):
        for r, pairs in zip(RESPONSES, _potentials(seed, k, pooled=True)):
            for h, phi in pairs:
                sums[r[:h]] = sums.get(r[:h], 0.0) + phi / len(RESPONSES)  # counted once per row
    counts = {}
    for r in RESPONSES:
        for h in range(len(r)):
            counts[r[:h]] = counts.get(r[:h], 0) + 1 / len(RESPONSES)
    assert len(sums) == 12
    for prefix, total in sums.items():
        mean, v = total / counts[prefix] / seeds, exact_value(prefix)
        se = math.sqrt(max(v * (1 - v), 1e-4) / (k * seeds))
        assert abs(mean - v) < 4.5 * se, (prefix, mean, v)


def test_pooling_gives_every_state_exactly_k_rollouts_and_draws_fewer():
    """A rollout that reaches a state passed through its parent, so a state inherits at most its
    parent's k and is topped up to exactly k."""
    states = list(dict.fromkeys(((START,), r[:h], "") for r in RESPONSES for h in range(len(r))))
    budgets = [BUDGET - len(s[1]) for s in states]
    sampler = TabularSampler()
    counts = pooled_rollout_counts(
        sampler, states, budgets, lambda s, c: wins(Letters().decode(s[1] + tuple(c))), k=8, seed=0
    )
    assert [n for _, n in counts] == [8] * len(states)
    assert sampler.rows < 8 * len(states)  # the unpooled estimator draws exactly 8 per state


def test_one_call_per_wave_draws_what_one_call_per_count_draws():
    """Through ``sample_counts`` (the engine's path) or one ``sample`` per distinct count (any
    other sampler), each state's rollouts read the same streams: identical counts."""
    states = list(dict.fromkeys(((START,), r[:h], "") for r in RESPONSES for h in range(len(r))))
    budgets = [BUDGET - len(s[1]) for s in states]
    grade = lambda s, c: wins(Letters().decode(s[1] + tuple(c)))  # noqa: E731
    runs = [
        pooled_rollout_counts(sampler, states, budgets, grade, k=6, seed=seed)
        for seed in (0, 1)
        for sampler in (TabularSampler(), CountingTabularSampler())
    ]
    assert runs[0] == runs[1] and runs[2] == runs[3] and runs[0] != runs[2]


def test_a_deterministic_policy_is_rolled_out_once_at_the_root():
    """μ always writes a, b, EOS: both rollouts from the root pass through "a" and "ab", so
    nothing is topped up (2 rows, not 2 per state), and each state counts 2 wins of 2."""
    law = {START: (0.0, 1.0, 0.0), A: (0.0, 0.0, 1.0), B: (1.0, 0.0, 0.0)}
    states = [((START,), (), ""), ((START,), (A,), ""), ((START,), (A, B), "")]
    sampler = TabularSampler(law)
    counts = pooled_rollout_counts(
        sampler,
        states,
        [5, 4, 3],
        lambda s, c: wins(Letters().decode(s[1] + tuple(c))),
        k=2,
        seed=0,
    )
    assert counts == [(2, 2), (2, 2), (2, 2)] and sampler.rows == 2


def test_prefix_parents_by_hand():
    p = (START,)
    states = [
        (p, (), "x"),
        (p, (A,), "x"),
        (p, (A, B, A), "x"),
        (p, (A, B, A), "y"),
        (p, (B,), "x"),
        ((5,), (A,), "x"),
    ]
    assert prefix_parents(states) == [-1, 0, 1, -1, 0, -1]


@pytest.mark.parametrize("pooled", [False, True])
def test_both_estimators_agree_with_the_exact_value_at_large_k(pooled):
    """One seed, k = 2,000: every state within 4.5 standard errors (the unpooled estimator is
    the reference the pooled one replaces)."""
    for r, pairs in zip(RESPONSES, _potentials(0, 2000, pooled=pooled)):
        for h, phi in pairs:
            v = exact_value(r[:h])
            assert abs(phi - v) < 4.5 * math.sqrt(max(v * (1 - v), 1e-4) / 2000), (r[:h], phi, v)
