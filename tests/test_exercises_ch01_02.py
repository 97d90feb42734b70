"""Checkers of notebooks 01 and 02: plausible wrong answers fail, the references are right."""

from __future__ import annotations

import torch

from dqo_tutorial import exercises, tabular
from dqo_tutorial.exercises import ch02


def _quiet(check, fn):
    return check(fn, quiet=True)


def test_outcome_rewards_catches_the_usual_wrong_answers():
    def last_column(mask, outcome):  # right padding puts pads in the last column
        out = torch.zeros(mask.shape, dtype=outcome.dtype)
        out[:, -1] = outcome
        return out

    def reward_in_empty_rows(mask, outcome):  # argmax of an all-False row is column 0
        cols = torch.arange(mask.shape[1])
        last = torch.where(mask, cols, -1).max(dim=1).values.clamp(min=0)
        out = torch.zeros(mask.shape, dtype=outcome.dtype)
        out[torch.arange(mask.shape[0]), last] = outcome
        return out

    for wrong in (last_column, reward_in_empty_rows):
        assert _quiet(exercises.check_outcome_rewards, wrong).status == "fail", wrong.__name__


def test_sequence_logprob_fails_a_sum_over_every_column():
    assert _quiet(exercises.check_sequence_logprob, lambda x, m: x.sum(1)).status == "fail"


def test_backward_induction_fails_the_overflowing_form():
    def naive(mdp, beta):  # β log Σ π_ref e^{Q/β}: e^{Q/β} overflows at β = 0.001
        v = torch.zeros(mdp.n_states, dtype=torch.float64)
        for s in reversed(range(mdp.n_states)):
            nxt = mdp.next_state[s]
            q = mdp.reward[s] + torch.where(nxt >= 0, v[nxt.clamp(min=0)], 0.0)
            v[s] = beta * torch.log((mdp.ref_logp[s].exp() * torch.exp(q / beta)).sum())
        return v

    v = _quiet(exercises.check_backward_induction, naive)
    assert v.status == "fail" and "input 4" in v.message, v.message


def test_policy_value_reference_is_the_objective_of_every_state():
    """Independent checks of the enumeration: V^π* = V* (the solver), V^π_ref = the expected
    return under π_ref with no KL, and V^π ≤ V* for a random policy."""
    mdp = tabular.TreeMDP.random(3, 3, seed=4, process_scale=0.3)
    beta = 0.7
    sol = tabular.solve(mdp, beta)
    torch.testing.assert_close(ch02._policy_value_reference(mdp, sol.pi, beta), sol.v)
    batch = tabular.to_batch(mdp, tabular.enumerate_trajectories(mdp))
    p_ref = batch.gather(mdp.ref_logp).sum(1).exp()
    v_ref = ch02._policy_value_reference(mdp, mdp.ref_logp.exp(), beta)
    torch.testing.assert_close(v_ref[0], (p_ref * batch.rewards.sum(1)).sum())
    gen = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(mdp.ref_logp.shape, generator=gen, dtype=torch.float64), -1)
    assert bool((ch02._policy_value_reference(mdp, pi, beta) <= sol.v + 1e-12).all())


def test_policy_value_catches_the_usual_wrong_answers():
    def make(kl_sign: float, weights: str):
        def policy_value(mdp, pi, beta):
            w = pi if weights == "pi" else mdp.ref_logp.exp()
            v = torch.zeros(mdp.n_states, dtype=torch.float64)
            for s in reversed(range(mdp.n_states)):
                nxt = mdp.next_state[s]
                q = mdp.reward[s] + torch.where(nxt >= 0, v[nxt.clamp(min=0)], 0.0)
                v[s] = (w[s] * (q - kl_sign * beta * (pi[s].log() - mdp.ref_logp[s]))).sum()
            return v

        return policy_value

    assert _quiet(exercises.check_policy_value, make(1.0, "pi")).passed
    for wrong in (make(0.0, "pi"), make(-1.0, "pi"), make(1.0, "ref")):
        assert _quiet(exercises.check_policy_value, wrong).status == "fail"
