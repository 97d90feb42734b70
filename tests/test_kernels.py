"""Kernels against independent references: naive per-row Python loops and hand-derived formulas."""

from __future__ import annotations

import math

import pytest
import torch

from dqo_tutorial import kernels as K
from dqo_tutorial import naive

# ----------------------------------------------------------------------------------------------
# helpers: random batches with contiguous action blocks, left or right padded
# ----------------------------------------------------------------------------------------------


def random_mask(b: int, t: int, gen: torch.Generator, side: str = "mixed") -> torch.Tensor:
    """(B, T) bool with one contiguous action block per row (possibly empty) after a prompt."""
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        n_act = int(torch.randint(0, t, (1,), generator=gen))  # may be 0: empty row
        prompt = int(torch.randint(1, t - n_act + 1, (1,), generator=gen)) if n_act < t else 1
        n_act = min(n_act, t - prompt)
        total = prompt + n_act
        row_side = side if side != "mixed" else ("left" if i % 2 else "right")
        start = prompt if row_side == "right" else t - n_act
        if total <= t:
            mask[i, start : start + n_act] = True
    return mask


GEN_SEEDS = [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------
# gather_logprobs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gather_logprobs_matches_log_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=g) * 4).to(dtype)
    tokens = torch.randint(0, 50, (3, 7), generator=g)
    ours = K.gather_logprobs(logits, tokens)
    ref = torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)
    assert ours.dtype == torch.float32 and ours.shape == (3, 7)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_gather_logprobs_chunked_forward_and_backward(monkeypatch):
    """Force many tiny chunks; values and gradients must equal the unchunked reference."""
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 64)  # 64 // V = 1 row per chunk
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 40, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 40, (2, 5), generator=g)
    w = torch.randn(2, 5, generator=g, dtype=torch.float64)
    ours = K.gather_logprobs(logits, tokens)
    (ours * w).sum().backward()
    grad_ours = logits.grad.clone()
    logits.grad = None
    ref = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (ref * w).sum().backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_ours, logits.grad)


def test_gather_logprobs_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 6, (2, 3), generator=g)
    assert torch.autograd.gradcheck(lambda z: K.gather_logprobs(z, tokens), (logits,))


def test_gather_logprobs_half_backward_matches_float_reference():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 4, 30, generator=g)
    tokens = torch.randint(0, 30, (2, 4), generator=g)
    half = base.to(torch.bfloat16).requires_grad_()
    K.gather_logprobs(half, tokens).sum().backward()
    ref = half.detach().float().requires_grad_()
    torch.log_softmax(ref, -1).gather(-1, tokens[..., None]).sum().backward()
    assert half.grad.dtype == torch.bfloat16
    torch.testing.assert_close(half.grad.float(), ref.grad, atol=1e-2, rtol=1e-2)


def test_gather_logprobs_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="disagree"):
        K.gather_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# lambda_return
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", GEN_SEEDS)
@pytest.mark.parametrize("side", ["left", "right", "mixed"])
def test_lambda_return_matches_naive_loop(seed, side):
    g = torch.Generator().manual_seed(seed)
    b, t = 6, 11
    mask = random_mask(b, t, g, side)
    rewards = torch.randn(b, t, generator=g)
    values = torch.randn(b, t, generator=g)
    lam = float(torch.rand((), generator=g))
    bootstrap = torch.randn(b, generator=g) * (torch.rand(b, generator=g) > 0.5)
    for boot in (None, bootstrap):
        ours = K.lambda_return(rewards, values, mask, lam, boot)
        ref = naive.lambda_return(rewards, values, mask, lam, boot)
        torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
        assert (ours[~mask] == 0).all()


