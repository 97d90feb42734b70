"""Recipes: how the package's shipped artifacts were made, as code you can rerun.

- :func:`train_toy_reference`: the toy task's π_ref (``dqo-tutorial toy-ref``; model spec
  ``"toy"`` is its output with the defaults, :data:`dqo_tutorial.toy.REFERENCE_DIR`).
- :func:`train_forks_reference`: the fork chains' π_ref (:mod:`dqo_tutorial.forks`), the toy
  π_ref taught the fork habits at every length.

An experiments-layer module: it may use everything below (the toy task, the trainer); nothing
but the command line imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from . import forks, toy
from .models import load_model_and_tokenizer
from .train import TrainConfig, train

__all__ = ["train_toy_reference", "train_forks_reference"]


def train_toy_reference(
    out_dir: str | Path,
    *,
    passes: int = 40,
    batch_size: int = 64,
    lr: float = 3e-3,
    error_rate: float = toy.SFT_ERROR_RATE,
    carry_error_rate: float = toy.SFT_CARRY_ERROR_RATE,
    seed: int = 0,
    ops: tuple[int, int] = (2, 4),
    init: str | None = None,
    max_positions: int = 128,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the toy π_ref from scratch: SFT on slip demonstrations of the train split.

    A :func:`~dqo_tutorial.toy.toy_model_config` Llama (seeded init), ``passes`` × 2,000
    demonstrations (:func:`~dqo_tutorial.toy.sft_corpus` with the two error rates), AdamW at
    ``lr`` with 5 % warm-up and cosine decay, through the project's own trainer
    (:func:`dqo_tutorial.train.train`, method ``sft``). The model and tokenizer land in
    ``out_dir/policy``; the package ships the result of the defaults as
    :data:`dqo_tutorial.toy.REFERENCE_DIR` (model spec ``"toy"``). Returns the training summary.

    ``ops``: the chain lengths of the problems (``(2, 4)``: the toy train split itself; another
    range: 2,000 train-bucket problems of those lengths). ``init``: a model spec to continue from
    instead of a fresh model (its RoPE positions then stretch to ``max_positions``) — the claims
    experiment's mixed-length π_ref is the shipped one, taught chains of 2–8 operations.
    ``max_steps``: stop after that many steps (smoke tests).
    """
    torch.manual_seed(seed)
    if init is None:
        tokenizer = toy.toy_tokenizer()
        model = LlamaForCausalLM(toy.toy_model_config(tokenizer, max_positions=max_positions))
    else:
        model, tokenizer = load_model_and_tokenizer(init, device="cpu", dtype="float32")
        model.config.max_position_embeddings = max(
            max_positions, model.config.max_position_embeddings
        )
    if tuple(ops) == (2, 4):
        problems = toy.load_toy("train")
    else:
        size, low, high = toy.SPLIT_SIZES["train"], *ops
        problems = toy.make_problems(size, seed + 1, min_ops=low, max_ops=high, split="train")
    pairs = toy.sft_corpus(
        problems, error_rate, seed, copies=passes, carry_error_rate=carry_error_rate
    )
    return _sft(model, tokenizer, pairs, out_dir, batch_size=batch_size, lr=lr, seed=seed,
                max_steps=max_steps, progress=progress)  # fmt: skip


def _sft(model: Any, tokenizer: Any, pairs: list[tuple[str, str]], out_dir: str | Path,
         *, batch_size: int, lr: float, seed: int, max_steps: int | None,
         progress: bool) -> dict[str, Any]:  # fmt: skip
    """SFT of ``model`` on ``(prompt, response)`` pairs through the project's trainer: AdamW at
    ``lr``, 5 % warm-up, cosine decay."""
    cfg = TrainConfig(
        method="sft",
        model="toy-scratch",
        task="toy",
        batch_size=batch_size,
        policy_lr=lr,
        warmup_ratio=0.05,
        lr_scheduler="cosine",
        checkpoint_every=250,
        max_steps=max_steps,
        seed=seed,
        mixed_precision="no",
    )
    rows = [{"prompt": p, "response": r} for p, r in pairs]
    return train(cfg, out_dir, policy=model, tokenizer=tokenizer, rows=rows, progress=progress)


def train_forks_reference(
    out_dir: str | Path,
    *,
    per_length: int = forks.REFERENCE_RECIPE["per_length"],
    passes: int = forks.REFERENCE_RECIPE["passes"],
    lr: float = forks.REFERENCE_RECIPE["lr"],
    batch_size: int = 64,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The fork chains' π_ref: the shipped toy π_ref (model ``"toy"``, RoPE stretched to 256
    positions) taught :func:`dqo_tutorial.forks.demonstration` on ``per_length`` train problems
    of every length 2 … 12, ``passes`` fresh demonstrations each (AdamW at ``lr``, 5 % warm-up,
    cosine decay). The model lands in ``out_dir/policy``; returns the training summary."""
    torch.manual_seed(seed)
    model, tokenizer = load_model_and_tokenizer("toy", device="cpu", dtype="float32")
    model.config.max_position_embeddings = max(256, model.config.max_position_embeddings)
    problems = forks.mixed_train_problems(forks.LENGTHS, per_length)
    pairs = forks.sft_corpus(problems, seed, copies=passes)
    return _sft(model, tokenizer, pairs, out_dir, batch_size=batch_size, lr=lr, seed=seed,
                max_steps=max_steps, progress=progress)  # fmt: skip
