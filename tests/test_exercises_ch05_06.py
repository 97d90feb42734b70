"""Notebooks 05 (λ-returns) and 06 (importance sampling): the checkers fail the plausible wrong
answers named here, their references agree with independent computations, and the numbers the
notebooks' text relies on (the exact bias/variance curve, the worked 3-token example, the paired
standard error, the log π_ref-for-log μ mistake) hold."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import nbformat
import pytest
import torch

from dqo_tutorial import course, exercises, kernels, naive, tabular
from dqo_tutorial.exercises import ch05, ch06

matplotlib.use("Agg")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _cell(notebook: str, marker: str) -> str:
    """The source of the one code cell of ``notebook`` that contains ``marker``."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    found = [c.source for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(found) == 1, (notebook, marker, len(found))
    return found[0]


def _run_cells(notebook: str, *markers: str) -> dict:
    import matplotlib.pyplot as plt

    from dqo_tutorial import evaluate  # the notebooks import it in their set-up cell

    ns = {"torch": torch, "math": math, "course": course, "exercises": exercises, "Path": Path}
    ns["evaluate"] = evaluate
    for marker in markers:
        exec(compile(_cell(notebook, marker), f"<{notebook}: {marker}>", "exec"), ns)
    plt.close("all")
    return ns


def _fails(verdict: exercises.Verdict, *words: str) -> None:
    assert verdict.status == "fail", verdict.message
    for w in words:
        assert w in verdict.message, verdict.message


# --------------------------------------------------------------------------------------------
# 05: n-step returns
# --------------------------------------------------------------------------------------------


def _random_batch(seed: int, b: int = 5, t: int = 9):
    gen = torch.Generator().manual_seed(seed)
    mask = exercises.random_mask(gen, b, t)
    rewards = torch.randn(b, t, generator=gen, dtype=torch.float64)
    values = torch.randn(b, t, generator=gen, dtype=torch.float64)
    bootstrap = torch.where(
        torch.rand(b, generator=gen) < 0.5, torch.randn(b, generator=gen).double(), 0.0
    )
    return rewards, values, mask, bootstrap


@pytest.mark.parametrize("seed", range(4))
def test_n_step_reference_meets_the_lambda_return_at_both_ends(seed):
    rewards, values, mask, bootstrap = _random_batch(seed)
    one = ch05.n_step_return_loop(rewards, values, mask, 1, bootstrap)
    full = ch05.n_step_return_loop(rewards, values, mask, mask.shape[1], bootstrap)
    course.check_close(
        "n = 1 is λ = 0", one, naive.lambda_return(rewards, values, mask, 0.0, bootstrap)
    )
    course.check_close(
        "n ≥ H is λ = 1", full, naive.lambda_return(rewards, values, mask, 1.0, bootstrap)
    )


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8, 1.0])
def test_the_lambda_return_is_the_mixture_of_n_step_returns(lam):
    """G_1 = Σ_{k<L} (1 − λ) λ^{k−1} G^{(k)}_1 + λ^{L−1} G^{(L)}_1 (notebook 05's diagram)."""
    rewards, values, mask, bootstrap = _random_batch(11, b=6, t=10)
    g = naive.lambda_return(rewards, values, mask, lam, bootstrap)
    n_steps = {
        k: ch05.n_step_return_loop(rewards, values, mask, k, bootstrap) for k in range(1, 11)
    }
    for i in range(mask.shape[0]):
        cols = mask[i].nonzero().flatten().tolist()
        first, length = cols[0], len(cols)
        mix = sum(
            (1 - lam) * lam ** (k - 1) * float(n_steps[k][i, first]) for k in range(1, length)
        )
        mix += lam ** (length - 1) * float(n_steps[length][i, first])
        assert math.isclose(mix, float(g[i, first]), abs_tol=1e-9)


def _n_step_terminal_only(rewards, values, mask, n, bootstrap=None):
    """Plausible wrong answer: forgets the bootstrap, b = 0 on cut rows."""
    return ch05.n_step_return_loop(rewards, values, mask, n, None)


def _n_step_reads_past_the_end(rewards, values, mask, n, bootstrap=None):
    """Plausible wrong answer: takes V from column j + n even when the response ended before."""
    B, T = mask.shape
    r = torch.where(mask, rewards, 0.0).double()
    total = sum(
        torch.cat([r[:, k:], torch.zeros(B, k, dtype=r.dtype)], 1)[:, :T] for k in range(min(n, T))
    )
    v_n = torch.cat([values[:, n:], torch.zeros(B, min(n, T), dtype=values.dtype)], 1)[
        :, :T
    ].double()
    return torch.where(mask, total + v_n, 0.0)


