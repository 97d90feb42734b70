"""The checkers of notebooks 03 and 04: each passes a correct solution (written here, apart from
the notebooks), fails the plausible wrong answers its docstring names, and its reference agrees
with an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

import dqo_tutorial as dqo
from dqo_tutorial import exercises, kernels
from dqo_tutorial.exercises import ch03, ch04

# --------------------------------------------------------------------------------------------
# correct solutions, written independently of the notebooks' solution cells
# --------------------------------------------------------------------------------------------


def policy_from_q(q, ref_logp, beta):
    log_pi = torch.log_softmax(ref_logp + q / beta, dim=-1)
    # V = β log Σ π_ref e^{Q/β} = Q − β(log π − log π_ref) at any action π_ref allows
    return log_pi, beta * torch.logsumexp(ref_logp + q / beta, dim=-1)


def dro_loss_from_tokens(policy_logps, ref_logps, values, rewards, mask, beta):
    total = torch.zeros(mask.shape[0], dtype=torch.float64)
    for b in range(mask.shape[0]):
        for j in mask[b].nonzero().flatten().tolist():
            total[b] += policy_logps[b, j] - ref_logps[b, j]
    return (0.5 * (values + beta * total - rewards) ** 2).mean()


def one_step_residual(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten().tolist()
        for k, j in enumerate(cols):
            last = k == len(cols) - 1
            v_next = (0.0 if bootstrap is None else bootstrap[b]) if last else values[b, j + 1]
            rho = policy_logps[b, j] - ref_logps[b, j]
            out[b, j] = values[b, j] + beta * rho - rewards[b, j] - v_next
    return out


def _loss(values, log_ratio, rewards, target, mask, beta, *, detach):
    zero = torch.zeros((), dtype=values.dtype)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    if detach == "policy":
        v = v.detach()
    else:
        rho = rho.detach()
    delta = v + beta * rho - r - t.detach()
    return (0.5 * delta**2).sum() / max(int(mask.sum()), 1)


def policy_loss(log_ratio, values, rewards, target, mask, beta):
    return _loss(values, log_ratio, rewards, target, mask, beta, detach="policy")


def value_loss(values, log_ratio, rewards, target, mask, beta):
    return _loss(values, log_ratio, rewards, target, mask, beta, detach="value")


CORRECT = [
    (exercises.check_policy_from_q, policy_from_q),
    (exercises.check_dro_loss_from_tokens, dro_loss_from_tokens),
    (exercises.check_one_step_residual, one_step_residual),
    (exercises.check_policy_loss, policy_loss),
    (exercises.check_value_loss, value_loss),
]


@pytest.mark.parametrize("checker,solution", CORRECT, ids=lambda x: x.__name__)
@pytest.mark.parametrize("seed", [0, 11])
def test_a_correct_solution_passes(checker, solution, seed):
    assert checker(solution, seed=seed, quiet=True).passed


def test_the_chapters_export_their_checkers():
    assert set(ch03.__all__) == {"check_policy_from_q", "check_dro_loss_from_tokens"}
    assert set(ch04.__all__) == {"check_one_step_residual", "check_policy_loss", "check_value_loss"}
    for name in ch03.__all__ + ch04.__all__:
        assert getattr(exercises, name) is getattr(ch03 if name in ch03.__all__ else ch04, name)


# --------------------------------------------------------------------------------------------
# 3.1 policy_from_q
# --------------------------------------------------------------------------------------------


def test_policy_from_q_reference_agrees_with_log_softmax():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(4, 3, 5, generator=gen, dtype=torch.float64), -1)
    ref[0, 0, 1] = -math.inf
    ref = torch.log_softmax(ref, -1)
    packed = ch03._policy_from_q_reference(q, ref, 0.3)
    log_pi, v = policy_from_q(q, ref, 0.3)
    assert exercises.mismatch(packed[..., :-1], log_pi) is None
    assert exercises.mismatch(packed[..., -1], v) is None
    # the round trip of notebook 03: β(log π − log π_ref) + V gives Q back wherever π_ref > 0
    back = 0.3 * (log_pi - ref) + v[..., None]
    assert exercises.mismatch(torch.where(ref.isfinite(), back, q), q, 1e-9, 1e-9) is None


def _pi_without_ref(q, ref_logp, beta):
    return torch.log_softmax(q / beta, -1), beta * torch.logsumexp(q / beta, -1)


def _log_of_softmax(q, ref_logp, beta):
    z = ref_logp + q / beta
    return torch.softmax(z, -1).log(), beta * torch.logsumexp(z, -1)


def _v_by_exp(q, ref_logp, beta):
    v = beta * torch.log((ref_logp.exp() * torch.exp(q / beta)).sum(-1))
    return ref_logp + (q - v[..., None]) / beta, v


def _v_hard_max(q, ref_logp, beta):
    z = ref_logp + q / beta
    return torch.log_softmax(z, -1), beta * z.max(-1).values


def _wrong_axis(q, ref_logp, beta):
    z = ref_logp + q / beta
    return torch.log_softmax(z, 1), beta * torch.logsumexp(z, 1)


def _v_only_as_tensor(q, ref_logp, beta):
    return torch.log_softmax(ref_logp + q / beta, -1)  # forgets to return v


@pytest.mark.parametrize(
    "wrong",
    [_pi_without_ref, _log_of_softmax, _v_by_exp, _v_hard_max, _wrong_axis, _v_only_as_tensor],
    ids=lambda f: f.__name__,
)
def test_policy_from_q_fails_wrong_answers(wrong):
    v = exercises.check_policy_from_q(wrong, quiet=True)
    assert v.status == "fail", v.message
    assert "v appended as its last column" in v.message


def test_policy_from_q_catches_the_underflow_and_the_overflow_where_they_happen():
    message = exercises.check_policy_from_q(_log_of_softmax, quiet=True).message
    assert "-inf" in message or "inf" in message
    assert "inf" in exercises.check_policy_from_q(_v_by_exp, quiet=True).message


def test_policy_from_q_v_of_the_wrong_shape_fails_with_the_layout():
    def wrong_v_shape(q, ref_logp, beta):
        log_pi = torch.log_softmax(ref_logp + q / beta, -1)
        return log_pi, log_pi  # v must drop the action axis

    v = exercises.check_policy_from_q(wrong_v_shape, quiet=True)
    assert v.status == "fail" and "shape" in v.message and "without its last axis" in v.message


# --------------------------------------------------------------------------------------------
# 3.2 dro_loss_from_tokens
# --------------------------------------------------------------------------------------------


def test_dro_reference_equals_dqo_on_one_action_per_row():
    """The notebook's identity, on the checker's reference: DRO of the summed log-ratio = DQO's
    value loss on rows of one action whose log-ratio is that sum."""
    gen = torch.Generator().manual_seed(5)
    mask = torch.tensor([[False, True, True, True], [False, False, True, True]])
    pol, ref = (-torch.rand(2, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    values = torch.rand(2, generator=gen, dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = ch03._dro_from_tokens_reference(pol, ref, values, rewards, mask, 0.4)
    seq = kernels.masked_sum(pol - ref, mask, 1)
    one = torch.tensor([[False, True]] * 2)
    col = lambda x: torch.stack([torch.zeros(2, dtype=torch.float64), x], 1)  # noqa: E731
    _, dqo_v, _ = kernels.dqo_loss(
        col(seq),
        torch.zeros(2, 2, dtype=torch.float64),
        col(values),
        col(rewards),
        one,
        beta=0.4,
        lam=1.0,
        is_mode="none",
    )
    assert exercises.mismatch(loss, dqo_v) is None
    by_loop = dro_loss_from_tokens(pol, ref, values, rewards, mask, 0.4)
    assert exercises.mismatch(loss, by_loop) is None


def _per_token_squares(policy_logps, ref_logps, values, rewards, mask, beta):
    """DQO-like: ½(V + βρ_h − r)² at every token — the telescoping forgotten."""
    zero = torch.zeros((), dtype=torch.float64)
    rho = torch.where(mask, policy_logps - ref_logps, zero)
    d = values[:, None] + beta * rho - rewards[:, None]
    return torch.where(mask, 0.5 * d**2, zero).sum() / mask.sum().clamp(min=1)


def _token_mean(policy_logps, ref_logps, values, rewards, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    seq = torch.where(mask, policy_logps - ref_logps, zero).sum(1)
    return (0.5 * (values + beta * seq - rewards) ** 2).sum() / mask.sum().clamp(min=1)


def _mask_by_product(policy_logps, ref_logps, values, rewards, mask, beta):
    seq = ((policy_logps - ref_logps) * mask).sum(1)
    return (0.5 * (values + beta * seq - rewards) ** 2).mean()


def _every_column(policy_logps, ref_logps, values, rewards, mask, beta):
    seq = (policy_logps - ref_logps).sum(1)
    return (0.5 * (values + beta * seq - rewards) ** 2).mean()


def _calls_the_kernel(policy_logps, ref_logps, values, rewards, mask, beta):
    seq = torch.where(mask, policy_logps - ref_logps, 0.0).sum(1)
    return dqo.kernels.dro_loss(seq, torch.zeros_like(seq), values, rewards, beta)[1]


@pytest.mark.parametrize(
    "wrong",
    [_per_token_squares, _token_mean, _mask_by_product, _every_column],
    ids=lambda f: f.__name__,
)
def test_dro_from_tokens_fails_wrong_answers(wrong):
    v = exercises.check_dro_loss_from_tokens(wrong, quiet=True)
    assert v.status == "fail" and v.message.startswith("✗"), v.message


def test_dro_from_tokens_nan_off_the_mask_is_located():
    v = exercises.check_dro_loss_from_tokens(_mask_by_product, quiet=True)
    assert "nan" in v.message


def test_dro_from_tokens_fails_a_call_of_the_kernel():
    v = exercises.check_dro_loss_from_tokens(_calls_the_kernel, quiet=True)
    assert v.status == "fail" and "dro_loss" in v.message


# --------------------------------------------------------------------------------------------
# 4.1 one_step_residual
# --------------------------------------------------------------------------------------------


def test_the_residual_inputs_hold_the_edge_cases():
    seen = []

    def record(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
        b = None if bootstrap is None else bootstrap.clone()
        seen.append((mask.clone(), values.clone(), b))
        return one_step_residual(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap)

    assert exercises.check_one_step_residual(record, quiet=True).passed
    masks = [m for m, _, _ in seen]
    assert masks[1][:, -1].all()  # left-padded: every response ends the row
    assert not masks[4].any()  # an all-masked batch
    assert not masks[7][0].any()  # an empty row
    assert any(b is not None and bool((b != 0).any()) for _, _, b in seen)  # cut rows
    assert any(bool(v[~m].isnan().any()) for m, v, _ in seen if (~m).any())  # NaN off the mask


def _terminal_always(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
    return one_step_residual(policy_logps, ref_logps, values, rewards, mask, beta, None)


def _bootstrap_in_last_column(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
    """b at the tensor's last column (right only for left padding)."""
    zero = torch.zeros((), dtype=torch.float64)
    v = torch.where(mask, values, zero)
    nxt = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
    if bootstrap is not None:
        nxt[:, -1] = bootstrap
    rho = torch.where(mask, policy_logps - ref_logps, zero)
    return torch.where(mask, v + beta * rho - torch.where(mask, rewards, zero) - nxt, zero)


