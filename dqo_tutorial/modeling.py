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
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .kernels import gather_logprobs, linear_logprobs

_log = logging.getLogger(__name__)

__all__ = [
    "position_ids_from_mask",
    "align_to_actions",
    "has_state",
    "last_token_index",
    "Packing",
    "pack_rows",
    "per_token_logprobs",
    "fusable_head",
    "disable_dropout",
    "ValueOutput",
    "ValueHead",
    "ValueModel",
    "value_model_for",
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


@dataclass(frozen=True)
class Packing:
    """The real tokens of a padded (B, T) batch packed into R ≤ B rows of the same width T.

    Rows go first-fit, longest first; within a packed row each sequence keeps its own position
    ids 0, 1, …, which is how transformers recognises packed sequences and keeps them from
    attending to each other — **only** with ``attention_mask=None`` and no cache
    (``use_cache=False``; with a cache the rows attend across boundaries). Trailing free slots
    count as one more (ignored) sequence. ``index`` (B, T) holds each real token's flat
    position in the packed (R·T) layout, −1 at pads."""

    input_ids: Tensor  # (R, T)
    position_ids: Tensor  # (R, T)
    index: Tensor  # (B, T)

    def to(self, device: torch.device | str) -> Packing:
        return Packing(*(t.to(device) for t in (self.input_ids, self.position_ids, self.index)))

    def unpack(self, packed: Tensor) -> Tensor:
        """(R, T, …) per packed position → (B, T, …) per original position (zeros at pads)."""
        flat = packed.flatten(0, 1)
        out = flat[self.index.clamp(min=0)]
        keep = (self.index >= 0).view(*self.index.shape, *([1] * (flat.dim() - 1)))
        return torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))


def pack_rows(input_ids: Tensor, attention_mask: Tensor) -> Packing:
    """Pack a padded batch (left or right padding) into as few rows of width T as first-fit
    decreasing finds: the attention stays (rows × T²), the pads mostly go."""
    b, t = input_ids.shape
    lengths = attention_mask.sum(1).tolist()
    free: list[int] = []  # free slots per packed row
    place: dict[int, tuple[int, int]] = {}  # sequence → (packed row, start column)
    for i in sorted(range(b), key=lambda i: -lengths[i]):
        if not lengths[i]:
            continue
        r = next((r for r, f in enumerate(free) if f >= lengths[i]), len(free))
        if r == len(free):
            free.append(t)
        place[i] = (r, t - free[r])
        free[r] -= lengths[i]
    rows = max(1, len(free))
    ids = input_ids.new_zeros(rows, t)
    positions = torch.arange(t, device=input_ids.device).repeat(rows, 1)  # free slots: 0, 1, …
    index = torch.full((b, t), -1, dtype=torch.long, device=input_ids.device)
    real = attention_mask.bool()
    for i, (r, start) in place.items():
        cols = real[i].nonzero().squeeze(1)
        span = torch.arange(start, start + len(cols), device=input_ids.device)
        ids[r, span] = input_ids[i, cols]
        positions[r, span] = torch.arange(len(cols), device=input_ids.device)
        index[i, cols] = r * t + span
    for r, f in enumerate(free):  # free tail: its own sequence, positions from 0
        positions[r, t - f :] = torch.arange(f, device=input_ids.device)
    return Packing(ids, positions, index)


def _packing_of(
    input_ids: Tensor, attention_mask: Tensor, packed: bool | Packing
) -> Packing | None:
    if isinstance(packed, Packing):
        return packed
    return pack_rows(input_ids, attention_mask) if packed else None


def _forward_inputs(input_ids: Tensor, attention_mask: Tensor, packing: Packing | None) -> dict:
    """Keyword arguments of a causal LM / trunk forward over a padded or a packed batch."""
    if packing is not None:
        return {"input_ids": packing.input_ids, "position_ids": packing.position_ids,
                "attention_mask": None, "use_cache": False}  # fmt: skip
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids_from_mask(attention_mask), "use_cache": False}  # fmt: skip


