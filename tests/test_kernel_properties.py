"""Property-based tests (hypothesis) of the kernels' invariants."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dqo_tutorial import kernels as K

settings.register_profile("dqo", max_examples=60, deadline=None)
settings.load_profile("dqo")


@st.composite
def rows(draw, max_t: int = 10):
    """A batch whose rows hold one contiguous action block each, at a random offset."""
    b = draw(st.integers(1, 4))
    t = draw(st.integers(2, max_t))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        n = draw(st.integers(0, t - 1))
        start = draw(st.integers(1, t - n))
        mask[i, start : start + n] = True
    mk = dict(generator=g, dtype=torch.float64)
    return dict(
        mask=mask,
        r=torch.randn(b, t, **mk),
        v=torch.randn(b, t, **mk),
        lp=-torch.rand(b, t, **mk) * 3,
        lb=-torch.rand(b, t, **mk) * 3,
        boot=torch.randn(b, **mk),
        lam=draw(st.floats(0.0, 1.0)),
    )


def shift_block(x: torch.Tensor, mask: torch.Tensor, new_start: torch.Tensor):
    """Move each row's action block to start at new_start (contents kept in order)."""
    out = torch.zeros_like(x)
    new_mask = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        cols = mask[i].nonzero().flatten()
        n = len(cols)
        s = int(new_start[i])
        out[i, s : s + n] = x[i, cols]
        new_mask[i, s : s + n] = True
    return out, new_mask


@given(rows())
def test_lambda_return_is_invariant_to_where_the_block_sits(d):
    m = d["mask"]
    t = m.shape[1]
    starts = torch.tensor([t - int(row.sum()) for row in m])  # left-padded placement
    g = K.lambda_return(d["r"], d["v"], m, d["lam"], d["boot"])
    r2, m2 = shift_block(d["r"], m, starts)
    v2, _ = shift_block(d["v"], m, starts)
    g2 = K.lambda_return(r2, v2, m2, d["lam"], d["boot"])
    torch.testing.assert_close(shift_block(g, m, starts)[0], g2)


@given(rows(), st.floats(-3, 3), st.floats(-3, 3))
def test_lambda_return_is_linear_in_rewards_values_and_bootstrap(d, a, c):
    m, lam = d["mask"], d["lam"]
    r2, v2, b2 = d["r"].flip(0), d["v"].flip(0), d["boot"].flip(0)
    lhs = K.lambda_return(a * d["r"] + c * r2, a * d["v"] + c * v2, m, lam, a * d["boot"] + c * b2)
    rhs = a * K.lambda_return(d["r"], d["v"], m, lam, d["boot"]) + c * K.lambda_return(
        r2, v2, m, lam, b2
    )
    torch.testing.assert_close(lhs, rhs)


@given(rows())
def test_lambda_one_is_reverse_cumsum_and_ignores_values(d):
    m = d["mask"]
    r = d["r"].where(m, 0.0)
    rev_cumsum = r.flip(1).cumsum(1).flip(1)
    expected = (rev_cumsum + d["boot"][:, None]).where(m, 0.0)
    torch.testing.assert_close(K.lambda_return(d["r"], d["v"], m, 1.0, d["boot"]), expected)
    torch.testing.assert_close(K.lambda_return(d["r"], d["v"] * 7 - 3, m, 1.0, d["boot"]), expected)


@given(rows(), st.sampled_from(["prefix", "sequence"]), st.floats(0.1, 5.0))
def test_importance_weights_bounds(d, mode, clip):
    m = d["mask"]
    w = K.importance_weights(d["lp"], d["lb"], m, mode, clip)
    assert (w[m] > 0).all() and (w[m] <= clip * (1 + 1e-12)).all() and (w[~m] == 0).all()
    same = K.importance_weights(d["lp"], d["lp"], m, mode, clip)
    torch.testing.assert_close(same[m], torch.full_like(same[m], min(1.0, clip)))
    if mode == "prefix":  # reaching the first action of a row needs no correction
        for i in range(m.shape[0]):
            cols = m[i].nonzero().flatten()
            if len(cols):
                assert math.isclose(float(w[i, cols[0]]), min(1.0, clip))
    else:  # one weight per sequence
        for i in range(m.shape[0]):
            vals = w[i, m[i]]
            if len(vals):
                assert torch.allclose(vals, vals[0].expand_as(vals))


@given(rows(), st.floats(0.01, 1.0))
def test_path_consistent_data_have_zero_loss_for_every_lambda(d, beta):
    """If the one-step residuals vanish (rewards built from V and the log-ratio), every
    λ-residual vanishes too, and both losses are 0, whatever λ and the IS weights."""
    m, v, lp, ref = d["mask"], d["v"], d["lp"], d["lb"]
    # choose r_h = V(s_h) + β ρ_h − V(s_{h+1}), with V(s_{H+1}) = bootstrap
    v_next = torch.zeros_like(v)
    for i in range(m.shape[0]):
        cols = m[i].nonzero().flatten().tolist()
        for k, j in enumerate(cols):
            v_next[i, j] = v[i, cols[k + 1]] if k + 1 < len(cols) else d["boot"][i]
    r = v + beta * (lp - ref) - v_next
    assert K.soft_bellman_residual(lp, ref, v, r, m, beta, d["boot"]).abs().max() < 1e-9
    pl, vl, _ = K.dqo_loss(
        lp,
        ref,
        v,
        r,
        m,
        beta=beta,
        lam=d["lam"],
        bootstrap=d["boot"],
        behavior_logps=d["lb"].flip(0),
    )
    assert pl < 1e-18 and vl < 1e-18


@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(2, 40),
    st.integers(0, 10**6),
    st.floats(-50, 50),
)
def test_gather_logprobs_normalises_and_is_shift_invariant(b, t, v, seed, shift):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 5
    every = torch.arange(v).expand(b, t, v)
    all_lp = torch.stack([K.gather_logprobs(logits, every[..., k]) for k in range(v)], -1)
    torch.testing.assert_close(all_lp.exp().sum(-1), torch.ones(b, t, dtype=torch.float64))
    tokens = torch.randint(0, v, (b, t), generator=g)
    torch.testing.assert_close(
        K.gather_logprobs(logits + shift, tokens), K.gather_logprobs(logits, tokens)
    )
