"""From (prompt, response) text to action-aligned (B, T) tensors (dqo-method.md §7).

Two steps:

1. :func:`tokenize_example` turns one prompt and one response into a single token sequence plus an
   **action mask**: 1 on the tokens the policy chose (the response, EOS included when it ended),
   0 on the prompt. For responses the model itself sampled, whose token ids are known,
   :func:`example_from_ids` keeps those exact ids instead.
2. :class:`DQOCollator` pads a list of such examples into a batch of tensors, keeping every
   per-token field (behaviour log-probs, reference log-probs, rewards, ...) aligned with
   ``input_ids`` column for column.

Why the action mask comes from one joint tokenisation with character offsets, and never from
``len(tokenizer(prompt))``: BPE merges inside a pre-token, and the prompt/response boundary can fall
inside one. With a prompt ending in ``" 1"`` and a response starting with ``"2 apples"``, the joint
text contains ``" 12"``, which a BPE vocabulary may hold as *one* token. Tokenising the prompt alone
gives one more token than the joint sequence has before the response, so the length-based mask is
shifted: it marks response characters as prompt (or prompt tokens as actions) — silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Number
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

__all__ = ["tokenize_example", "example_from_ids", "DQOCollator"]


_EMPTY_PROMPT = (
    "empty prompt: {what}, so the first response token would sit in column 0, which no logits "
    "score (dqo-method.md §7: column 0 is never an action); give every example at least one "
    "prompt token (e.g. format it with the task's prompt template)"
)


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, *, add_eos: bool = False
) -> dict[str, Any]:
    r"""Tokenise ``prompt + response`` once and mark the response tokens as actions.

    ``prompt`` must already be in its final form (chat template applied, generation prompt added):
    it is tokenised with ``add_special_tokens=False`` so nothing is inserted. Token ``j`` is an
    action iff its character span ``[start, end)`` contains a response character, i.e.
    ``end > len(prompt)`` (a zero-width token counts as an action iff ``start >= len(prompt)``).

    **Tokens that straddle the boundary.** When a merge crosses the boundary (prompt ``"... 1"`` +
    response ``"2 ..."`` → token ``" 12"``), that token starts in the prompt and ends in the
    response. We count it as an **action**: every response character then lies inside some action,
    so the loss sees the whole response, and the state before it, s_h, is the prompt minus the
    characters the token swallowed (still a token prefix of the joint sequence, which is what the
    model is conditioned on). The alternative — calling it prompt — would drop response characters
    from the objective. Either way the sequence differs from what a model that first read the whole
    prompt could have generated, so the example is flagged with ``straddles_boundary=True`` and
    ``decode(action tokens)`` then equals the response *plus the swallowed prompt tail*. With chat
    templates the prompt ends in ``"<|im_start|>assistant\n"`` (a special token and a newline) and
    straddles essentially never happen; they matter for raw-text prompts such as ``"Answer: "``.
    Tokenizers whose offsets are *trimmed* (leading space excluded from the span) can hide a
    straddle; it is still flagged, because prompt characters are then left covered by no prompt
    token.

    Args:
        tokenizer: a *fast* tokenizer (offsets need the Rust ``tokenizers`` backend).
        prompt: the formatted prompt x.
        response: the response text a_1 … a_H (without EOS).
        add_eos: append ``tokenizer.eos_token_id`` as the last action: the response ended, the final
            state is terminal (V = 0). Leave False for a response cut off by the length limit.

    Returns:
        ``{"input_ids": list[int], "action_mask": list[int], "terminal": bool,
        "straddles_boundary": bool}``. ``terminal`` is True when the last action is EOS (added here
        or already present as text in ``response``).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenize_example needs a fast tokenizer (return_offsets_mapping)")
    enc = tokenizer(prompt + response, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    boundary = len(prompt)
    mask = [int(end > boundary or start >= boundary) for start, end in enc["offset_mapping"]]
    n_prompt = mask.index(1) if 1 in mask else len(mask)
    if n_prompt == 0:
        raise ValueError(_EMPTY_PROMPT.format(what=f"prompt {prompt!r} gives no prompt token"))
    if any(m == 0 for m in mask[n_prompt:]):  # offsets are monotone for every sane tokenizer
        raise ValueError("action tokens are not one contiguous block at the end of the sequence")
    straddles = False
    if n_prompt < len(mask) and boundary > 0:
        first_start = enc["offset_mapping"][n_prompt][0]
        prompt_end = enc["offset_mapping"][n_prompt - 1][1] if n_prompt else 0
        straddles = first_start < boundary or prompt_end < boundary
    eos = tokenizer.eos_token_id
    if add_eos:
        if eos is None:
            raise ValueError("add_eos=True but the tokenizer has no eos_token_id")
        ids.append(eos)
        mask.append(1)
    terminal = bool(mask) and mask[-1] == 1 and eos is not None and ids[-1] == eos
    return {
        "input_ids": ids,
        "action_mask": mask,
        "terminal": terminal,
        "straddles_boundary": straddles,
    }


def example_from_ids(
    prompt_ids: Sequence[int], response_ids: Sequence[int], *, eos_token_id: int | None = None
) -> dict[str, Any]:
    """An example from token ids, e.g. a sampled response: no re-tokenisation, no boundary issue.

    Use this for self-generated data: the behaviour log-probs μ(a_h|s_h) were recorded for exactly
    these ids, and re-tokenising the decoded text could yield different ones. An empty prompt is
    refused (ValueError): its first response token would be column 0, which is never an action.
    ``terminal`` is True when the response ends with ``eos_token_id``.
    """
    if len(prompt_ids) == 0:
        raise ValueError(_EMPTY_PROMPT.format(what="the prompt has no token"))
    ids = [int(t) for t in prompt_ids] + [int(t) for t in response_ids]
    terminal = bool(response_ids) and eos_token_id is not None and response_ids[-1] == eos_token_id
    return {
        "input_ids": ids,
        "action_mask": [0] * len(prompt_ids) + [1] * len(response_ids),
        "terminal": terminal,
        "straddles_boundary": False,
    }


def _is_sequence(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 1
    if isinstance(value, (str, bytes)):
        return False
    return isinstance(value, Sequence) or (hasattr(value, "ndim") and value.ndim == 1)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0
    return isinstance(value, Number) or (hasattr(value, "ndim") and value.ndim == 0)


def _scalar_tensor(values: list[Any]) -> torch.Tensor:
    items = [v.item() if hasattr(v, "item") else v for v in values]
    if all(isinstance(v, bool) for v in items):
        return torch.tensor(items, dtype=torch.bool)
    if all(isinstance(v, Integral) and not isinstance(v, bool) for v in items):
        return torch.tensor(items, dtype=torch.long)
    return torch.tensor([float(v) for v in items], dtype=torch.float32)


def _pad_tensors(
    values: list[torch.Tensor], width: int, fill: float | int, dtype: torch.dtype, side: str
) -> torch.Tensor:
    """1-D tensors padded with ``fill`` on ``side`` into one (B, ``width``) tensor of ``dtype``."""
    out = torch.nn.utils.rnn.pad_sequence(
        [v.to(dtype) for v in values], batch_first=True, padding_value=fill, padding_side=side
    )
    extra = width - out.shape[1]  # pad_to_multiple_of
    return torch.nn.functional.pad(out, (0, extra) if side == "right" else (extra, 0), value=fill)


@dataclass
class DQOCollator:
    """Pad examples into action-aligned (B, T) tensors.

    Each example is a mapping with ``input_ids`` and ``action_mask`` (from :func:`tokenize_example`
    or :func:`example_from_ids`) plus any of:

    - per-token fields (lists / 1-D tensors as long as ``input_ids``, already action-aligned:
      entry j belongs to token j), e.g. ``behavior_logps``, ``ref_logps``, ``rewards`` →
      (B, T) float32, padded with 0.0. An optional ``attention_mask`` is kept as given (long);
    - scalar fields (bool / int / float), e.g. ``reward``, ``terminal`` → (B,) tensors of dtype
      bool, long or float32 (float32 as soon as one value is a float);
    - anything else (strings such as the prompt or the gold answer, None) → passed through as a
      list of length B.

    Fields may be lists or tensors; the trainer tensorises its examples once
    (:func:`~dqo_tutorial.train.tensorise_examples`), and a per-token field whose values are all
    tensors is padded by one ``pad_sequence`` call instead of a copy per example.

    Output: ``input_ids`` (B, T) long padded with ``pad_token_id``; ``attention_mask`` (B, T) long,
    1 on real tokens; ``action_mask`` (B, T) bool, False on prompt and pad; the fields above.
    ``padding_side`` chooses where the pad goes ("right": training default; "left": what
    generation needs). Position ids are *not* produced: the model code derives them from
    ``attention_mask`` so that both sides give identical log-probs. ``pad_to_multiple_of`` rounds
    T up (tensor-core friendly shapes, fewer recompilations).

    Raises:
        ValueError: empty batch, a field missing from some example, or a per-token field whose
            length differs from ``input_ids`` (the message names the field and the example index).
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError("pad_to_multiple_of must be a positive integer or None")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        keys = list(examples[0].keys())
        for required in ("input_ids", "action_mask"):
            if required not in keys:
                raise ValueError(f"example 0 has no {required!r} field")
        for i, ex in enumerate(examples):
            if set(ex.keys()) != set(keys):
                diff = sorted(set(keys) ^ set(ex.keys()))
                raise ValueError(f"example {i}: fields {diff} differ from example 0's fields")

        lengths = [len(ex["input_ids"]) for ex in examples]
        T = max(lengths)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            T = -(-T // m) * m
        B = len(examples)

        def rows(i: int) -> slice:  # the columns holding example i's real tokens
            right = self.padding_side == "right"
            return slice(0, lengths[i]) if right else slice(T - lengths[i], T)

        def padded(name: str, fill: float | int, dtype: torch.dtype) -> torch.Tensor:
            values = [ex[name] for ex in examples]
            for i, value in enumerate(values):
                if not _is_sequence(value) or len(value) != lengths[i]:
                    got = len(value) if _is_sequence(value) else type(value).__name__
                    raise ValueError(
                        f"example {i}: per-token field {name!r} has length {got}, "
                        f"but input_ids has length {lengths[i]}"
                    )
            if all(isinstance(v, torch.Tensor) for v in values):  # pre-tensorised: one call
                return _pad_tensors(values, T, fill, dtype, self.padding_side)
            out = torch.full((B, T), fill, dtype=dtype)
            for i, value in enumerate(values):
                out[i, rows(i)] = torch.as_tensor(value).to(dtype)
            return out

        batch: dict[str, Any] = {"input_ids": padded("input_ids", self.pad_token_id, torch.long)}
        if "attention_mask" in keys:
            batch["attention_mask"] = padded("attention_mask", 0, torch.long)
        else:
            n, columns = torch.tensor(lengths)[:, None], torch.arange(T)[None]
            real = columns < n if self.padding_side == "right" else columns >= T - n
            batch["attention_mask"] = real.long()
        batch["action_mask"] = padded("action_mask", 0, torch.long).bool()

        for name in keys:
            if name in batch:
                continue
            first = examples[0][name]
            if _is_sequence(first):
                batch[name] = padded(name, 0.0, torch.float32)
            elif _is_scalar(first):
                values = [ex[name] for ex in examples]
                for i, v in enumerate(values):
                    if not _is_scalar(v):
                        raise ValueError(f"example {i}: field {name!r} is not a scalar")
                batch[name] = _scalar_tensor(values)
            else:
                batch[name] = [ex[name] for ex in examples]
        return batch