def per_token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    temperature: float = 1.0,
    *,
    output_hidden: bool = False,
    score_mask: Tensor | None = None,
    fused: bool | None = None,
    packed: bool | Packing = False,
    law: Callable[[Tensor], Tensor] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Action-aligned log π(a_j | s_j) of a causal LM over a whole padded batch.

    .. math::  \ell_{b,j} = \log\operatorname{softmax}\bigl(z_{b,j-1} / \tau\bigr)[x_{b,j}]

    ===============  =======  ==================================================
    argument         shape    meaning
    ===============  =======  ==================================================
    input_ids        (B, T)   prompt + response token ids (any padding side)
    attention_mask   (B, T)   1 on real tokens, 0 on pads
    temperature      float    τ; τ ≠ 1 gives the tempered sampling law μ
    score_mask       (B, T)   optional: score only these columns (e.g. the action mask)
    returns          (B, T)   float32; 0 at pads, at each row's first real token and
                              outside ``score_mask``
    ===============  =======  ==================================================

    **Fused head** (``fused`` None = where the model allows it, see :func:`fusable_head`): the
    model runs with no logits at all (``logits_to_keep`` empty) and, inside its forward (so
    under its autocast, tested), the final hidden states of the scored
    positions go through :func:`~dqo_tutorial.kernels.linear_logprobs` — no (B, T, V) logits,
    only the scored positions. ``fused=False``: the logits are materialised in the model's
    dtype and reduced in float32 by :func:`~dqo_tutorial.kernels.gather_logprobs`. Both give
    the same numbers (tests/test_modeling.py).

    ``packed=True`` runs the model on :func:`pack_rows` of the batch (fewer rows, almost no
    pads) and scatters every output back to (B, T): the same numbers as the padded batch; a
    :class:`Packing` made beforehand (on the CPU, at collation: no device sync) is used as is.

    ``law``: log-probs under another law of the same logits — a function of the (N, V) float32
    logits z/τ of the N scored positions returning (N, V) log-probs (e.g. the top-p nucleus,
    :func:`~dqo_tutorial.decoding.sampling_law`); always materialised, in row chunks.

    ``output_hidden=True`` also returns the last hidden state (B, T, D) of the same forward pass,
    for a :class:`ValueHead` on the policy's trunk (the shared-trunk value option).
    """
    packing = _packing_of(input_ids, attention_mask, packed)
    inputs = _forward_inputs(input_ids, attention_mask, packing)
    scored = has_state(attention_mask)
    if score_mask is not None:
        scored = scored & score_mask.bool()
    parts = fusable_head(model) if fused is not False and law is None else None
    if fused and parts is None:
        raise ValueError(f"{type(model).__name__} has no head the fused log-prob path can use")
    if parts is not None:
        logps, hidden = _fused_logprobs(model, parts, inputs, packing, input_ids, scored,
                                        temperature)  # fmt: skip
        return (logps, hidden) if output_hidden else logps
    out = model(**inputs, output_hidden_states=output_hidden)
    logits = out.logits if packing is None else packing.unpack(out.logits)
    logits = logits[:, :-1]  # position j − 1 scores token j
    if temperature != 1.0:
        logits = logits / temperature
    if law is not None:
        logps = _law_logprobs(logits, input_ids, scored, law)
    else:
        logps = gather_logprobs(logits, input_ids[:, 1:])
        logps = torch.cat([torch.zeros_like(logps[:, :1]), logps], dim=1)
    logps = torch.where(scored, logps, 0.0)
    if not output_hidden:
        return logps
    hidden = out.hidden_states[-1]
    return logps, hidden if packing is None else packing.unpack(hidden)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of ``model`` off, in place: ``nn.Dropout`` modules get p = 0 and the float
    attributes attention layers read their dropout rate from (``attention_dropout`` and kin,
    used by the SDPA / eager kernels in train mode) are set to 0. Returns ``model``."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name in ("attention_dropout", "attn_dropout", "dropout", "hidden_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    return model


# config fields that rescale or cap the logits after the head (Gemma 2, Cohere, Granite and its
# MoE variants, HyperCLOVAX, Falcon-H1); 1 (or unset) means no rescaling
_LOGIT_RESCALING = (
    "final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier"
)  # fmt: skip


def _law_logprobs(logits: Tensor, input_ids: Tensor, scored: Tensor, law: Callable) -> Tensor:
    """(B, T) ``law(z)[x_j]`` at the scored columns j (z: the logits at j − 1, float32), 0
    elsewhere; ``law`` sees at most 1,024 positions at a time (a (1024, V) float32 block)."""
    rows, cols = scored.nonzero(as_tuple=True)
    out = torch.zeros(scored.shape, dtype=torch.float32, device=logits.device)
    for s in range(0, len(rows), 1024):
        r, c = rows[s : s + 1024], cols[s : s + 1024]
        lp = law(logits[r, c - 1].float())
        out[r, c] = lp.gather(-1, input_ids[r, c][:, None])[:, 0]
    return out


def fusable_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """``(trunk, head)`` of a Hugging Face causal LM whose logits are exactly ``head(trunk(x))``
    and whose forward takes ``logits_to_keep``; None for anything else, which then takes the
    materialised path. Two gates: a config field that rescales the logits
    (:data:`_LOGIT_RESCALING` set to a value other than 1), and — for what no field announces
    (a scaling inside ``forward``, a hook) — :func:`_head_is_plain`, one probe forward per model,
    remembered on the model and logged once when it fails. A DDP wrapper is looked through.
    (Under FSDP the head's weight is read inside the forward, where FSDP has gathered it — not
    tested here: no multi-GPU machine.)"""
    inner = getattr(model, "module", model)
    get_head = getattr(inner, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    trunk = getattr(inner, "base_model", None)
    if not isinstance(head, nn.Linear) or trunk is None or trunk is inner:
        return None
    config = getattr(inner, "config", None)
    if any(getattr(config, k, None) not in (None, 0, 1) for k in _LOGIT_RESCALING):
        return None
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        return None
    if "_dqo_plain_head" not in inner.__dict__:
        inner._dqo_plain_head = _head_is_plain(inner, trunk, head)
    return (trunk, head) if inner._dqo_plain_head else None


@torch.no_grad()
def _head_is_plain(model: nn.Module, trunk: nn.Module, head: nn.Linear) -> bool:
    """Whether ``log_softmax(model(x).logits) = log_softmax(W h + b)`` with h the trunk's last
    hidden state, on one 4-token row in eval mode without autocast (the same op on the same
    tensor: equal to float rounding, where a logit scale of 1.01 already moves log p by ~1e-2)."""
    found: dict[str, Tensor] = {}

    def keep(_module: nn.Module, _args: tuple, output: object) -> None:
        found["h"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    ids = (torch.arange(1, 5, device=head.weight.device) % head.out_features)[None]
    hook, training = trunk.register_forward_hook(keep), model.training
    try:
        model.eval()
        with torch.autocast(head.weight.device.type, enabled=False):
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                        logits_to_keep=1)  # fmt: skip
            mine = nn.functional.linear(found["h"][:, -1:], head.weight, head.bias)
    finally:
        hook.remove()
        model.train(training)
    off = (out.logits.float().log_softmax(-1) - mine.float().log_softmax(-1)).abs().max().item()
    if off > 1e-4:
        name = type(model).__name__
        _log.warning("%s: logits are not lm_head(h) (max |log p difference| %.3g on a probe "
                     "row): scoring through its materialised logits", name, off)  # fmt: skip
    return off <= 1e-4


def _fused_logprobs(model, parts, inputs, packing, input_ids, scored, temperature):
    """The fused path of :func:`per_token_logprobs`: a forward hook on the trunk scores the
    ``scored`` columns j from the hidden state at j − 1 while the model's forward runs."""
    trunk, head = parts
    rows, cols = scored.nonzero(as_tuple=True)
    found: dict[str, Tensor] = {}

    def score(_module: nn.Module, _args: tuple, output: object) -> None:
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        hidden = hidden if packing is None else packing.unpack(hidden)
        device = hidden.device.type
        dtype = (
            torch.get_autocast_dtype(device)
            if torch.is_autocast_enabled(device)
            else head.weight.dtype
        )
        found["hidden"] = hidden
        found["logps"] = linear_logprobs(hidden[rows, cols - 1], head.weight, input_ids[rows, cols],
                                         head.bias, temperature, dtype)  # fmt: skip

    hook = trunk.register_forward_hook(score)
    try:
        model(**inputs, logits_to_keep=torch.zeros(0, dtype=torch.long, device=input_ids.device))
    finally:
        hook.remove()
    logps = found["logps"]
    full = torch.zeros(scored.shape, dtype=logps.dtype, device=logps.device)
    return full.index_put((rows, cols), logps), found["hidden"]


