"""The checkers name the slips the exercises' texts list: a function that implements a slip
(written here or in the chapters' test files, independently of the checkers' own slip
functions) gets that slip's message; a raising function is shown at its own line; a failing
verdict keeps the input that reproduces it."""

from __future__ import annotations

import math

import pytest
import test_exercises_ch03_04 as t34
import test_exercises_ch05_06 as t56
import test_exercises_ch07_08 as t78
import test_exercises_ch09_10 as t910
import torch

from dqo_tutorial import exercises

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# slips written here (the chapters' test files hold the others)
# --------------------------------------------------------------------------------------------


def _reward_in_row_column(mask, outcome, column):
    out = torch.zeros(mask.shape, dtype=outcome.dtype)
    for b in range(mask.shape[0]):
        out[b, column(mask[b].tolist())] = outcome[b]
    return out


def _backward(mdp, value):
    """V by a per-state loop, ``value(s, [q(s, a) for a])`` giving V(s)."""
    v = [0.0] * mdp.n_states
    for s in reversed(range(mdp.n_states)):
        nxt = mdp.next_state[s].tolist()
        q = [float(mdp.reward[s, a]) + (v[n] if n >= 0 else 0.0) for a, n in enumerate(nxt)]
        v[s] = value(s, q)
    return torch.tensor(v, dtype=F64)


def _exp_first(mdp, beta):
    def value(s, q):
        terms = torch.tensor(q, dtype=F64) / beta
        return float(beta * (mdp.ref_logp[s].exp() * terms.exp()).sum().log())

    return _backward(mdp, value)


def _soft_value(kl: float, weights: str):
    def policy_value(mdp, pi, beta):
        def value(s, q):
            w = pi[s] if weights == "pi" else mdp.ref_logp[s].exp()
            log_ratio = pi[s].log() - mdp.ref_logp[s]
            return sum(float(w[a] * (x - kl * beta * log_ratio[a])) for a, x in enumerate(q))

        return _backward(mdp, value)

    return policy_value


def _pass_plugin(correct, k):
    n = correct.shape[1]
    return torch.tensor([1 - (1 - c / n) ** k for c in correct.sum(1).tolist()], dtype=F64)


def _blamed(how):
    def blamed_token(advantage, mask):
        out = []
        for row, m in zip(advantage.tolist(), mask.tolist()):
            cols = [j for j, keep in enumerate(m) if keep]
            if not cols:
                out.append(0 if how == "empty row gives 0" else -1)
                continue
            scores = [row[j] if m[j] else 0.0 for j in range(len(m))]
            if how == "zero fill":
                col = scores.index(min(scores))
            else:
                col = min(cols, key=lambda j: (row[j], j))
            out.append(col if how == "column index" else col - cols[0])
        return torch.tensor(out)

    return blamed_token


def _advantage(how):
    """A per-row loop of 10.2 with one slip."""

    def advantage_extremes(pol, ref, values, rewards, mask, beta, lam, bootstrap=None):
        out = torch.zeros(values.shape, dtype=F64)
        for b in range(values.shape[0]):
            cols = [t for t in range(values.shape[1]) if mask[b, t]]
            end = 0.0 if bootstrap is None or how == "no bootstrap" else float(bootstrap[b])
            for j, t in enumerate(cols):
                rest = cols[j + 1 :]
                if lam == 0 and how == "last column":  # b in the tensor's last column
                    width = values.shape[1]
                    nxt = float(values[b, t + 1]) if t + 1 < width and mask[b, t + 1] else 0.0
                    target = end if t == width - 1 else nxt
                elif lam == 0:
                    target = float(values[b, rest[0]]) if rest else end
                else:
                    rest = cols[j:] if how == "from h" else rest
                    shaped = [float(rewards[b, u] - beta * (pol[b, u] - ref[b, u])) for u in rest]
                    target = sum(shaped) + end - (float(rewards[b, t]) if how == "from h" else 0)
                out[b, t] = float(rewards[b, t]) + target - float(values[b, t])
        return out

    return advantage_extremes


