"""Tests of ``dqo_tutorial.tabular``.

The exact soft-optimal solver is checked against references written here, independently of its
backward induction (naive loops over prefixes, closed forms over enumerated trajectories); then it
serves as ground truth for the kernels (path consistency: with π*, V* every residual vanishes on
any trajectory, complete, cut or left-padded) and for tabular DQO training.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dqo_tutorial.cli import main
from dqo_tutorial.kernels import dqo_loss, lambda_return, soft_bellman_residual
from dqo_tutorial.tabular import (
    Batch,
    TreeMDP,
    enumerate_trajectories,
    sample_trajectories,
    solve,
    to_batch,
    train_tabular_dqo,
)

BETA = 0.5
MDPS = {
    "binary-K3-H3": dict(vocab_size=3, horizon=3, seed=0),
    "uniform-process-K4-H3": dict(
        vocab_size=4, horizon=3, seed=1, outcome="uniform", process_scale=0.3
    ),
    "binary-sharp-K3-H4-eos2": dict(vocab_size=3, horizon=4, seed=2, eos=2, ref_scale=1.5),
}


@pytest.fixture(params=list(MDPS))
def mdp(request) -> TreeMDP:
    return TreeMDP.random(**MDPS[request.param])


# ---- independent references: plain Python over prefixes ------------------------------------------


def is_terminal(mdp: TreeMDP, prefix: tuple[int, ...]) -> bool:
    return len(prefix) == mdp.horizon or (len(prefix) > 0 and prefix[-1] == mdp.eos)


def nonterminal_prefixes(mdp: TreeMDP) -> list[tuple[int, ...]]:
    tokens = [a for a in range(mdp.vocab_size) if a != mdp.eos]
    return [p for d in range(mdp.horizon) for p in itertools.product(tokens, repeat=d)]


def completions(mdp: TreeMDP, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every complete trajectory extending ``prefix``."""
    if is_terminal(mdp, prefix):
        return [prefix]
    return [t for a in range(mdp.vocab_size) for t in completions(mdp, prefix + (a,))]


def path_sum(mdp: TreeMDP, table: torch.Tensor, traj: tuple[int, ...], start: int = 0) -> float:
    """Σ_{h ≥ start} table[s_h, a_h] along ``traj`` (log-probabilities or rewards)."""
    return sum(float(table[mdp.index[traj[:h]], traj[h]]) for h in range(start, len(traj)))


def objective(mdp: TreeMDP, log_pi: torch.Tensor, beta: float) -> float:
    """J(π) = E_{τ~π}[R(τ) − β·log P_π(τ)/P_ref(τ)] by enumeration (KL-regularised return)."""
    total = 0.0
    for traj in completions(mdp):
        logp, logp_ref = path_sum(mdp, log_pi, traj), path_sum(mdp, mdp.ref_logp, traj)
        total += math.exp(logp) * (path_sum(mdp, mdp.reward, traj) - beta * (logp - logp_ref))
    return total