@dataclass
class ValueOutput:
    """Values of a batch: ``values`` (B, T) action-aligned V_φ(s_j), ``final`` (B,) V_φ(s_{H+1})."""

    values: Tensor
    final: Tensor


class ValueHead(nn.Module):
    """Scalar head V_φ(s) = w·f(h(s)) + c on a trunk's last hidden state, action-aligned.

    f is the identity (``width`` 0, default) or a wider layer f(h) = SiLU(W h + b) with
    ``width`` units — a higher-capacity critic on the same trunk. w and c start at 0, so V_φ
    starts at 0 either way (early residuals are the rewards). Used on its own trunk
    (:class:`ValueModel`) or on the policy's (shared-trunk option). With a shared trunk
    ``detach_input=True`` keeps the value loss out of the policy's weights.
    """

    def __init__(self, hidden_size: int, detach_input: bool = False, width: int = 0):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(hidden_size, width), nn.SiLU()) if width else None
        self.proj = nn.Linear(width or hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.detach_input = detach_input

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> ValueOutput:
        """hidden (B, T, D) → ValueOutput(values (B, T) float32, final (B,) float32)."""
        if self.detach_input:
            hidden = hidden.detach()
        hidden = hidden.to(self.proj.weight.dtype)
        if self.hidden is not None:
            hidden = self.hidden(hidden)
        per_pos = self.proj(hidden).squeeze(-1).float()  # V(s_{i+1})
        values = torch.where(has_state(attention_mask), align_to_actions(per_pos), 0.0)
        final = per_pos.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)
        return ValueOutput(values=values, final=final)