def _bootstrap_everywhere(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
    d = one_step_residual(policy_logps, ref_logps, values, rewards, mask, beta, None)
    if bootstrap is None:
        return d
    return torch.where(mask, d - bootstrap[:, None], 0.0)


def _mask_by_multiplication(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
    """Right shifts and bootstrap, but masks by multiplication: NaN off the mask survives
    (NaN · 0 = NaN)."""
    nxt_action = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], 1)
    nxt = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1) * nxt_action
    b = 0.0 if bootstrap is None else bootstrap[:, None]
    nxt = nxt + (mask & ~nxt_action) * b
    d = values + beta * (policy_logps - ref_logps) - rewards - nxt
    return d * mask


def _calls_lambda_return(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
    shaped = torch.where(mask, rewards - beta * (policy_logps - ref_logps), 0.0)
    g = dqo.kernels.lambda_return(shaped, values, mask, 0.0, bootstrap)
    return torch.where(mask, values - g, 0.0)


@pytest.mark.parametrize(
    "wrong",
    [_terminal_always, _bootstrap_in_last_column, _bootstrap_everywhere, _mask_by_multiplication],
    ids=lambda f: f.__name__,
)
def test_residual_fails_wrong_answers(wrong):
    v = exercises.check_one_step_residual(wrong, quiet=True)
    assert v.status == "fail", v.message


def test_residual_fails_a_call_of_the_lambda_return():
    v = exercises.check_one_step_residual(_calls_lambda_return, quiet=True)
    assert v.status == "fail" and "lambda_return" in v.message


# --------------------------------------------------------------------------------------------
# 4.2 / 4.3 the losses and their gradients
# --------------------------------------------------------------------------------------------


def test_the_loss_references_have_the_gradients_the_text_states():
    gen = torch.Generator().manual_seed(2)
    mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    x = [torch.randn(2, 4, generator=gen, dtype=torch.float64) for _ in range(4)]
    values, log_ratio, rewards, target = x
    beta, n = 0.3, int(mask.sum())
    delta = torch.where(mask, values + beta * log_ratio - rewards - target, 0.0)
    order = ch04._LOSS_ARGS
    args = (values, log_ratio, rewards, target, mask, beta)
    pol_args = (log_ratio, values, rewards, target, mask, beta)

    def grads(fn, args, names):
        stack = ch04._gradients_of(fn, names)(*args)
        return dict(zip(ch04._GRAD_ARGS, stack))

    pol_order = ("log_ratio", "values", "rewards", "target", "mask", "beta")
    g = grads(policy_loss, pol_args, pol_order)
    assert exercises.mismatch(g["log_ratio"], beta * delta / n) is None
    assert not g["values"].any() and not g["target"].any()
    g = grads(value_loss, args, order)
    assert exercises.mismatch(g["values"], delta / n) is None
    assert not g["log_ratio"].any() and not g["target"].any()


def _no_detach(log_ratio, values, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    return (0.5 * (v + beta * rho - r - t) ** 2).sum() / mask.sum().clamp(min=1)


def _target_not_detached(log_ratio, values, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    return (0.5 * (v.detach() + beta * rho - r - t) ** 2).sum() / mask.sum().clamp(min=1)


def _where_after_squaring(log_ratio, values, rewards, target, mask, beta):
    d = values.detach() + beta * log_ratio - rewards - target.detach()
    return torch.where(mask, 0.5 * d**2, 0.0).sum() / mask.sum().clamp(min=1)


def _plain_mean(log_ratio, values, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    d = v.detach() + beta * rho - r - t.detach()
    return (0.5 * d**2)[mask].mean()  # NaN on an all-masked batch


def _mean_over_every_column(log_ratio, values, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    return (0.5 * (v.detach() + beta * rho - r - t.detach()) ** 2).mean()


@pytest.mark.parametrize(
    "wrong, where",
    [
        (_no_detach, "`values`"),
        (_target_not_detached, "`target`"),
        (_where_after_squaring, "`log_ratio`"),  # NaN in the gradient, the loss is right
        (_plain_mean, "nan"),
        (_mean_over_every_column, "policy_loss differs"),
    ],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_policy_loss_fails_wrong_answers(wrong, where):
    v = exercises.check_policy_loss(wrong, quiet=True)
    assert v.status == "fail" and where in v.message, v.message


def _value_no_detach(values, log_ratio, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    return (0.5 * (v + beta * rho - r - t.detach()) ** 2).sum() / mask.sum().clamp(min=1)


def _value_target_kept(values, log_ratio, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    return (0.5 * (v + beta * rho.detach() - r - t) ** 2).sum() / mask.sum().clamp(min=1)


def _value_unclamped(values, log_ratio, rewards, target, mask, beta):
    zero = torch.zeros((), dtype=torch.float64)
    v, rho, r, t = (torch.where(mask, x, zero) for x in (values, log_ratio, rewards, target))
    return (0.5 * (v + beta * rho.detach() - r - t.detach()) ** 2).sum() / mask.sum()


def _value_where_after(values, log_ratio, rewards, target, mask, beta):
    d = values + beta * log_ratio.detach() - rewards - target.detach()
    return torch.where(mask, 0.5 * d**2, 0.0).sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize(
    "wrong, where",
    [
        (_value_no_detach, "`log_ratio`"),
        (_value_target_kept, "`target`"),
        (_value_unclamped, "nan"),
        (_value_where_after, "`values`"),
    ],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_value_loss_fails_wrong_answers(wrong, where):
    v = exercises.check_value_loss(wrong, quiet=True)
    assert v.status == "fail" and where in v.message, v.message


def test_the_policy_loss_is_not_the_value_loss():
    """Same value, other gradient path: each passes its own checker and fails the other's."""
    swapped_value = lambda log_ratio, values, *rest: value_loss(values, log_ratio, *rest)  # noqa: E731
    swapped_policy = lambda values, log_ratio, *rest: policy_loss(log_ratio, values, *rest)  # noqa: E731
    assert exercises.check_policy_loss(swapped_value, quiet=True).status == "fail"
    assert exercises.check_value_loss(swapped_policy, quiet=True).status == "fail"


def test_the_loss_checkers_fail_a_call_of_the_kernel():
    def cheat(log_ratio, values, rewards, target, mask, beta):
        losses = dqo.kernels.squared_residual_losses(values, log_ratio, rewards, target, mask, beta)
        return losses[0]

    v = exercises.check_policy_loss(cheat, quiet=True)
    assert v.status == "fail" and "squared_residual_losses" in v.message


@pytest.mark.parametrize("checker", [exercises.check_policy_loss, exercises.check_value_loss])
def test_a_loss_that_is_not_a_scalar_is_reported(checker):
    def per_token(a, b, rewards, target, mask, beta):
        return torch.where(mask, a + b, 0.0)  # (B, T), not a scalar

    v = checker(per_token, quiet=True)
    assert v.status in {"fail", "error"} and v.message.startswith("✗")