@pytest.mark.parametrize("chunk", [1, 3, 4, 256])
def test_lambda_return_blockwise_scan_matches_naive_across_block_edges(monkeypatch, chunk):
    monkeypatch.setattr(K, "_SCAN_CHUNK", chunk)
    g = torch.Generator().manual_seed(9)
    mask = random_mask(8, 13, g)
    rewards, values = torch.randn(8, 13, generator=g), torch.randn(8, 13, generator=g)
    boot = torch.randn(8, generator=g)
    for lam in (0.0, 0.37, 1.0):
        ours = K.lambda_return(rewards, values, mask, lam, boot)
        ref = naive.lambda_return(rewards, values, mask, lam, boot)
        torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


def test_lambda_return_long_rows_float32():
    g = torch.Generator().manual_seed(10)
    t = 1100
    mask = torch.zeros(3, t, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1, 1:900] = True
    mask[2, 300:] = True
    rewards, values = torch.randn(3, t, generator=g) * 0.1, torch.randn(3, t, generator=g)
    for lam in (0.95, 1.0):
        ours = K.lambda_return(rewards, values, mask, lam, torch.ones(3))
        ref = naive.lambda_return(rewards, values, mask, lam, torch.ones(3))
        torch.testing.assert_close(ours.double(), ref, atol=1e-4, rtol=1e-5)


def test_lambda_return_extremes_hand_computed():
    # one row, right padded: prompt at column 0, actions at 1..3, pad at 4
    mask = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    r = torch.tensor([[9.0, 1.0, 2.0, 3.0, 9.0]])
    v = torch.tensor([[9.0, 10.0, 20.0, 30.0, 9.0]])
    b = torch.tensor([5.0])
    # λ = 1: reverse cumulative sum plus bootstrap
    torch.testing.assert_close(
        K.lambda_return(r, v, mask, 1.0, b), torch.tensor([[0, 11.0, 10, 8, 0]])
    )
    # λ = 0: one-step target r_h + V(s_{h+1}), last one r_H + b
    torch.testing.assert_close(
        K.lambda_return(r, v, mask, 0.0, b), torch.tensor([[0, 21.0, 32, 8, 0]])
    )
    # λ = 0.5 by hand: G3 = 8, G2 = 2 + .5*30 + .5*8 = 21, G1 = 1 + .5*20 + .5*21 = 21.5
    torch.testing.assert_close(
        K.lambda_return(r, v, mask, 0.5, b), torch.tensor([[0, 21.5, 21, 8, 0]])
    )


