"""The registered methods' loss units (methods._nll_loss, _dpo, _dro, _dqo and their shared
statistics) on a batch small enough to compute by hand: every loss and logged number written
out with plain floats, no kernel called by the reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dqo_tutorial.methods import Forward, get_method

MASK = [[0, 1, 1, 1], [0, 0, 1, 1]]
LOGPS = [[0.0, -0.5, -1.0, -0.25], [0.0, 0.0, -2.0, -0.75]]
REF = [[0.0, -0.75, -0.5, -0.5], [0.0, 0.0, -1.5, -1.0]]
BEHAVIOR = [[0.0, -1.0, -0.75, -0.5], [0.0, 0.0, -2.25, -0.5]]
ACTIONS = [(b, t) for b in range(2) for t in range(4) if MASK[b][t]]


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _batch(**extra) -> dict:
    return {
        "input_ids": torch.ones(2, 4, dtype=torch.long),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
        "action_mask": torch.tensor(MASK),
        "ref_logps": _t(REF),
        "behavior_logps": _t(BEHAVIOR),
        **extra,
    }


def _close(got, expected, key=""):
    assert float(got) == pytest.approx(expected, abs=1e-9), key


def test_nll_loss_sums_the_action_logps_over_n():
    """SFT/RFT: −Σ log π over the five action tokens, / N = 4 (the window's count); the logged
    nll is the per-token mean (/ 5)."""
    total = -sum(LOGPS[b][t] for b, t in ACTIONS)
    loss, value_loss, stats = get_method("sft").loss(_batch(), Forward(_t(LOGPS), None), None,
                                                     torch.tensor(4.0))  # fmt: skip
    _close(loss, total / 4)
    _close(stats["nll"], total / 5)
    assert value_loss is None


def _ratio_expected() -> dict[str, float]:
    rho = [LOGPS[b][t] - REF[b][t] for b, t in ACTIONS]
    u = [math.exp(REF[b][t] - BEHAVIOR[b][t]) for b, t in ACTIONS]
    kl = [w * (math.exp(x) * x - math.exp(x) + 1) for x, w in zip(rho, u)]
    return {
        "log_ratio_mean": sum(rho) / 5,
        "log_ratio_abs_max": max(abs(x) for x in rho),
        "kl_theta_ref": sum(kl) / 5,
    }


def test_dpo_pairs_the_halves_and_logs_margin_and_accuracy():
    """Row 0 chosen, row 1 rejected: margin = (Σρ of row 0) − (Σρ of row 1); loss
    −log σ(β·margin) / N pairs; the shared ratio statistics by hand."""
    beta = 0.5
    seq_rho = [sum(LOGPS[b][t] - REF[b][t] for t in range(4) if MASK[b][t]) for b in range(2)]
    margin = seq_rho[0] - seq_rho[1]
    cfg = SimpleNamespace(beta=beta)
    loss, _, stats = get_method("dpo").loss(_batch(), Forward(_t(LOGPS), None), cfg,
                                            torch.tensor(2.0))  # fmt: skip
    _close(loss, math.log1p(math.exp(-beta * margin)) / 2)
    _close(stats["dpo_margin"], margin)
    _close(stats["dpo_accuracy"], float(margin > 0))
    for key, value in _ratio_expected().items():
        _close(stats[key], value, key)


def test_dro_regresses_the_reward_on_the_value_of_the_prompt():
    """V(x) is read from a value pass over the prompt tokens only (attention ∧ before the first
    action); L = Σ ½(r − V(x) − β Σρ)² / N, value error mean |V(x) − r|."""
    beta, v_x, reward = 0.25, [0.5, -0.25], [1.0, 0.0]
    seen = []

    def values(mask=None):
        seen.append(mask.tolist())
        return SimpleNamespace(final=_t(v_x))

    seq_rho = [sum(LOGPS[b][t] - REF[b][t] for t in range(4) if MASK[b][t]) for b in range(2)]
    residual = [reward[b] - v_x[b] - beta * seq_rho[b] for b in range(2)]
    batch, fwd = _batch(reward=_t(reward)), Forward(_t(LOGPS), values)
    cfg, n = SimpleNamespace(beta=beta), torch.tensor(3.0)
    pl, vl, stats = get_method("dro").loss(batch, fwd, cfg, n)
    assert seen == [[[1, 0, 0, 0], [1, 1, 0, 0]]]
    _close(pl, sum(0.5 * x * x for x in residual) / 3)
    _close(vl, sum(0.5 * x * x for x in residual) / 3)
    _close(stats["value_error"], (abs(v_x[0] - 1.0) + abs(v_x[1] - 0.0)) / 2)


def _dqo_cfg(**kw) -> SimpleNamespace:
    base = dict(beta=0.5, lam=1.0, is_mode="none", is_clip=2.0, is_normalize=False,
                detach_target=True)  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


VALUES = [[0.0, 0.25, -0.5, 0.75], [0.0, 0.0, 0.5, 0.25]]
REWARDS = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
FINAL = [0.3, 0.9]  # row 0 cut: bootstrapped from V(s_{H+1}); row 1 terminal: 0, not 0.9


def _dqo_run(cfg, n=5.0):
    batch = _batch(rewards=_t(REWARDS), terminal=torch.tensor([False, True]))
    fwd = Forward(_t(LOGPS), lambda mask=None: SimpleNamespace(values=_t(VALUES),
                                                               final=_t(FINAL)))  # fmt: skip
    return get_method("dqo").loss(batch, fwd, cfg, torch.tensor(n))


def test_dqo_bootstraps_cut_rows_only():
    """λ = 1, no IS: T_{h+1} = Σ_{l>h} (r_l − βρ_l) + b with b = V(s_{H+1}) = 0.3 for the cut
    row and 0 for the terminal one; δ_h = V_h + βρ_h − r_h − T_{h+1}; both losses Σ ½δ² / N."""
    beta = 0.5
    deltas = []
    for b, boot in ((0, FINAL[0]), (1, 0.0)):
        cols = [t for t in range(4) if MASK[b][t]]
        shaped = {t: REWARDS[b][t] - beta * (LOGPS[b][t] - REF[b][t]) for t in cols}
        for t in cols:
            target = sum(shaped[s] for s in cols if s > t) + boot
            rho = LOGPS[b][t] - REF[b][t]
            deltas.append(VALUES[b][t] + beta * rho - REWARDS[b][t] - target)
    pl, vl, stats = _dqo_run(_dqo_cfg())
    _close(pl, sum(0.5 * d * d for d in deltas) / 5)
    _close(vl, sum(0.5 * d * d for d in deltas) / 5)
    _close(stats["delta_mean"], sum(deltas) / 5)
    for key, value in _ratio_expected().items():
        _close(stats[key], value, key)
    assert "num_tokens" not in stats and "is_weight_sum" not in stats


def test_dqo_with_self_normalised_weights_logs_their_sum():
    """Prefix weights exp(Σ_{l<h} (log π − log μ)), clip 2: row 0 → 1, e^0.5, e^0.25; row 1 →
    1, e^0.25. With ``is_normalize`` the unnormalised sum is logged for the trainer."""
    weights = [1.0, math.exp(0.5), math.exp(0.25), 1.0, math.exp(0.25)]
    _, _, stats = _dqo_run(_dqo_cfg(is_mode="prefix", is_normalize=True))
    _close(stats["is_weight_sum"], sum(weights))
    _close(stats["is_weight_mean"], sum(weights) / 5)
    _, _, plain = _dqo_run(_dqo_cfg(is_mode="prefix"))
    assert "is_weight_sum" not in plain


def test_nll_of_a_single_action_token():
    """One action token: the logged nll is its −log π itself (÷ 1). Kills the count's clamp
    ``min=1`` → ``min=2``."""
    batch = _batch(action_mask=torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]]))
    _, _, stats = get_method("rft").loss(batch, Forward(_t(LOGPS), None), None, torch.tensor(1.0))
    _close(stats["nll"], 0.25)


def test_dpo_accuracy_is_the_share_of_strictly_positive_margins():
    """Two pairs (rows 0, 1 chosen; 2, 3 rejected): margins 1.0 and exactly 0 (a pair of twins),
    so accuracy 1/2 and the margin mean 1/2. Kills ``margin > 0`` → ``>= 0`` (a tie counted a
    win) and the accuracy's ``.mean()`` → ``.sum()``."""
    mask = torch.tensor([[0, 1], [0, 1], [0, 1], [0, 1]])
    logps = _t([[0.0, -1.0], [0.0, -2.0], [0.0, -3.0], [0.0, -2.0]])
    ref = _t([[0.0, -1.5], [0.0, -1.0], [0.0, -2.5], [0.0, -1.0]])
    batch = {"input_ids": torch.ones(4, 2, dtype=torch.long), "action_mask": mask,
             "ref_logps": ref}  # fmt: skip
    # margins: (−1 + 1.5) − (−3 + 2.5) = 1.0 and (−2 + 1) − (−2 + 1) = 0
    _, _, stats = get_method("dpo").loss(batch, Forward(logps, None), SimpleNamespace(beta=0.1),
                                         torch.tensor(2.0))  # fmt: skip
    _close(stats["dpo_margin"], 0.5)
    _close(stats["dpo_accuracy"], 0.5)