def trajectory_kl(mdp: TreeMDP, log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    return sum(
        math.exp(path_sum(mdp, log_p, t)) * (path_sum(mdp, log_p, t) - path_sum(mdp, log_q, t))
        for t in completions(mdp)
    )


def cut(trajs: list[tuple[int, ...]], seed: int) -> list[tuple[int, ...]]:
    """Cut every trajectory of length ≥ 2 at a random length in [1, len − 1] (non-terminal)."""
    gen = torch.Generator().manual_seed(seed)
    return [t[: int(torch.randint(1, len(t), (1,), generator=gen))] for t in trajs if len(t) >= 2]


def left_pad(batch: Batch) -> Batch:
    """The same rows, each rolled right so that its last action sits in the last column."""
    shift = (batch.tokens.shape[1] - 1 - batch.mask.sum(1)).tolist()

    def roll(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([row.roll(s) for row, s in zip(x, shift, strict=True)])

    return Batch(
        roll(batch.tokens),
        roll(batch.mask),
        roll(batch.state),
        roll(batch.rewards),
        batch.terminal,
        batch.last_state,
    )


def unpad_left(x: torch.Tensor, batch: Batch) -> torch.Tensor:
    shift = (batch.tokens.shape[1] - 1 - batch.mask.sum(1)).tolist()
    return torch.stack([row.roll(-s) for row, s in zip(x, shift, strict=True)])


# ---- the MDP and its exact solution --------------------------------------------------------------


def test_states_transitions_and_reference(mdp):
    prefixes = nonterminal_prefixes(mdp)
    assert sorted(mdp.states) == sorted(prefixes)
    assert mdp.states[0] == () and list(mdp.depth) == sorted(mdp.depth.tolist())
    for s in prefixes:
        for a in range(mdp.vocab_size):
            child = s + (a,)
            expected = -1 if is_terminal(mdp, child) else mdp.index[child]
            assert int(mdp.next_state[mdp.index[s], a]) == expected
    assert mdp.ref_logp.dtype == mdp.reward.dtype == torch.float64
    torch.testing.assert_close(
        mdp.ref_logp.exp().sum(-1), torch.ones(len(prefixes), dtype=torch.float64)
    )


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_solver_satisfies_soft_bellman_equations(mdp, beta):
    sol = solve(mdp, beta)
    for s in nonterminal_prefixes(mdp):
        i = mdp.index[s]
        q = [float(sol.q[i, a]) for a in range(mdp.vocab_size)]
        p_ref = [math.exp(float(mdp.ref_logp[i, a])) for a in range(mdp.vocab_size)]
        for a in range(mdp.vocab_size):
            child = s + (a,)
            v_child = 0.0 if is_terminal(mdp, child) else float(sol.v[mdp.index[child]])
            assert q[a] == pytest.approx(float(mdp.reward[i, a]) + v_child, abs=1e-12)
        # shift by max Q so that exp cannot overflow at small β
        q_max = max(q)
        v = q_max + beta * math.log(
            sum(p * math.exp((qa - q_max) / beta) for p, qa in zip(p_ref, q))
        )
        assert float(sol.v[i]) == pytest.approx(v, abs=1e-12)
        for a in range(mdp.vocab_size):
            pi = p_ref[a] * math.exp((q[a] - v) / beta)
            assert float(sol.pi[i, a]) == pytest.approx(pi, abs=1e-12)


def test_optimal_policy_identities(mdp):
    sol = solve(mdp, BETA)
    ones = torch.ones(mdp.n_states, dtype=torch.float64)
    torch.testing.assert_close(sol.pi.sum(-1), ones, rtol=0, atol=1e-13)
    torch.testing.assert_close(sol.log_pi.exp(), sol.pi, rtol=0, atol=0)
    q_from_pi = BETA * (sol.pi.log() - mdp.ref_logp) + sol.v[:, None]
    torch.testing.assert_close(q_from_pi, sol.q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("beta", [0.2, 1.0])
def test_value_equals_closed_form_over_trajectories(mdp, beta):
    """V*(s) = β·log E_{τ~π_ref | s}[exp(R(τ from s)/β)]: no backward induction involved."""
    sol = solve(mdp, beta)
    for s in nonterminal_prefixes(mdp):
        terms = [
            path_sum(mdp, mdp.ref_logp, t, len(s)) + path_sum(mdp, mdp.reward, t, len(s)) / beta
            for t in completions(mdp, s)
        ]
        m = max(terms)
        v = beta * (m + math.log(sum(math.exp(x - m) for x in terms)))
        assert float(sol.v[mdp.index[s]]) == pytest.approx(v, abs=1e-12)


def test_optimal_policy_maximises_regularised_objective(mdp):
    sol = solve(mdp, BETA)
    v_root = float(sol.v[0])
    assert objective(mdp, sol.log_pi, BETA) == pytest.approx(v_root, abs=1e-12)
    assert objective(mdp, mdp.ref_logp, BETA) < v_root - 1e-6
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        noise = torch.randn(sol.log_pi.shape, generator=gen, dtype=torch.float64)
        log_pi = torch.log_softmax(sol.log_pi + 0.5 * noise, -1)
        j = objective(mdp, log_pi, BETA)
        assert j < v_root - 1e-6
        # the gap is exactly β·KL(P_π ‖ P_π*) over trajectories
        assert v_root - j == pytest.approx(BETA * trajectory_kl(mdp, log_pi, sol.log_pi), abs=1e-12)


def test_potential_shaping_keeps_optimal_policy(mdp):
    phi = torch.rand(mdp.n_states, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha = 0.7
    sol, shaped = solve(mdp, BETA), solve(mdp.shaped(phi, alpha), BETA)
    torch.testing.assert_close(shaped.pi, sol.pi, rtol=0, atol=1e-12)
    torch.testing.assert_close(shaped.v, sol.v - alpha * phi, rtol=0, atol=1e-12)
    torch.testing.assert_close(shaped.q, sol.q - alpha * phi[:, None], rtol=0, atol=1e-12)


# ---- trajectories and batches --------------------------------------------------------------------


def test_enumeration_and_sampling(mdp):
    trajs = enumerate_trajectories(mdp)
    assert sorted(trajs) == sorted(completions(mdp))
    probs = {t: math.exp(path_sum(mdp, mdp.ref_logp, t)) for t in trajs}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    n = 20_000
    counts: dict[tuple[int, ...], int] = {}
    for t in sample_trajectories(mdp, mdp.ref_logp.exp(), n, seed=0):
        counts[t] = counts.get(t, 0) + 1
    assert set(counts) <= set(trajs)
    for t, p in probs.items():
        assert abs(counts.get(t, 0) / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3


def test_batch_layout_matches_naive_loop(mdp):
    complete = sample_trajectories(mdp, mdp.ref_logp.exp(), 50, seed=1)
    trajs = complete + cut(complete, seed=2)
    batch = to_batch(mdp, trajs)
    assert batch.tokens.shape == (len(trajs), 1 + max(map(len, trajs)))
    assert (batch.tokens[:, 0] == mdp.bos).all() and not batch.mask[:, 0].any()
    for b, t in enumerate(trajs):
        assert batch.mask[b].tolist() == [False] + [True] * len(t) + [False] * (
            batch.tokens.shape[1] - 1 - len(t)
        )
        assert batch.tokens[b, 1 : len(t) + 1].tolist() == list(t)
        assert bool(batch.terminal[b]) == is_terminal(mdp, t)
        for h in range(len(t)):
            i = mdp.index[t[:h]]
            assert int(batch.state[b, h + 1]) == i
            assert float(batch.rewards[b, h + 1]) == float(mdp.reward[i, t[h]])
            assert float(batch.gather(mdp.ref_logp)[b, h + 1]) == float(mdp.ref_logp[i, t[h]])
        expected_b = 0.0 if is_terminal(mdp, t) else float(mdp.depth[mdp.index[t]] + 1)
        assert float(batch.bootstrap(mdp.depth.to(torch.float64) + 1)[b]) == expected_b
    assert (batch.rewards[~batch.mask] == 0).all()


# ---- path consistency: the kernels at π*, V* -----------------------------------------------------


def per_token(mdp, sol, batch):
    """(log π*, log π_ref, V*, r̃ = r − β·log π*/π_ref) action-aligned."""
    logp, ref, v = batch.gather(sol.log_pi), batch.gather(mdp.ref_logp), batch.gather(sol.v)
    return logp, ref, v, batch.rewards - BETA * (logp - ref)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.95, 1.0])
def test_lambda_return_of_optimum_is_optimal_value(mdp, lam):
    """With π*, V*: G_h = V*(s_h) along any trajectory (here: sampled from π_ref), any λ."""
    sol = solve(mdp, BETA)
    complete = sample_trajectories(mdp, mdp.ref_logp.exp(), 300, seed=3)
    batch = to_batch(mdp, complete)
    logp, ref, v, shaped = per_token(mdp, sol, batch)
    g = lambda_return(shaped, v, batch.mask, lam)
    torch.testing.assert_close(g, v, rtol=0, atol=1e-12)
    delta = soft_bellman_residual(logp, ref, v, batch.rewards, batch.mask, BETA)
    assert delta.abs().max() < 1e-12

    # cut rows: bootstrap with V*(s_{H+1}); treating them as terminal must fail
    cut_batch = to_batch(mdp, cut(complete, seed=4))
    assert not cut_batch.terminal.any()
    logp, ref, v, shaped = per_token(mdp, sol, cut_batch)
    boot = cut_batch.bootstrap(sol.v)
    torch.testing.assert_close(
        lambda_return(shaped, v, cut_batch.mask, lam, boot), v, rtol=0, atol=1e-12
    )
    residual = soft_bellman_residual(logp, ref, v, cut_batch.rewards, cut_batch.mask, BETA, boot)
    assert residual.abs().max() < 1e-12
    no_boot = lambda_return(shaped, v, cut_batch.mask, lam)
    assert (no_boot - v).abs().max() > 1e-3

    # left padding: same values, rolled
    mixed = to_batch(mdp, complete[:100] + cut(complete[100:], seed=5))
    left = left_pad(mixed)
    assert left.mask[:, -1].all() and not torch.equal(left.mask, mixed.mask)
    logp, ref, v, shaped = per_token(mdp, sol, left)
    boot = left.bootstrap(sol.v)
    g_left = lambda_return(shaped, v, left.mask, lam, boot)
    torch.testing.assert_close(g_left, v, rtol=0, atol=1e-12)
    torch.testing.assert_close(unpad_left(g_left, left), mixed.gather(sol.v), rtol=0, atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("is_mode", ["none", "prefix", "sequence"])
@pytest.mark.parametrize("detach_target", [True, False])
def test_dqo_loss_and_gradients_vanish_at_optimum(mdp, lam, is_mode, detach_target):
    sol = solve(mdp, BETA)
    complete = sample_trajectories(mdp, mdp.ref_logp.exp(), 200, seed=6)
    batch = to_batch(mdp, complete + cut(complete, seed=7))

    def losses(log_pi_table, v_table):
        logits = log_pi_table.clone().requires_grad_(True)
        v = v_table.clone().requires_grad_(True)
        policy_loss, value_loss, _ = dqo_loss(
            batch.gather(torch.log_softmax(logits, -1)),
            batch.gather(mdp.ref_logp),
            batch.gather(v),
            batch.rewards,
            batch.mask,
            beta=BETA,
            lam=lam,
            bootstrap=batch.bootstrap(v),
            behavior_logps=batch.gather(mdp.ref_logp),
            is_mode=is_mode,
            detach_target=detach_target,
        )
        (policy_loss + value_loss).backward()
        return policy_loss.item(), value_loss.item(), logits.grad, v.grad

    policy_loss, value_loss, g_logits, g_v = losses(sol.log_pi, sol.v)
    assert policy_loss < 1e-28 and value_loss < 1e-28
    assert g_logits.abs().max() < 1e-14 and g_v.abs().max() < 1e-14
    # the same check can fail: move V* at the root
    off = sol.v.clone()
    off[0] += 0.1
    policy_loss, value_loss, g_logits, g_v = losses(sol.log_pi, off)
    assert policy_loss > 1e-6 and value_loss > 1e-6 and g_v.abs().max() > 1e-4


# ---- tabular DQO training ------------------------------------------------------------------------

TRAIN_MDP = dict(vocab_size=4, horizon=3, seed=1, outcome="uniform", process_scale=0.2)
TOL = 1e-3  # max |π_θ − π*| and max |V_φ − V*| after the default 1000 steps


@pytest.fixture(scope="module")
def offline():
    """μ = π_ref samples that visit every (state, action) pair."""
    mdp = TreeMDP.random(**TRAIN_MDP)
    batch = to_batch(mdp, sample_trajectories(mdp, mdp.ref_logp.exp(), 2048, seed=0))
    assert batch.coverage(mdp).all()
    return mdp, batch


@pytest.mark.parametrize("lam", [0.0, 1.0])
@pytest.mark.parametrize("is_mode", ["none", "prefix"])
def test_tabular_dqo_reaches_soft_optimum(offline, lam, is_mode):
    mdp, batch = offline
    sol = solve(mdp, BETA)
    res = train_tabular_dqo(mdp, BETA, batch, lam=lam, is_mode=is_mode)
    pi_err = (res.pi - sol.pi).abs().max().item()
    v_err = (res.v - sol.v).abs().max().item()
    assert pi_err < TOL and v_err < TOL
    assert res.history["pi_err"][-1] == pytest.approx(pi_err)
    assert res.history["pi_err"][0] > 100 * TOL  # it started far away


def test_tabular_dqo_with_wrong_beta_misses_optimum(offline):
    """Negative control: a loss with 2β converges, but to π*_{2β}, measurably far from π*_β."""
    mdp, batch = offline
    res = train_tabular_dqo(mdp, 2 * BETA, batch, lam=1.0, is_mode="prefix")
    assert (res.pi - solve(mdp, 2 * BETA).pi).abs().max() < TOL
    assert (res.pi - solve(mdp, BETA).pi).abs().max() > 0.05


def test_tabular_dqo_requires_coverage():
    mdp = TreeMDP.random(**TRAIN_MDP)
    batch = to_batch(mdp, sample_trajectories(mdp, mdp.ref_logp.exp(), 5, seed=0))
    with pytest.raises(ValueError, match="every \\(state, action\\) pair"):
        train_tabular_dqo(mdp, BETA, batch)


def test_cli_tabular_demo_writes_plot(tmp_path, capsys):
    assert main(["tabular-demo", "--out", str(tmp_path), "--steps", "60", "--lam", "0.5"]) == 0
    png = tmp_path / "tabular-dqo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "max|pi-pi*|" in out and str(png) in out