def test_lambda_return_empty_rows_and_padding_invariance():
    g = torch.Generator().manual_seed(5)
    r, v = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    empty = torch.zeros(2, 6, dtype=torch.bool)
    assert (K.lambda_return(r, v, empty, 0.7, torch.ones(2)) == 0).all()
    # the same 3 actions placed right-padded and left-padded give the same returns
    right = torch.tensor([[0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    left = torch.tensor([[0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    r_r, v_r = r[:1], v[:1]
    r_l, v_l = torch.roll(r_r, 2, 1), torch.roll(v_r, 2, 1)
    out_r = K.lambda_return(r_r, v_r, right, 0.6, torch.tensor([0.3]))
    out_l = K.lambda_return(r_l, v_l, left, 0.6, torch.tensor([0.3]))
    torch.testing.assert_close(out_r[0, 1:4], out_l[0, 3:6])


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_a_critic_shifted_by_b_shifts_the_lambda_return_by_b_times_one_minus_lam_to_the_rest(lam):
    """V → V + b moves G_h by b(1 − λ^{H−h}) (h = 1 … H, terminal rows): the residual
    V(s_h) − G_h keeps b·λ^{H−h} of the shift — all of it at the last action, at λ = 1
    everywhere (the bias argument of experiments.variants' λ = 0.95 controls)."""
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 1:7], mask[1, 0:4] = True, True  # H = 6 and H = 4
    b = 0.2
    shift = K.lambda_return(rewards, values + b, mask, lam) - K.lambda_return(
        rewards, values, mask, lam
    )
    expected = torch.zeros(2, 7)
    for row, (start, h_len) in enumerate([(1, 6), (0, 4)]):
        for h in range(1, h_len + 1):
            expected[row, start + h - 1] = b * (1 - lam ** (h_len - h))
    torch.testing.assert_close(shift, expected, atol=1e-6, rtol=0)


def test_lambda_return_rejects_bad_lambda():
    with pytest.raises(ValueError, match="lam"):
        K.lambda_return(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 1.5)


# ----------------------------------------------------------------------------------------------
# importance_weights
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "sequence", "prefix"])
@pytest.mark.parametrize("seed", GEN_SEEDS)
def test_importance_weights_match_naive_loop(mode, seed):
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(5, 9, g)
    lp = -torch.rand(5, 9, generator=g) * 3
    lb = -torch.rand(5, 9, generator=g) * 3
    clip = float(torch.rand((), generator=g) * 3 + 0.5)
    ours = K.importance_weights(lp, lb, mask, mode, clip)
    ref = naive.importance_weights(lp, lb, mask, mode, clip)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    assert (ours[~mask] == 0).all()


def test_importance_weights_are_detached_and_never_overflow():
    lp = torch.full((2, 400), 5.0, requires_grad=True)  # Σ Δ = 2000: exp would overflow
    lb = torch.zeros(2, 400)
    mask = torch.ones(2, 400, dtype=torch.bool)
    for mode in ("prefix", "sequence"):
        w = K.importance_weights(lp, lb, mask, mode, clip=2.0)
        assert not w.requires_grad and w.grad_fn is None
        assert torch.isfinite(w).all() and w.max() == 2.0
    w = K.importance_weights(lp, lb, mask, "prefix", clip=math.inf, normalize=True)
    assert torch.isfinite(w).all()
    # prefix weights: the first action is always reached with weight exp(0) = 1
    assert w.shape == (2, 400)


def test_importance_weights_self_normalised_mean_is_one():
    g = torch.Generator().manual_seed(7)
    mask = random_mask(4, 8, g, "right")
    mask[0, 2:5] = True
    lp, lb = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    w = K.importance_weights(lp, lb, mask, "prefix", clip=3.0, normalize=True)
    raw = naive.importance_weights(lp, lb, mask, "prefix", 3.0)
    expected = raw / raw[mask].mean()
    torch.testing.assert_close(w.double(), expected.where(mask, 0.0), atol=1e-5, rtol=1e-5)


def test_importance_weights_bad_mode_and_clip():
    z = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="is_mode"):
        K.importance_weights(z, z, z.bool(), "bogus")
    with pytest.raises(ValueError, match="clip"):
        K.importance_weights(z, z, z.bool(), "prefix", clip=0.0)


# ----------------------------------------------------------------------------------------------
# residuals and losses
# ----------------------------------------------------------------------------------------------


def random_batch(seed, b=5, t=9, dtype=torch.float64, side="mixed"):
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(b, t, g, side)
    mask[0] = False
    mask[0, 2:6] = True  # at least one non-empty row
    mk = dict(generator=g, dtype=dtype)
    return dict(
        policy_logps=-torch.rand(b, t, **mk) * 2,
        ref_logps=-torch.rand(b, t, **mk) * 2,
        values=torch.randn(b, t, **mk),
        rewards=torch.randn(b, t, **mk),
        mask=mask,
        behavior=-torch.rand(b, t, **mk) * 2,
        bootstrap=torch.randn(b, **mk) * (torch.rand(b, generator=g) > 0.5),
    )


@pytest.mark.parametrize("seed", GEN_SEEDS)
def test_soft_bellman_residual_matches_naive(seed):
    d = random_batch(seed)
    args = (d["policy_logps"], d["ref_logps"], d["values"], d["rewards"], d["mask"], 0.1)
    ours = K.soft_bellman_residual(*args, bootstrap=d["bootstrap"])
    torch.testing.assert_close(ours, naive.soft_bellman_residual(*args, d["bootstrap"]))


def test_dqo_loss_lambda0_equals_half_mean_squared_one_step_residual():
    d = random_batch(11)
    beta = 0.2
    delta = naive.soft_bellman_residual(
        d["policy_logps"],
        d["ref_logps"],
        d["values"],
        d["rewards"],
        d["mask"],
        beta,
        d["bootstrap"],
    )
    expected = 0.5 * delta[d["mask"]].square().mean()
    pl, vl, stats = K.dqo_loss(
        d["policy_logps"],
        d["ref_logps"],
        d["values"],
        d["rewards"],
        d["mask"],
        beta=beta,
        lam=0.0,
        bootstrap=d["bootstrap"],
        is_mode="none",
    )
    torch.testing.assert_close(pl, expected)
    torch.testing.assert_close(vl, expected)
    torch.testing.assert_close(stats["delta_mean"], delta[d["mask"]].mean())


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_dqo_loss_lambda_residual_matches_naive_lambda_return(lam):
    d = random_batch(12)
    beta = 0.3
    lr = (d["policy_logps"] - d["ref_logps"]).where(d["mask"], 0.0)
    shaped = d["rewards"] - beta * lr
    g_ref = naive.lambda_return(shaped, d["values"], d["mask"], lam, d["bootstrap"])
    delta = (d["values"] - g_ref)[d["mask"]]
    w = naive.importance_weights(d["policy_logps"], d["behavior"], d["mask"], "prefix", 2.0)[
        d["mask"]
    ]
    expected = (0.5 * w * delta.square()).mean()
    pl, vl, _ = K.dqo_loss(
        d["policy_logps"],
        d["ref_logps"],
        d["values"],
        d["rewards"],
        d["mask"],
        beta=beta,
        lam=lam,
        bootstrap=d["bootstrap"],
        behavior_logps=d["behavior"],
    )
    torch.testing.assert_close(pl, expected)
    torch.testing.assert_close(vl, expected)


@pytest.mark.parametrize("is_mode", ["none", "prefix", "sequence"])
def test_dqo_with_one_action_per_sequence_equals_dro(is_mode):
    g = torch.Generator().manual_seed(13)
    b = 6
    # sequences of prompt (2 tokens) + exactly one terminal action, right padded to T = 4
    mask = torch.zeros(b, 4, dtype=torch.bool)
    mask[:, 2] = True
    pol = -torch.rand(b, 4, generator=g, dtype=torch.float64)
    ref = -torch.rand(b, 4, generator=g, dtype=torch.float64)
    val = torch.randn(b, 4, generator=g, dtype=torch.float64)
    rew = torch.randint(0, 2, (b, 4), generator=g).double()
    pl, vl, _ = K.dqo_loss(
        pol, ref, val, rew, mask, beta=0.1, lam=0.7, behavior_logps=pol.detach(), is_mode=is_mode
    )
    pl_dro, vl_dro = K.dro_loss(pol[:, 2], ref[:, 2], val[:, 2], rew[:, 2], beta=0.1)
    torch.testing.assert_close(pl, pl_dro)
    torch.testing.assert_close(vl, vl_dro)


def test_dro_loss_hand_computed():
    pol, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    val, rew = torch.tensor([0.2, 0.5]), torch.tensor([1.0, 0.0])
    beta = 0.5
    # residuals r − V − β(π − ref): 1 − .2 − .25 = .55 ; 0 − .5 + .5 = 0
    expected = torch.tensor(0.5 * (0.55**2 + 0.0) / 2)
    pl, vl = K.dro_loss(pol, ref, val, rew, beta)
    torch.testing.assert_close(pl, expected)
    torch.testing.assert_close(vl, expected)


def test_dpo_loss_hand_computed_and_symmetry():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -2.0])
    # margins: (1) − (−1) = 2 ; (1) − (−1) = 2
    out = K.dpo_loss(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(out, torch.full((2,), -math.log(1 / (1 + math.exp(-0.2)))))
    swapped = K.dpo_loss(pr, pc, rr, rc, beta=0.1)
    torch.testing.assert_close(
        out - swapped, torch.full((2,), -0.2)
    )  # softplus(−x) − softplus(x) = −x


def test_gradients_are_the_analytic_semi_gradients():
    """∂L_π/∂log π_h = β w_h δ_h / N and ∂L_V/∂V_h = w_h δ_h / N (targets detached)."""
    d = random_batch(14)
    beta, lam = 0.25, 0.8
    pol = d["policy_logps"].clone().requires_grad_()
    val = d["values"].clone().requires_grad_()
    pl, vl, _ = K.dqo_loss(
        pol,
        d["ref_logps"],
        val,
        d["rewards"],
        d["mask"],
        beta=beta,
        lam=lam,
        bootstrap=d["bootstrap"],
        behavior_logps=d["behavior"],
        is_clip=1.5,
    )
    (gp,) = torch.autograd.grad(pl, pol)
    (gv,) = torch.autograd.grad(vl, val)
    m = d["mask"]
    lr = (d["policy_logps"] - d["ref_logps"]).where(m, 0.0)
    g_ref = naive.lambda_return(d["rewards"] - beta * lr, d["values"], m, lam, d["bootstrap"])
    delta = (d["values"] - g_ref).where(m, 0.0)
    w = naive.importance_weights(d["policy_logps"], d["behavior"], m, "prefix", 1.5)
    n = m.sum()
    torch.testing.assert_close(gp, (beta * w * delta / n).where(m, 0.0))
    torch.testing.assert_close(gv, (w * delta / n).where(m, 0.0))


def test_value_loss_never_reaches_policy_and_policy_loss_never_reaches_value():
    d = random_batch(15)
    for detach_target in (True, False):
        pol = d["policy_logps"].clone().requires_grad_()
        val = d["values"].clone().requires_grad_()
        boot = d["bootstrap"].clone().requires_grad_()
        pl, vl, _ = K.dqo_loss(
            pol,
            d["ref_logps"],
            val,
            d["rewards"],
            d["mask"],
            beta=0.1,
            bootstrap=boot,
            behavior_logps=d["behavior"],
            detach_target=detach_target,
        )
        g_pol_v, g_val_v, g_boot_p = torch.autograd.grad(vl, (pol, val, boot), allow_unused=True)
        assert g_pol_v is None or (g_pol_v == 0).all()
        g_val_p, g_boot_p = torch.autograd.grad(pl, (val, boot), allow_unused=True)
        assert g_val_p is None or (g_val_p == 0).all()
        assert g_boot_p is None or (g_boot_p == 0).all()


def test_full_gradient_without_detach_matches_finite_differences():
    """detach_target=False: the value loss is a plain function of V (policy fixed), and the policy
    loss of log π (values fixed, no IS); gradcheck compares autograd with finite differences."""
    d = random_batch(16, b=3, t=6)
    args = dict(
        mask=d["mask"],
        beta=0.3,
        lam=0.6,
        bootstrap=d["bootstrap"],
        is_mode="none",
        detach_target=False,
    )

    def value_loss(v):
        return K.dqo_loss(d["policy_logps"], d["ref_logps"], v, d["rewards"], **args)[1]

    def policy_loss(p):
        return K.dqo_loss(p, d["ref_logps"], d["values"], d["rewards"], **args)[0]

    assert torch.autograd.gradcheck(value_loss, (d["values"].clone().requires_grad_(),))
    assert torch.autograd.gradcheck(policy_loss, (d["policy_logps"].clone().requires_grad_(),))


def test_nan_and_inf_in_masked_positions_stay_out():
    d = random_batch(17, dtype=torch.float32)
    m = d["mask"]
    poisoned = {
        k: (v.clone() if torch.is_tensor(v) and v.dtype.is_floating_point else v)
        for k, v in d.items()
    }
    for k in ("policy_logps", "ref_logps", "values", "rewards", "behavior"):
        poisoned[k][~m] = float("nan")
        poisoned[k][~m & (torch.arange(m.shape[1]) % 2 == 0)] = float("inf")
    pol = poisoned["policy_logps"].requires_grad_()
    val = poisoned["values"].requires_grad_()
    pl, vl, stats = K.dqo_loss(
        pol,
        poisoned["ref_logps"],
        val,
        poisoned["rewards"],
        m,
        beta=0.1,
        behavior_logps=poisoned["behavior"],
        lam=0.5,
    )
    (pl + vl).backward()
    assert torch.isfinite(pl) and torch.isfinite(vl)
    assert torch.isfinite(pol.grad).all() and torch.isfinite(val.grad).all()
    assert all(torch.isfinite(s).all() for s in stats.values())
    clean = K.dqo_loss(
        d["policy_logps"],
        d["ref_logps"],
        d["values"],
        d["rewards"],
        m,
        beta=0.1,
        behavior_logps=d["behavior"],
        lam=0.5,
    )
    torch.testing.assert_close(pl, clean[0])
    torch.testing.assert_close(vl, clean[1])


def test_all_masked_rows_contribute_zero():
    d = random_batch(18)
    empty = torch.zeros_like(d["mask"])
    pl, vl, stats = K.dqo_loss(
        d["policy_logps"],
        d["ref_logps"],
        d["values"],
        d["rewards"],
        empty,
        beta=0.1,
        behavior_logps=d["behavior"],
    )
    assert pl == 0 and vl == 0 and all(torch.isfinite(s).all() for s in stats.values())
    # adding an all-masked row leaves a num_items-normalised loss unchanged
    n = int(d["mask"].sum())
    kw = dict(beta=0.1, behavior_logps=d["behavior"], num_items=n)
    base = K.dqo_loss(d["policy_logps"], d["ref_logps"], d["values"], d["rewards"], d["mask"], **kw)
    m2 = d["mask"].clone()
    m2[1] = False
    part = K.dqo_loss(d["policy_logps"], d["ref_logps"], d["values"], d["rewards"], m2, **kw)
    only = K.dqo_loss(
        d["policy_logps"], d["ref_logps"], d["values"], d["rewards"], d["mask"] & ~m2, **kw
    )
    torch.testing.assert_close(part[0] + only[0], base[0])


def test_gradient_accumulation_with_num_items_equals_full_batch():
    d = random_batch(19, b=8, t=10)
    n = int(d["mask"].sum())

    def loss_on(rows: slice, **extra):
        return K.dqo_loss(
            d["policy_logps"][rows], d["ref_logps"][rows], d["values"][rows],
            d["rewards"][rows], d["mask"][rows], bootstrap=d["bootstrap"][rows],
            behavior_logps=d["behavior"][rows], beta=0.1, lam=0.9, is_mode="prefix", **extra,
        )  # fmt: skip

    micro_batches = (slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8))
    full = loss_on(slice(None))
    micro = [loss_on(rows, num_items=n) for rows in micro_batches]
    torch.testing.assert_close(sum(m[0] for m in micro), full[0])
    torch.testing.assert_close(sum(m[1] for m in micro), full[1])
    # ... whereas averaging per-micro-batch means is not the full-batch loss in general
    per_mean = [loss_on(rows)[0] for rows in micro_batches]
    assert not torch.allclose(sum(per_mean) / 4, full[0])