C = exercises
SLIPS = [
    # (checker, a function implementing the slip, words of the slip's message)
    (C.check_sequence_logprob, lambda x, m: (x * m).sum(1), "masking by multiplication"),
    (C.check_sequence_logprob, lambda x, m: x.sum(1), "a sum over every column"),
    (
        C.check_outcome_rewards,
        lambda m, r: _reward_in_row_column(m, r, lambda row: len(row) - 1),
        "tensor's last column",
    ),
    (
        C.check_outcome_rewards,
        lambda m, r: _reward_in_row_column(m, r, lambda row: sum(row) - 1),
        "mask.sum(1) − 1",
    ),
    (
        C.check_outcome_rewards,
        lambda m, r: _reward_in_row_column(
            m, r, lambda row: max([j for j, x in enumerate(row) if x], default=0)
        ),
        "empty row",
    ),
    (C.check_backward_induction, _exp_first, "overflows"),
    (C.check_policy_value, _soft_value(0.0, "pi"), "KL term is left out"),
    (C.check_policy_value, _soft_value(-1.0, "pi"), "sign is flipped"),
    (C.check_policy_value, _soft_value(1.0, "ref"), "π_ref's probabilities weigh"),
    (C.check_policy_from_q, t34._pi_without_ref, "π_ref is forgotten"),
    (C.check_policy_from_q, t34._log_of_softmax, "softmax(…).log()"),
    (C.check_policy_from_q, t34._v_by_exp, "V by exp then log"),
    (C.check_policy_from_q, t34._v_hard_max, "hard max"),
    (C.check_policy_from_q, t34._wrong_axis, "the *last* axis"),
    (C.check_dro_loss_from_tokens, t34._per_token_squares, "squared per token"),
    (C.check_dro_loss_from_tokens, t34._token_mean, "mean over tokens"),
    (C.check_dro_loss_from_tokens, t34._mask_by_product, "masking by multiplication"),
    (C.check_dro_loss_from_tokens, t34._every_column, "every column"),
    (C.check_one_step_residual, t34._terminal_always, "b is ignored"),
    (C.check_one_step_residual, t34._bootstrap_in_last_column, "tensor's last column"),
    (C.check_one_step_residual, t34._bootstrap_everywhere, "every column"),
    (C.check_one_step_residual, t34._mask_by_multiplication, "masking by multiplication"),
    (C.check_policy_loss, t34._no_detach, "neither V nor T"),
    (C.check_policy_loss, t34._target_not_detached, "target T is not detached"),
    (C.check_policy_loss, t34._where_after_squaring, "only after squaring"),
    (C.check_policy_loss, t34._plain_mean, "plain mean"),
    (C.check_policy_loss, t34._mean_over_every_column, "every column"),
    (C.check_value_loss, t34._value_no_detach, "ρ is not detached"),
    (C.check_value_loss, t34._value_target_kept, "target T is not detached"),
    (C.check_value_loss, t34._value_unclamped, "not clamped"),
    (C.check_value_loss, t34._value_where_after, "only after squaring"),
    (C.check_n_step_return, t56._n_step_terminal_only, "b is forgotten"),
    (C.check_lambda_return_traces, t56._traces_off_by_one, "trace of action h"),
    (C.check_nucleus_logprobs, t56._tempered_only, "top_p is ignored"),
    (C.check_nucleus_logprobs, t56._nucleus_drops_the_crossing_token, "crosses top_p"),
    (C.check_effective_sample_size, t56._ess_empty_row_nan, "empty row"),
    (C.check_shaped_rewards, lambda *a: t78._shaped(*a, end="R"), "Φ(terminal) = R"),
    (C.check_shaped_rewards, lambda *a: t78._shaped(*a, end="zero"), "cut row shaped down"),
    (C.check_shaped_rewards, lambda *a: t78._shaped(*a, leak=True), "NaN outcome"),
    (C.check_shaped_rewards, lambda *a: t78._shaped(*a, junk=True), "column after"),
    (C.check_mc_step_values, lambda h, m: t78._mc(h, m, ddof=1), "(k − 1)"),
    (C.check_mc_step_values, lambda h, m: t78._mc(h, m, no_sqrt_k=True), "divide by √k"),
    (C.check_clustered_accuracy, lambda c: t78._clustered(c, naive=True), "independent"),
    (C.check_clustered_accuracy, lambda c: t78._clustered(c, ddof=1), "(N − 1)"),
    (C.check_paired_difference, lambda a, b: t78._paired(a, b, unpaired=True), "hypot"),
    (C.check_paired_difference, lambda a, b: t78._paired(a, b, ddof=1), "(N − 1)"),
    (C.check_paired_difference, lambda a, b: t78._paired(a, b, absolute=True), "its sign"),
    (C.check_flexible_answer, t910._flexible_variant(marker_index=0), "*first* ####"),
    (C.check_flexible_answer, t910._flexible_variant(fallback=False), "no fall-back"),
    (C.check_maj_at_k, t910._maj_variant("first of the ties"), "most_common(1)"),
    (C.check_maj_at_k, t910._maj_variant("counts None"), "without an answer voted"),
    (C.check_maj_at_k, t910._maj_variant("raw gold"), "raw string"),
    (C.check_pass_at_k, _pass_plugin, "plug-in"),
    (C.check_blamed_token, _blamed("column index"), "column index"),
    (C.check_blamed_token, _blamed("zero fill"), "filled with 0"),
    (C.check_blamed_token, _blamed("empty row gives 0"), "empty row"),
    (C.check_advantage_extremes, _advantage("from h"), "starts at l = h"),
    (C.check_advantage_extremes, _advantage("no bootstrap"), "b is forgotten"),
    (C.check_advantage_extremes, _advantage("last column"), "last *column*"),
]


