r"""Model-level plumbing: action-aligned log-probs of a causal LM and the value model V_φ.

Everything a loss needs from a model goes through two functions, so there is one log-prob path:

- :func:`per_token_logprobs` — log π(a_j|s_j) at column j, read from the logits at position j − 1;
- :class:`ValueModel` / :class:`ValueHead` — V_φ(s_j) at column j, read from the hidden state at
  position j − 1, plus V_φ of the final state (the bootstrap b of a length-cut response).

Both build position ids from the attention mask, so a left-padded and a right-padded copy of the
same batch give the same numbers (method §7).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .kernels import gather_logprobs

__all__ = [
    "position_ids_from_mask",
    "align_to_actions",
    "has_state",
    "last_token_index",
    "per_token_logprobs",
    "ValueOutput",
    "ValueHead",
    "ValueModel",
]


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions 0, 1, … counted over real tokens only (pads get 0), (B, T) long."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def align_to_actions(per_position: Tensor) -> Tensor:
    """Shift a per-position (B, T, …) tensor one column right: column j ← position j − 1.

    Column 0 (never an action) is filled with zeros. This is the single place where the
    "state before token j is read at position j − 1" convention is implemented.
    """
    pad = torch.zeros_like(per_position[:, :1])
    return torch.cat([pad, per_position[:, :-1]], dim=1)


def has_state(attention_mask: Tensor) -> Tensor:
    """(B, T) bool: token j is real and has a real prefix s_j before it (could be an action).

    False at pads and at each row's first real token — with left padding the position before
    it is a pad, so anything read there is meaningless; 0 is written there instead.
    """
    return attention_mask.bool() & (position_ids_from_mask(attention_mask) > 0)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of each row's last real token (left or right padding), (B,) long."""
    t = attention_mask.shape[1]
    idx = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), idx, -1).max(dim=1).values.clamp(min=0)


def per_token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    temperature: float = 1.0,
    *,
    output_hidden: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Action-aligned log π(a_j | s_j) of a causal LM over a whole padded batch.

    .. math::  \ell_{b,j} = \log\operatorname{softmax}\bigl(z_{b,j-1} / \tau\bigr)[x_{b,j}]

    ===============  =======  ==================================================
    argument         shape    meaning
    ===============  =======  ==================================================
    input_ids        (B, T)   prompt + response token ids (any padding side)
    attention_mask   (B, T)   1 on real tokens, 0 on pads
    temperature      float    τ; τ ≠ 1 gives the tempered sampling law μ
    returns          (B, T)   float32; 0 at pads and at each row's first real token
    ===============  =======  ==================================================

    Only the logits are materialised in the model's dtype; the log-softmax reduction runs in
    float32 through :func:`~dqo_tutorial.kernels.gather_logprobs`. Multiply by the action mask
    (or use :func:`~dqo_tutorial.kernels.masked_sum`) to keep response tokens only.

    ``output_hidden=True`` also returns the last hidden state (B, T, D) of the same forward pass,
    for a :class:`ValueHead` on the policy's trunk (the shared-trunk value option).
    """
    positions = position_ids_from_mask(attention_mask)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=False,
        output_hidden_states=output_hidden,
    )
    logits = out.logits[:, :-1]  # position j − 1 scores token j
    if temperature != 1.0:
        logits = logits / temperature
    logps = gather_logprobs(logits, input_ids[:, 1:])
    logps = torch.cat([torch.zeros_like(logps[:, :1]), logps], dim=1)
    logps = torch.where(has_state(attention_mask), logps, 0.0)
    return (logps, out.hidden_states[-1]) if output_hidden else logps


@dataclass
class ValueOutput:
    """Values of a batch: ``values`` (B, T) action-aligned V_φ(s_j), ``final`` (B,) V_φ(s_{H+1})."""

    values: Tensor
    final: Tensor


class ValueHead(nn.Module):
    """Scalar head V_φ(s) = w·h(s) + c on a trunk's last hidden state, action-aligned.

    Used on its own trunk (:class:`ValueModel`) or on the policy's (shared-trunk option). With a
    shared trunk ``detach_input=True`` (default) keeps the value loss out of the policy's weights.
    """

    def __init__(self, hidden_size: int, detach_input: bool = False):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)  # V_φ starts at 0: early residuals are the rewards
        nn.init.zeros_(self.proj.bias)
        self.detach_input = detach_input

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> ValueOutput:
        """hidden (B, T, D) → ValueOutput(values (B, T) float32, final (B,) float32)."""
        if self.detach_input:
            hidden = hidden.detach()
        per_pos = self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1).float()  # V(s_{i+1})
        values = torch.where(has_state(attention_mask), align_to_actions(per_pos), 0.0)
        final = per_pos.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)
        return ValueOutput(values=values, final=final)


class ValueModel(nn.Module):
    """V_φ as a separate network: a copy of a causal LM's trunk plus a :class:`ValueHead`.

    ``ValueModel.from_causal_lm(lm)`` deep-copies the transformer trunk of ``lm`` (its
    ``base_model``, without the LM head), so the value model starts from the same pretrained
    features and never shares parameters with the policy (method §8 default).
    """

    def __init__(self, trunk: nn.Module, hidden_size: int):
        super().__init__()
        self.trunk = trunk
        self.head = ValueHead(hidden_size)

    @classmethod
    def from_causal_lm(cls, lm: nn.Module) -> ValueModel:
        trunk = copy.deepcopy(lm.base_model)
        head_dtype = next(trunk.parameters()).dtype
        model = cls(trunk, lm.config.hidden_size)
        model.head.to(device=next(trunk.parameters()).device, dtype=head_dtype)
        return model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> ValueOutput:
        hidden = self.trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state
        return self.head(hidden, attention_mask)