def test_dqo_loss_requires_behavior_logps_for_is():
    d = random_batch(20)
    with pytest.raises(ValueError, match="behavior_logps"):
        K.dqo_loss(
            d["policy_logps"], d["ref_logps"], d["values"], d["rewards"], d["mask"], beta=0.1
        )


def test_dqo_stats_report_clip_rate_and_kl():
    mask = torch.tensor([[0, 1, 1, 1]], dtype=torch.bool)
    pol = torch.tensor([[0.0, -0.1, -0.1, -0.1]])
    beh = torch.tensor([[0.0, -2.0, -2.0, -2.0]])  # Δ = 1.9 per token
    ref = torch.tensor([[0.0, -0.2, -0.3, -0.4]])
    _, _, s = K.dqo_loss(
        pol,
        ref,
        torch.zeros(1, 4),
        torch.zeros(1, 4),
        mask,
        beta=0.1,
        behavior_logps=beh,
        is_clip=2.0,
    )
    # prefix log-weights 0, 1.9, 3.8 → weights 1, 2 (clipped), 2 (clipped)
    torch.testing.assert_close(s["is_clip_rate"], torch.tensor(2 / 3))
    torch.testing.assert_close(s["is_weight_mean"], torch.tensor(5 / 3))
    torch.testing.assert_close(s["log_ratio_mean"], torch.tensor(0.2))