def _n_step_row_loop(rewards, values, mask, n, bootstrap=None):
    """Right numbers, one Python loop per row."""
    return ch05.n_step_return_loop(rewards, values, mask, n, bootstrap)


def _n_step_via_kernel(rewards, values, mask, n, bootstrap=None):
    lam = 0.0 if n == 1 else 1.0
    return kernels.lambda_return(rewards, values, mask, lam, bootstrap)


def test_n_step_checker_fails_the_plausible_wrong_answers():
    _fails(exercises.check_n_step_return(_n_step_terminal_only, quiet=True), "differs")
    _fails(exercises.check_n_step_return(_n_step_reads_past_the_end, quiet=True), "differs")
    _fails(exercises.check_n_step_return(_n_step_row_loop, quiet=True), "loops over the rows")
    _fails(exercises.check_n_step_return(_n_step_via_kernel, quiet=True), "lambda_return")


# --------------------------------------------------------------------------------------------
# 05: per-token traces
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.45, 1.0])
def test_traces_reference_with_a_constant_lambda_is_the_lambda_return(lam):
    rewards, values, mask, bootstrap = _random_batch(5)
    lams = torch.full(mask.shape, lam, dtype=torch.float64)
    course.check_close(
        "constant traces",
        ch05.lambda_return_traces_loop(rewards, values, mask, lams, bootstrap),
        kernels.lambda_return(rewards, values, mask, lam, bootstrap),
    )


def _traces_off_by_one(rewards, values, mask, lams, bootstrap=None):
    """Plausible wrong answer: uses the trace of the current action h instead of h + 1."""
    shifted = torch.cat(
        [torch.zeros_like(lams[:, :1]), lams[:, :-1]], 1
    )  # lams[:, j−1] at column j
    return ch05.lambda_return_traces_loop(rewards, values, mask, shifted, bootstrap)


def _traces_copied_loop(rewards, values, mask, lams, bootstrap=None):
    """The notebook's lambda_return_loop with `lam` replaced by `lams[i, j]`: right, per row."""
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for i in range(rewards.shape[0]):
        target = 0.0 if bootstrap is None else float(bootstrap[i])
        for j in reversed(mask[i].nonzero().flatten().tolist()):
            g = float(rewards[i, j]) + target
            out[i, j] = g
            target = (1 - float(lams[i, j])) * float(values[i, j]) + float(lams[i, j]) * g
    return out


def _traces_mean_lambda(rewards, values, mask, lams, bootstrap=None):
    """Plausible wrong answer: one λ for the batch (the mean trace)."""
    lam = float(torch.where(mask, lams, 0.0).sum() / mask.sum().clamp(min=1))
    return kernels.lambda_return(rewards, values, mask, min(max(lam, 0.0), 1.0), bootstrap)


def test_traces_checker_fails_the_plausible_wrong_answers():
    _fails(exercises.check_lambda_return_traces(_traces_off_by_one, quiet=True), "differs")
    _fails(
        exercises.check_lambda_return_traces(_traces_copied_loop, quiet=True), "loops over the rows"
    )
    _fails(exercises.check_lambda_return_traces(_traces_mean_lambda, quiet=True), "lambda_return")


# --------------------------------------------------------------------------------------------
# 05: the exact bias / variance / MSE curve
# --------------------------------------------------------------------------------------------


def _trajectory_moments(mdp, pi, beta, critic, v_true, lam):
    """E[G_1] − V^π(root) and Var G_1 by a per-trajectory recursion in Python floats (no kernel):
    every complete trajectory, its probability Π π(a|s), G by the backward recursion."""
    mean = second = 0.0
    for traj in tabular.enumerate_trajectories(mdp):
        states = [mdp.index[traj[:h]] for h in range(len(traj))]
        p = math.prod(float(pi[s, a]) for s, a in zip(states, traj))
        shaped = [
            float(mdp.reward[s, a]) - beta * (math.log(float(pi[s, a])) - float(mdp.ref_logp[s, a]))
            for s, a in zip(states, traj)
        ]
        g = shaped[-1]  # every trajectory of the tree ends: b = 0
        for h in range(len(traj) - 2, -1, -1):
            g = shaped[h] + (1 - lam) * float(critic[states[h + 1]]) + lam * g
        mean += p * g
        second += p * g * g
    return mean - float(v_true[0]), second - mean * mean


@pytest.fixture(scope="module")
def nb05():
    return _run_cells(
        "05_lambda_returns.ipynb", "mdp = tabular.TreeMDP.random(", "def exact_moments"
    )