@pytest.mark.parametrize(
    "checker, wrong, words", SLIPS, ids=[f"{c.__name__}-{w}" for c, _, w in SLIPS]
)
def test_a_named_slip_gets_its_message(checker, wrong, words):
    """Some slips show only on some inputs: the first of three seeds that fails is read."""
    verdicts = (checker(wrong, seed=seed, quiet=True) for seed in (0, 1, 9091))
    verdict = next((v for v in verdicts if not v.passed), None)
    assert verdict is not None and verdict.status == "fail", "the slip passed"
    assert verdict.slip is not None and words in verdict.slip, verdict.message
    assert verdict.slip in verdict.message


def test_every_checker_with_slips_in_its_text_has_a_slip_test():
    named = {c.__name__ for c, _, _ in SLIPS}
    listed = {
        "check_sequence_logprob", "check_outcome_rewards", "check_backward_induction",
        "check_policy_value", "check_policy_from_q", "check_dro_loss_from_tokens",
        "check_one_step_residual", "check_policy_loss", "check_value_loss",
        "check_shaped_rewards", "check_mc_step_values", "check_clustered_accuracy",
        "check_paired_difference", "check_maj_at_k", "check_pass_at_k", "check_blamed_token",
        "check_advantage_extremes",
    }  # fmt: skip
    assert listed <= named, sorted(listed - named)


def test_a_wrong_answer_that_is_no_named_slip_gets_no_slip():
    verdict = exercises.check_sequence_logprob(lambda x, m: torch.where(m, x, 0.0).sum(1) + 1)
    assert verdict.status == "fail" and verdict.slip is None and "→" not in verdict.message


# --------------------------------------------------------------------------------------------
# a raising function: its own line; a failure: its input
# --------------------------------------------------------------------------------------------


def _raises_on_its_own_line(token_logps, mask):
    picked = torch.where(mask, token_logps, 0.0)
    return picked @ mask  # a (B, T) float times a (B, T) bool: RuntimeError


def test_a_raising_function_is_shown_at_its_line():
    verdict = exercises.check_sequence_logprob(_raises_on_its_own_line, quiet=True)
    code = _raises_on_its_own_line.__code__
    line = code.co_firstlineno + 2
    assert verdict.status == "error" and "raised RuntimeError" in verdict.message
    assert f"{code.co_filename}, line {line}: return picked @ mask" in verdict.message
    assert "_core.py" not in verdict.message and "torch" not in verdict.message.split("in ")[-1]


def test_the_failing_input_reproduces_the_failure():
    def sum_everything(token_logps, mask):
        return token_logps.sum(1)

    verdict = exercises.check_sequence_logprob(sum_everything, quiet=True)
    assert verdict.status == "fail" and verdict.inputs is not None
    args, kwargs = verdict.inputs
    token_logps, mask = args
    by_hand = torch.tensor(
        [
            sum(x for x, m in zip(row, keep) if m)
            for row, keep in zip(token_logps.tolist(), mask.tolist())
        ],
        dtype=F64,
    )
    assert torch.equal(sum_everything(*args, **kwargs), verdict.got)
    assert torch.allclose(verdict.expected, by_hand, atol=1e-12)
    assert not torch.allclose(verdict.got, verdict.expected)
    where = verdict.message.split("on input ")[1].split(" ")[0]
    assert int(where) >= 0


def test_a_raising_function_keeps_its_input():
    seen = []

    def fails_on_empty_rows(token_logps, mask):
        seen.append(mask.clone())
        if not mask.any(1).all():
            raise ValueError("an empty row")
        return torch.where(mask, token_logps, 0.0).sum(1)

    verdict = exercises.check_sequence_logprob(fails_on_empty_rows, quiet=True)
    assert verdict.status == "error" and verdict.inputs is not None
    assert torch.equal(verdict.inputs[0][1], seen[-1])
    assert verdict.expected is not None and math.isfinite(float(verdict.expected.sum()))


def test_a_notebook_cell_that_raises_is_shown_with_its_source():
    """In a notebook the student's function lives in a cell: its line is read back from it."""
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    shell = interactiveshell.InteractiveShell.instance()
    shell.run_cell("import torch\nfrom dqo_tutorial import exercises")
    shell.run_cell(
        "def sequence_logprob(token_logps, mask):\n"
        "    picked = torch.where(mask, token_logps, 0.0)\n"
        "    return picked.sum(1) @ mask  # the slip of this cell\n"
    )
    shell.run_cell("verdict = exercises.check_sequence_logprob(sequence_logprob, quiet=True)")
    message = shell.user_ns["verdict"].message
    assert "line 3: return picked.sum(1) @ mask  # the slip of this cell" in message, message