def test_dqo_stats_against_a_hand_computation():
    """Two rows (3 and 1 actions), λ = 0, β = 0.5: δ_h = V_h + βρ_h − r_h − V_{h+1} (b = 0 at the
    end) written out, then their mean, population std, |δ| mean, and the prefix IS weights
    (1, e^0.3, e^0.5 | 1) with their mean and max, all by hand. Kills ``delta_std`` around a
    wrong mean (e.g. ``delta + d_mean``) and ``is_weight_max`` taken as a ``.min()``."""
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    values = torch.tensor([[0.0, 0.5, 0.2, -0.1], [0.0, 0.0, 0.0, 0.4]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    rho = [[0.0, 0.2, -0.4, 0.6], [0.0, 0.0, 0.0, -0.2]]
    ref = torch.full((2, 4), -1.0)
    pol = ref + torch.tensor(rho)
    beh = pol - torch.tensor([[0.0, 0.3, 0.2, 0.1], [0.0, 0.0, 0.0, 0.7]])  # Δ = log π − log μ
    deltas = [
        0.5 + 0.5 * 0.2 - 0.0 - 0.2,
        0.2 + 0.5 * -0.4 - 0.0 - -0.1,
        -0.1 + 0.5 * 0.6 - 0.0 - 0.0,
        0.4 + 0.5 * -0.2 - 0.5 - 0.0,
    ]
    mean = sum(deltas) / 4
    assert abs(mean) > 0.1  # a std around −mean must differ
    std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / 4)
    weights = [1.0, math.exp(0.3), math.exp(0.5), 1.0]
    _, _, s = K.dqo_loss(pol, ref, values, rewards, mask, beta=0.5, lam=0.0, behavior_logps=beh)
    expected = {
        "delta_mean": mean,
        "delta_abs_mean": sum(abs(d) for d in deltas) / 4,
        "delta_std": std,
        "log_ratio_mean": (0.2 - 0.4 + 0.6 - 0.2) / 4,
        "is_weight_mean": sum(weights) / 4,
        "is_weight_max": math.exp(0.5),
        "is_clip_rate": 0.0,
    }
    for key, value in expected.items():
        assert s[key].item() == pytest.approx(value, abs=1e-6), key
    assert s["num_tokens"].item() == 4


def test_importance_weights_default_clip_is_two():
    """Prefix log-weights 0, 0.5, 1.0, 1.5 under the default clip c = 2: weights 1, e^0.5, 2, 2
    (e^1 and e^1.5 truncated). Kills any change of the default clip."""
    mask = torch.tensor([[1, 1, 1, 1]], dtype=torch.bool)
    beh = torch.full((1, 4), -2.0)
    w = K.importance_weights(beh + 0.5, beh, mask)
    torch.testing.assert_close(w, torch.tensor([[1.0, math.exp(0.5), 2.0, 2.0]]))


def test_token_mean_and_masked_sum():
    x = torch.tensor([[1.0, float("nan"), 3.0], [4.0, 5.0, float("inf")]])
    m = torch.tensor([[1, 0, 1], [1, 1, 0]])
    assert K.masked_sum(x, m) == 13
    torch.testing.assert_close(K.masked_sum(x, m, dim=1), torch.tensor([4.0, 9.0]))
    assert K.token_mean(x, m) == 13 / 4
    assert K.token_mean(x, m, num_items=13) == 1
    assert K.token_mean(x, torch.zeros_like(m)) == 0


@pytest.mark.parametrize("tau", [1.0, 0.7, 1.3])
def test_kl_estimate_is_unbiased_for_kl_theta_ref_under_any_covering_mu(tau):
    """Enumerate every token of one state: the μ-weighted mean of the per-token terms is exactly
    KL(π_θ‖π_ref) computed from the two distributions, for μ = π_ref and tempered μ; every term
    is ≥ 0 and all are 0 when π_θ = π_ref."""
    g = torch.Generator().manual_seed(3)
    z_ref = torch.randn(7, generator=g, dtype=torch.float64)
    z_pi = z_ref + 0.5 * torch.randn(7, generator=g, dtype=torch.float64)
    ref, pi, mu = (torch.log_softmax(z, 0) for z in (z_ref, z_pi, z_ref / tau))
    exact = float((pi.exp() * (pi - ref)).sum())
    mask = torch.ones(1, 1)
    terms = [
        float(K.kl_estimate(pi[a].view(1, 1), ref[a].view(1, 1), mask, mu[a].view(1, 1)))
        for a in range(7)
    ]
    assert min(terms) >= 0
    assert sum(mu[a].exp() * t for a, t in enumerate(terms)) == pytest.approx(exact, rel=1e-10)
    same = K.kl_estimate(ref.view(1, 7), ref.view(1, 7), torch.ones(1, 7), mu.view(1, 7))
    assert float(same) == 0.0
    assert float(K.kl_estimate(pi.view(1, 7), ref.view(1, 7), torch.zeros(1, 7))) == 0.0


# ------------------------------------------------------------------------------ fused LM head


def _head_case(n=37, d=6, v=11, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    if n >= 2:
        y[0], y[1] = 0, v - 1  # the first and the last vocabulary entry
    return h, w, b, y


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_linear_logprobs_equals_the_materialised_head(tau, monkeypatch):
    """Against log_softmax of the full logits, with row chunks of 4 rows (37 rows: 10 chunks,
    the last one short) so that the chunking itself is exercised."""
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 4 * 11)
    h, w, b, y = _head_case()
    fused = K.linear_logprobs(h, w, y, b, temperature=tau)
    naive_lp = torch.log_softmax((h @ w.T + b) / tau, -1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(fused, naive_lp, rtol=0, atol=1e-12)
    gf = torch.autograd.grad(fused.sum(), (h, w, b))
    gn = torch.autograd.grad(naive_lp.sum(), (h, w, b))
    for a, c in zip(gf, gn):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)


def test_linear_logprobs_gradcheck_float64(monkeypatch):
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 3 * 5)
    h, w, b, y = _head_case(n=7, d=3, v=5, seed=1)
    f = lambda h, w, b: K.linear_logprobs(h, w, y, b, temperature=1.3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (h, w, b))


def test_linear_logprobs_no_rows_and_no_bias():
    h, w, _, y = _head_case(n=0)
    out = K.linear_logprobs(h, w, y)
    assert out.shape == (0,)
    gh, gw = torch.autograd.grad(out.sum(), (h, w))
    assert gh.shape == h.shape and not gw.any()
    h, w, _, y = _head_case(n=5)
    expected = torch.log_softmax(h @ w.T, -1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(K.linear_logprobs(h, w, y), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="must be"):
        K.linear_logprobs(h[None], w, y[None])


def test_linear_logprobs_in_bfloat16_matches_a_bfloat16_head():
    """``dtype=bfloat16``: the product in bf16, the reduction in float32 — what a bf16 head
    (or autocast) followed by gather_logprobs computes."""
    h, w, b, y = _head_case(n=16, d=32, v=64, dtype=torch.float32)
    fused = K.linear_logprobs(h, w, y, b, dtype=torch.bfloat16)
    logits = h.bfloat16() @ w.bfloat16().T + b.bfloat16()
    torch.testing.assert_close(fused, K.gather_logprobs(logits, y), rtol=0, atol=1e-6)
    assert fused.dtype == torch.float32