def test_05_mse_is_lowest_strictly_inside_zero_one(nb05):
    mse, lams = nb05["mse"], nb05["lams"]
    best = min(range(len(lams)), key=mse.__getitem__)
    assert 0 < lams[best] < 1
    assert mse[best] < min(mse[0], mse[-1]) - 1e-3
    assert abs(nb05["bias"][-1]) < 1e-12  # λ = 1 never reads the critic


@pytest.mark.parametrize("lam", [0.0, 0.35, 0.8, 1.0])
def test_05_exact_moments_match_a_per_trajectory_loop(nb05, lam):
    ns = nb05
    bias, var = ns["exact_moments"](ns["v_critic"], lam)
    ref_bias, ref_var = _trajectory_moments(
        ns["mdp"], ns["pi"], ns["beta"], ns["v_critic"], ns["v_true"], lam
    )
    assert math.isclose(bias, ref_bias, abs_tol=1e-6) and math.isclose(var, ref_var, abs_tol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95])
def test_05_constant_critic_error_gives_eps_times_one_minus_lambda_power(nb05, lam):
    ns, eps = nb05, 0.2
    critic = ns["v_true"] + eps
    bias, _ = _trajectory_moments(ns["mdp"], ns["pi"], ns["beta"], critic, ns["v_true"], lam)
    expected = 0.0
    for traj in tabular.enumerate_trajectories(ns["mdp"]):
        p = math.prod(float(ns["pi"][ns["mdp"].index[traj[:h]], a]) for h, a in enumerate(traj))
        expected += p * eps * (1 - lam ** (len(traj) - 1))
    assert math.isclose(bias, expected, abs_tol=1e-9)


def test_05_cut_rows_need_the_bootstrap():
    ns = _run_cells(
        "05_lambda_returns.ipynb",
        "mdp = tabular.TreeMDP.random(",
        "def exact_moments",
        "cut = tabular.to_batch",
    )
    v0 = float(ns["v_true"][0])
    assert math.isclose(float((ns["prob_cut"] * ns["right"]).sum()), v0, abs_tol=1e-9)
    assert float((ns["prob_cut"] * ns["wrong"][:, 1]).sum()) < v0 - 0.05


# --------------------------------------------------------------------------------------------
# 06: nucleus log-probabilities
# --------------------------------------------------------------------------------------------


def test_nucleus_reference_matches_the_samplers_top_p_warper():
    from transformers import TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        k = int(torch.randint(2, 40, (), generator=gen))
        logits = 3 * torch.randn(6, k, generator=gen, dtype=torch.float64)
        actions = torch.randint(0, k, (6,), generator=gen)
        tau = float(torch.empty(()).uniform_(0.3, 2.0, generator=gen))
        top_p = float(torch.empty(()).uniform_(0.2, 0.95, generator=gen))
        warped = TopPLogitsWarper(top_p)(None, logits / tau)
        hf = torch.log_softmax(warped, -1).gather(1, actions[:, None]).squeeze(1)
        course.check_close(
            "loop vs TopPLogitsWarper", ch06.nucleus_logprobs_loop(logits, actions, tau, top_p), hf
        )


def _tempered_only(logits, actions, tau, top_p):
    """Plausible wrong answer: the temperature without the nucleus (notebook 06's cell)."""
    return torch.log_softmax(logits / tau, -1).gather(-1, actions[:, None]).squeeze(-1)


def _nucleus_drops_the_crossing_token(logits, actions, tau, top_p):
    """Plausible wrong answer: keeps tokens whose cumulative mass *including* themselves is ≤ p."""
    z = logits / tau
    if top_p < 1:
        p_sorted, order = torch.softmax(z, -1).sort(-1, descending=True)
        keep_sorted = p_sorted.cumsum(-1) <= top_p
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        z = torch.where(keep, z, -math.inf)
    return torch.log_softmax(z, -1).gather(-1, actions[:, None]).squeeze(-1)


def _nucleus_naive_exp(logits, actions, tau, top_p):
    """Plausible wrong answer: exponentiates z/τ directly (overflows for logits in the hundreds)."""
    e = torch.exp(logits / tau)
    p = e / e.sum(-1, keepdim=True)
    if top_p < 1:
        p_sorted, order = p.sort(-1, descending=True)
        keep = torch.zeros_like(p, dtype=torch.bool).scatter(
            -1, order, (p_sorted.cumsum(-1) - p_sorted) < top_p
        )
        p = torch.where(keep, p, 0.0)
        p = p / p.sum(-1, keepdim=True)
    return p.gather(-1, actions[:, None]).squeeze(-1).log()