def _deepen(trunk: nn.Module, extra_layers: int) -> None:
    """Append ``extra_layers`` decoder layers to a Llama-style trunk (``trunk.layers``), each a
    copy of the last one whose two residual-branch outputs (``self_attn.o_proj``,
    ``mlp.down_proj``) are zeroed: the deeper trunk computes exactly what the copy did, and the
    new layers learn from there (zero-initialised residual branches)."""
    layers = getattr(trunk, "layers", None)
    last = layers[-1] if layers else None
    if last is None or not hasattr(last, "self_attn") or not hasattr(last, "mlp"):
        raise ValueError("value_extra_layers needs a Llama-style trunk (trunk.layers[i].self_attn)")
    for _ in range(extra_layers):
        layer = copy.deepcopy(last)
        for out in (layer.self_attn.o_proj, layer.mlp.down_proj):
            nn.init.zeros_(out.weight)
            if out.bias is not None:
                nn.init.zeros_(out.bias)
        layer.self_attn.layer_idx = len(layers)
        layers.append(layer)
    trunk.config.num_hidden_layers = len(layers)
    types = getattr(trunk.config, "layer_types", None)
    if types:
        trunk.config.layer_types = list(types) + [types[-1]] * extra_layers


class ValueModel(nn.Module):
    """V_φ as a separate network: a copy of a causal LM's trunk plus a :class:`ValueHead`.

    ``ValueModel.from_causal_lm(lm)`` deep-copies the transformer trunk of ``lm`` (its
    ``base_model``, without the LM head), so the value model starts from the same pretrained
    features and never shares parameters with the policy (method §8 default). A bigger critic:
    ``extra_layers`` more decoder layers on the copy (:func:`_deepen`: starting as the copy) and
    a ``head_width``-unit hidden layer in the head.
    """

    def __init__(self, trunk: nn.Module, hidden_size: int, head_width: int = 0):
        super().__init__()
        self.trunk = trunk
        self.head = ValueHead(hidden_size, width=head_width)

    @classmethod
    def from_causal_lm(
        cls, lm: nn.Module, *, extra_layers: int = 0, head_width: int = 0
    ) -> ValueModel:
        trunk = copy.deepcopy(lm.base_model)
        if extra_layers:
            _deepen(trunk, extra_layers)
        param = next(trunk.parameters())
        model = cls(trunk, lm.config.hidden_size, head_width)
        model.head.to(device=param.device, dtype=param.dtype)
        return model

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, packed: bool | Packing = False
    ) -> ValueOutput:
        """Values of a padded batch; ``packed``: run the trunk on :func:`pack_rows` of it (the
        same values, fewer rows), or on a :class:`Packing` made beforehand (at collation)."""
        packing = _packing_of(input_ids, attention_mask, packed)
        hidden = self.trunk(**_forward_inputs(input_ids, attention_mask, packing)).last_hidden_state
        hidden = hidden if packing is None else packing.unpack(hidden)
        return self.head(hidden, attention_mask)


def value_model_for(lm: nn.Module, kind: str, *, extra_layers: int = 0, head_width: int = 0):
    """The V_φ a training configuration asks for (``TrainConfig.value_model``,
    ``value_extra_layers``, ``value_head_width``), in ``lm``'s dtype: a :class:`ValueModel`
    (``"separate"``) or a :class:`ValueHead` on ``lm``'s detached hidden states (``"shared"``).
    The trainer builds it and the explorer rebuilds it to load the saved weights."""
    if kind == "separate":
        return ValueModel.from_causal_lm(lm, extra_layers=extra_layers, head_width=head_width)
    if extra_layers:
        raise ValueError(
            "value_extra_layers needs value_model: separate (a shared head has no trunk)"
        )
    head = ValueHead(lm.config.hidden_size, detach_input=True, width=head_width)
    return head.to(next(lm.parameters()).dtype)
