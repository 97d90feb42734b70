"""rewards.token_rewards and process_rewards: the boundary rules of potential-based shaping,
against rewards written out by hand (one response, a few boundaries)."""

from __future__ import annotations

import pytest

from dqo_tutorial.errors import DataError
from dqo_tutorial.rewards import process_rewards, token_rewards


def _row(n_response: int, boundaries, phis, *, terminal: bool, reward: float = 1.0) -> dict:
    """A sampled row with a 2-token prompt and ``n_response`` response tokens."""
    return {
        "input_ids": [7] * (2 + n_response),
        "action_mask": [0, 0] + [1] * n_response,
        "reward": reward,
        "terminal": terminal,
        "step_boundaries": list(boundaries),
        "step_phi": list(phis),
        "phi_start": 0.5,
    }


def test_a_cut_response_keeps_its_last_potential_with_three_boundaries():
    """Cut after 6 tokens, boundaries at h = 1, 3, 4 with Φ = 0.75, 0.25, 1.0 (Φ(s_1) = 0.5):
    α = 0.5 gives α·ΔΦ on the boundary tokens and 0 on the last one (Φ_end = the last Φ = 1.0).
    Kills ``pairs[-1]`` → ``pairs[1]`` (the second Φ, 0.25, would put α·(0.25 − 1.0) = −0.375 on
    the last token): with two boundaries the two agree, so only three tell them apart."""
    row = _row(6, [1, 3, 4], [0.75, 0.25, 1.0], terminal=False)
    assert token_rewards(row, 0.5) == [0.0, 0.0, 0.125, 0.0, -0.25, 0.375, 0.0, 0.0]


def test_a_cut_response_with_one_boundary():
    """One boundary (h = 2, Φ = 0.25): −0.125 on token 2, nothing at the cut (Φ_end = 0.25).
    Kills ``pairs[-1]`` → ``pairs[1]`` (an IndexError with one boundary)."""
    row = _row(3, [2], [0.25], terminal=False)
    assert token_rewards(row, 0.5) == [0.0, 0.0, 0.0, -0.125, 0.0]


def test_a_terminal_response_ends_at_potential_zero():
    """EOS after 4 tokens, boundaries 1, 2, 3 (Φ = 1, 0, 1): Φ_end = 0, outcome R = 1 added."""
    row = _row(4, [1, 2, 3], [1.0, 0.0, 1.0], terminal=True)
    assert token_rewards(row, 0.5) == [0.0, 0.0, 0.25, -0.5, 0.5, -0.5 + 1.0]


def test_a_boundary_at_h_zero_is_refused():
    """h counts generated tokens: h = 0 is the prompt state s_1, whose Φ is ``phi_start``; a
    boundary there would put its shaping on index −1, the last token. Kills ``1 <= h`` →
    ``0 <= h``."""
    with pytest.raises(DataError, match="strictly increasing within 1..3"):
        process_rewards(4, [(0, 0.25)], 1.0, 0.5, 0.0)
    with pytest.raises(DataError, match="strictly increasing"):
        token_rewards(_row(4, [0, 2], [0.25, 0.5], terminal=True), 1.0)


@pytest.mark.parametrize("terminal", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_a_response_of_no_token_is_the_packages_error(alpha, terminal):
    """A row with no response token has no action to reward: the package's DataError in one
    line, not an IndexError from ``shaped[-1]``."""
    with pytest.raises(DataError, match="no response token") as err:
        token_rewards(_row(0, [], [], terminal=terminal), alpha)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="at least one token"):
        process_rewards(0, [], 0.5, 0.5, 0.0)


def test_a_one_token_response_is_rewarded():
    """The shortest response, EOS alone: the outcome on its one action, and α-shaping
    α(0 − Φ(s_1)) there. Kills ``length < 1`` → ``length <= 1`` (one token is a response)."""
    assert token_rewards(_row(1, [], [], terminal=True), 0.0) == [0.0, 0.0, 1.0]
    assert token_rewards(_row(1, [], [], terminal=True), 0.5) == [0.0, 0.0, -0.25 + 1.0]