def _nucleus_via_warper(logits, actions, tau, top_p):
    from transformers import TopPLogitsWarper

    z = logits / tau if top_p >= 1 else TopPLogitsWarper(top_p)(None, logits / tau)
    return torch.log_softmax(z, -1).gather(-1, actions[:, None]).squeeze(-1)


def test_nucleus_checker_fails_the_plausible_wrong_answers():
    _fails(exercises.check_nucleus_logprobs(_tempered_only, quiet=True), "differs")
    _fails(
        exercises.check_nucleus_logprobs(_nucleus_drops_the_crossing_token, quiet=True), "differs"
    )
    _fails(exercises.check_nucleus_logprobs(_nucleus_naive_exp, quiet=True), "differs")
    _fails(exercises.check_nucleus_logprobs(_nucleus_via_warper, quiet=True), "TopPLogitsWarper")


# --------------------------------------------------------------------------------------------
# 06: self-normalised weights and the ESS
# --------------------------------------------------------------------------------------------


def _prefix_log_u(pol, beh, mask, clip):
    delta = torch.where(mask, pol - beh, 0.0).double()
    return (delta.cumsum(1) - delta).clamp(max=math.log(clip))


def _normalized_exp_first(pol, beh, mask, clip):
    """Plausible wrong answer: exponentiates, then divides by the mean (inf/inf = NaN)."""
    u = torch.where(mask, _prefix_log_u(pol, beh, mask, clip).exp(), 0.0)
    return u / (u.sum() / mask.sum().clamp(min=1))


def _normalized_per_row(pol, beh, mask, clip):
    """Plausible wrong answer: normalises each row by its own mean."""
    log_u = torch.where(mask, _prefix_log_u(pol, beh, mask, clip), -math.inf)
    n = mask.sum(1, keepdim=True).clamp(min=1)
    out = (log_u - (torch.logsumexp(log_u, 1, keepdim=True) - n.log())).exp()
    return torch.where(mask, out.nan_to_num(0.0), 0.0)


def _normalized_over_every_entry(pol, beh, mask, clip):
    """Plausible wrong answer: the mean over all B·T entries, padding included."""
    log_u = torch.where(mask, _prefix_log_u(pol, beh, mask, clip), -math.inf)
    log_mean = torch.logsumexp(log_u.flatten(), 0) - math.log(mask.numel())
    return torch.where(mask, (log_u - log_mean).exp(), 0.0)


def _normalized_unclamped_count(pol, beh, mask, clip):
    """Plausible wrong answer: divides by mask.sum() without the ≥ 1 clamp (NaN when empty)."""
    log_u = torch.where(mask, _prefix_log_u(pol, beh, mask, clip), -math.inf)
    log_mean = torch.logsumexp(log_u.flatten(), 0) - torch.log(mask.sum().double())
    return torch.where(mask, (log_u - log_mean).exp(), 0.0) if mask.any() else log_mean + 0 * pol


def _normalized_then_clipped(pol, beh, mask, clip):
    """Plausible wrong answer: normalises first and clips the normalised weights."""
    delta = torch.where(mask, pol - beh, 0.0).double()
    log_s = torch.where(mask, delta.cumsum(1) - delta, -math.inf)
    log_mean = torch.logsumexp(log_s.flatten(), 0) - math.log(max(int(mask.sum()), 1))
    return torch.where(mask, (log_s - log_mean).clamp(max=math.log(clip)).exp(), 0.0)


def _normalized_via_kernel(pol, beh, mask, clip):
    return kernels.importance_weights(pol, beh, mask, mode="prefix", clip=clip, normalize=True)


def test_normalized_weights_checker_fails_the_plausible_wrong_answers():
    check = exercises.check_normalized_prefix_weights
    for wrong in (
        _normalized_exp_first,
        _normalized_per_row,
        _normalized_over_every_entry,
        _normalized_unclamped_count,
        _normalized_then_clipped,
    ):
        _fails(check(wrong, quiet=True), "differs")
    _fails(check(_normalized_via_kernel, quiet=True), "importance_weights")


def test_normalized_weights_average_to_one_over_the_action_tokens():
    rewards, values, mask, _ = _random_batch(3)
    w = kernels.importance_weights(
        rewards, values, mask, mode="prefix", clip=math.inf, normalize=True
    )
    assert math.isclose(float(w[mask].mean()), 1.0, rel_tol=1e-9)


def _ess_naive(log_w, mask):
    """Plausible wrong answer: notebook 06's ess() on exp(log w) (inf/inf = NaN)."""
    w = torch.where(mask, log_w.exp(), 0.0)
    return (w.sum(1) ** 2 / (w**2).sum(1)).nan_to_num(0.0, posinf=0.0)


def _ess_empty_row_nan(log_w, mask):
    """Plausible wrong answer: the log-space formula without handling empty rows."""
    x = torch.where(mask, log_w, -math.inf)
    return torch.exp(2 * torch.logsumexp(x, 1) - torch.logsumexp(2 * x, 1))


def _ess_ignores_the_mask(log_w, mask):
    """Plausible wrong answer: every column of the row counts."""
    return torch.exp(2 * torch.logsumexp(log_w, 1) - torch.logsumexp(2 * log_w, 1)).nan_to_num(0.0)


def test_ess_checker_fails_the_plausible_wrong_answers():
    for wrong in (_ess_naive, _ess_empty_row_nan, _ess_ignores_the_mask):
        _fails(exercises.check_effective_sample_size(wrong, quiet=True), "differs")


def test_ess_reference_is_scale_free_and_matches_the_definition():
    gen = torch.Generator().manual_seed(0)
    log_w = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = exercises.random_mask(gen, 4, 7)
    got = ch06.ess_loop(log_w, mask)
    for i in range(4):
        w = log_w[i][mask[i]].exp()
        assert math.isclose(float(got[i]), float(w.sum() ** 2 / (w**2).sum()), rel_tol=1e-12)
    course.check_close("scale-free", ch06.ess_loop(log_w + 500.0, mask), got)


# --------------------------------------------------------------------------------------------
# 06: the numbers of the text
# --------------------------------------------------------------------------------------------


def test_06_worked_example_against_hand_arithmetic():
    ns = {"torch": torch, "math": math, "course": course, "kernels": kernels}
    exec(
        compile(
            _cell("06_importance_sampling.ipynb", "beta_x, lam_x, clip_x"), "<06 example>", "exec"
        ),
        ns,
    )
    # by hand: ρ = (0.2, −0.2, 0), r̃ = (−0.1, 0.1, 1), G_3 = 1,
    # G_2 = 0.1 + 0.5·0.8 + 0.5·1 = 1, G_1 = −0.1 + 0.5·0.5 + 0.5·1 = 0.65
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(ns["g_x"], [0.65, 1.0, 1.0]))
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(ns["delta_x"], [0.2, -0.4, -0.2]))
    assert all(
        math.isclose(a, b, abs_tol=1e-12) for a, b in zip(ns["w_x"], [1.0, math.exp(-0.1), 1.1])
    )
    assert ns["w_seq_x"] == 1.1  # e^0.2 > c: clipped


def test_06_paired_stderr_against_an_independent_computation():
    import statistics

    ns = _run_cells("06_importance_sampling.ipynb", "def paired_stderr")
    paired = ns["paired_stderr"]
    gen = torch.Generator().manual_seed(0)
    for n in (5, 40, 300):
        a = (torch.rand(n, generator=gen) < 0.6).double().tolist()
        # the second model agrees with the first on most problems: positive correlation
        b = [x if float(torch.rand((), generator=gen)) < 0.8 else 1 - x for x in a]
        d = [x - y for x, y in zip(a, b)]
        assert math.isclose(paired(a, b), statistics.pstdev(d) / math.sqrt(n), rel_tol=1e-12)
        pa, pb = sum(a) / n, sum(b) / n
        cov = sum((x - pa) * (y - pb) for x, y in zip(a, b)) / n
        se2 = pa * (1 - pa) / n + pb * (1 - pb) / n - 2 * cov / n
        assert math.isclose(paired(a, b), math.sqrt(max(se2, 0.0)), rel_tol=1e-9, abs_tol=1e-15)
        if cov > 0:
            assert paired(a, b) < math.hypot(
                math.sqrt(pa * (1 - pa) / n), math.sqrt(pb * (1 - pb) / n)
            )


def test_06_weights_with_log_ref_in_place_of_log_mu_are_biased():
    ns = _run_cells("06_importance_sampling.ipynb", "mdp6 = tabular.TreeMDP.random(")
    everything, outcome = ns["everything6"], ns["outcome6"]
    ref_logp, log_mu, prob_mu = ns["mdp6"].ref_logp, ns["log_mu6"], ns["prob_mu6"]
    course.check_close(
        "μ = softmax(z/τ) sums to 1", log_mu.exp().sum(-1), torch.ones(ref_logp.shape[0])
    )
    truth = float((everything.gather(ref_logp).sum(1).exp() * outcome).sum())  # π_θ = π_ref
    wrong = float((prob_mu * outcome).sum())  # weights log π_θ − log π_ref = 0: w = 1
    assert abs(wrong - truth) > 0.05
