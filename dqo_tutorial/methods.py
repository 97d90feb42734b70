r"""The training methods: one unit each, in one registry the trainer reads.

A :class:`Method` says everything the trainer needs to know about a method, so adding one is one
new unit (and its tests), never an edit of the trainer:

==================  ==========================================================================
field               meaning
==================  ==========================================================================
``examples``        ``(rows, ctx) → list of dicts`` the collator pads (:class:`ExampleContext`)
``count``           N of one collated micro-batch: the denominator of the window's mean loss
``loss``            ``(batch, fwd, cfg, n) → (policy_loss, value_loss or None, stats)``; ``fwd``
                    carries log π_θ of the actions (one log-prob path for every method) and V_φ
``value_model``     trains a V_φ beside the policy (and may warm it up first)
``reference``       log π_ref (and log μ) are re-scored under the training numerics before
                    step 1 (:func:`dqo_tutorial.train.score_reference`)
``paired``          examples are ``{"chosen", "rejected"}``: collated as one batch, chosen first
``gold``            trains on the task's gold solutions instead of a sampled dataset
==================  ==========================================================================

The five of the comparison (dqo-method.md §9): ``sft`` and ``rft`` (likelihood of gold solutions /
of the correct samples), ``dpo`` (pairs), ``dro`` (one action: the response) and ``dqo`` (every
token an action). Register another with :func:`register`; ``TrainConfig(method=…)`` then accepts
its name (tests/test_train.py registers a throwaway one and trains it).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .collate import tokenize_example
from .configs import METHODS, register_method_name, unregister_method_name
from .kernels import dpo_loss, dqo_loss, dro_loss, kl_estimate, masked_sum
from .rewards import outcome, token_rewards

__all__ = [
    "Method",
    "ExampleContext",
    "Forward",
    "REGISTRY",
    "register",
    "unregister",
    "get_method",
    "dpo_pairs",
    "fixed_critic",
    "trains_value_model",
]


class ExampleContext(NamedTuple):
    """What building a method's examples may use besides the rows."""

    tokenizer: Any = None
    process_reward_coef: float = 0.0
    pairs_per_prompt: int = 4
    seed: int = 0


class Forward(NamedTuple):
    """One micro-batch through the models: ``logps`` (B, T) log π_θ(a_h|s_h), action-aligned,
    with the graph the step needs; ``values(mask=None)`` runs V_φ (a :class:`~dqo_tutorial
    .modeling.ValueOutput`) over the batch, or over the tokens of ``mask`` only (DRO: the
    prompt) — only methods with a value model call it."""

    logps: Tensor
    values: Callable[[], Any]


Loss = Callable[[Mapping[str, Tensor], Forward, Any, Tensor], tuple[Tensor, Tensor | None, dict]]


@dataclass(frozen=True)
class Method:
    """One training method (module table)."""

    name: str
    examples: Callable[[Sequence[Mapping[str, Any]] | Any, ExampleContext], list[dict[str, Any]]]
    count: Callable[[Mapping[str, Any]], Tensor]
    loss: Loss
    value_model: bool = False
    reference: bool = False
    paired: bool = False
    gold: bool = False


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (replacing one of the same name); returns it."""
    REGISTRY[method.name] = method
    register_method_name(method.name)
    return method


def unregister(name: str) -> None:
    """Remove a registered method (the comparison's five stay)."""
    if name not in METHODS:
        REGISTRY.pop(name, None)
        unregister_method_name(name)


def trains_value_model(cfg: Any) -> bool:
    """Whether a run of ``cfg`` trains a V_φ: its method has one and its critic is learned."""
    return get_method(cfg.method).value_model and getattr(cfg, "critic", "learned") == "learned"


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(REGISTRY)}") from None


# --------------------------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------------------------


def _sampled(r: Mapping[str, Any], full: bool, alpha: float) -> dict[str, Any]:
    """A sampled row as an example: its ids as sampled (no re-tokenisation); ``full`` adds
    log π_ref, log μ, the per-token rewards (outcome + α-shaping), r(x, y) and terminal."""
    ex = {"input_ids": list(r["input_ids"]), "action_mask": list(r["action_mask"])}
    if full:
        ex |= {
            "ref_logps": list(r["ref_logps"]),
            "behavior_logps": list(r["behavior_logps"]),
            "rewards": token_rewards(r, alpha),
            "reward": float(r["reward"]),
            "terminal": bool(r["terminal"]),
        }
        if "oracle_values" in r:  # the fixed critics' column (dqo_tutorial.oracle)
            ex |= {"oracle_values": list(r["oracle_values"]),
                   "oracle_bootstrap": float(r["oracle_bootstrap"])}  # fmt: skip
    return ex


def _gold_examples(rows: Any, ctx: ExampleContext) -> list[dict[str, Any]]:
    """``{"prompt", "response"}`` texts tokenised jointly with EOS."""
    if ctx.tokenizer is None:
        raise ValueError("the examples of gold solutions need the tokenizer")
    out = []
    for r in rows:
        ex = tokenize_example(ctx.tokenizer, r["prompt"], r["response"], add_eos=True)
        out.append({"input_ids": ex["input_ids"], "action_mask": ex["action_mask"]})
    return out


def _column(rows: Sequence[Mapping[str, Any]] | Any, name: str) -> list[Any]:
    """One column of a 🤗 Dataset (read at once) or of a list of dicts."""
    return list(rows[name]) if hasattr(rows, "column_names") else [r[name] for r in rows]


def dpo_pairs(
    rows: Sequence[Mapping[str, Any]] | Any, pairs_per_prompt: int = 4, seed: int = 0
) -> list[tuple[int, int]]:
    """DPO's (correct, wrong) pairs as row indices ``(chosen, rejected)``, prompt by prompt.

    Correct and wrong are :func:`~dqo_tutorial.rewards.outcome` 1 and 0; a length-cut response
    has no outcome and is in no pair. Per prompt the correct and the wrong responses are
    shuffled (one seeded ``random.Random`` for the whole call, prompts in increasing
    ``prompt_index``) and zipped: each response is used at most once, up to
    ``pairs_per_prompt`` pairs. A prompt without both kinds gives no pair.
    """
    by_prompt: dict[int, tuple[list[int], list[int]]] = {}
    columns = zip(_column(rows, "prompt_index"), _column(rows, "reward"), _column(rows, "terminal"))
    for i, (p, reward, terminal) in enumerate(columns):
        r = outcome({"reward": reward, "terminal": terminal})
        pos, neg = by_prompt.setdefault(int(p), ([], []))
        if r is not None:  # a cut response is in no pair
            (pos if r == 1.0 else neg).append(i)
    rng = random.Random(seed)
    pairs = []
    for p in sorted(by_prompt):
        pos, neg = by_prompt[p]
        rng.shuffle(pos)
        rng.shuffle(neg)
        pairs += list(zip(pos, neg))[:pairs_per_prompt]
    return pairs


def _dpo_examples(rows: Any, ctx: ExampleContext) -> list[dict[str, Any]]:
    alpha = ctx.process_reward_coef
    return [
        {"chosen": _sampled(rows[c], True, alpha), "rejected": _sampled(rows[r], True, alpha)}
        for c, r in dpo_pairs(rows, ctx.pairs_per_prompt, ctx.seed)
    ]


# --------------------------------------------------------------------------------------------
# counts and losses
# --------------------------------------------------------------------------------------------


def _tokens(batch: Mapping[str, Any]) -> Tensor:
    return batch["action_mask"].sum()


def _rows(batch: Mapping[str, Any]) -> Tensor:
    return torch.tensor(batch["input_ids"].shape[0])


def _pairs(batch: Mapping[str, Any]) -> Tensor:
    return torch.tensor(batch["input_ids"].shape[0] // 2)


def _nll_loss(batch: Mapping[str, Tensor], fwd: Forward, cfg: Any, n: Tensor) -> tuple:
    """SFT / RFT: −Σ log π_θ(a_h|s_h) over the action tokens, / N."""
    mask = batch["action_mask"]
    nll = -masked_sum(fwd.logps, mask)
    return nll / n, None, {"nll": nll.detach() / mask.sum().clamp(min=1)}


def _ratio_stats(batch: Mapping[str, Tensor], logps: Tensor) -> dict[str, Tensor]:
    """E_μ[ρ], max |ρ| and the KL estimate (kernels.kl_estimate) of the data's tokens."""
    mask, ref = batch["action_mask"], batch["ref_logps"]
    with torch.no_grad():
        rho = torch.where(mask.bool(), logps - ref, 0.0)
        return {
            "log_ratio_mean": masked_sum(rho, mask) / mask.sum().clamp(min=1),  # E_μ[ρ]
            "log_ratio_abs_max": rho.abs().max(),
            "kl_theta_ref": kl_estimate(logps, ref, mask, batch.get("behavior_logps")),
        }


def _dpo(batch: Mapping[str, Tensor], fwd: Forward, cfg: Any, n: Tensor) -> tuple:
    """DPO on (chosen, rejected) halves of the batch: Σ of :func:`~dqo_tutorial.kernels.dpo_loss`
    over the pairs, / N pairs."""
    stats = _ratio_stats(batch, fwd.logps)
    mask, ref = batch["action_mask"], batch["ref_logps"]
    seq, seq_ref = masked_sum(fwd.logps, mask, dim=1), masked_sum(ref, mask, dim=1)
    b = batch["input_ids"].shape[0] // 2
    losses = dpo_loss(seq[:b], seq[b:], seq_ref[:b], seq_ref[b:], cfg.beta)
    with torch.no_grad():
        margin = (seq[:b] - seq_ref[:b]) - (seq[b:] - seq_ref[b:])
        stats["dpo_margin"] = margin.mean()
        stats["dpo_accuracy"] = (margin > 0).float().mean()
    return losses.sum() / n, None, stats


def _dro(batch: Mapping[str, Tensor], fwd: Forward, cfg: Any, n: Tensor) -> tuple:
    """DRO: :func:`~dqo_tutorial.kernels.dro_loss` with V(x) = V_φ(s_1), the first action's
    state."""
    stats = _ratio_stats(batch, fwd.logps)
    mask, ref = batch["action_mask"], batch["ref_logps"]
    # V(x) = V(s_1) reads the last prompt token: run V_φ over the prompt only (with packing the
    # response tokens then cost nothing); its final value is V(x)
    prompt = batch["attention_mask"].bool() & (mask.long().cumsum(dim=1) == 0)
    v_x = fwd.values(prompt.long()).final
    seq, seq_ref = masked_sum(fwd.logps, mask, dim=1), masked_sum(ref, mask, dim=1)
    pl, vl = dro_loss(seq, seq_ref, v_x, batch["reward"], cfg.beta, num_items=n)
    with torch.no_grad():
        stats["value_error"] = (v_x - batch["reward"]).abs().mean()
    return pl, vl, stats


def fixed_critic(
    batch: Mapping[str, Tensor], critic: str, offset: float = 0.0
) -> tuple[Tensor, Tensor]:
    r"""``(values (B, T), bootstrap (B,))`` of a critic read from the batch, not learned
    (:data:`~dqo_tutorial.configs.CRITICS`): ``"oracle"`` is the ``oracle_values`` column
    V*(s_h) and ``oracle_bootstrap``; ``"flat"`` is V*(s_1), the value at each row's first
    action, at every action and as the bootstrap of a cut row,

    .. math::  V_{\rm flat}(s_h) = V^*(s_1) \quad \forall h

    and ``"oracle_dead_flat"`` the oracle but V*(s_1) where V*(s_h) = 0 (a dead state: on the
    fork chains every state after the first wrong step; the control of docs/forks.md §3,
    does the flat critic's push on an error's continuation explain its edge?),

    .. math::  V(s_h) = V^*(s_h) \text{ if } V^*(s_h) > 0 \text{ else } V^*(s_1)

    (padding-side free: the first action is found from the mask). Terminal rows bootstrap 0.
    ``offset`` b is added to every value and to a cut row's bootstrap, V(s_h) + b: the
    critic-bias control (a biased baseline adds −β b Σ_h w_h ∇log π_θ(a_h|s_h) to the policy's
    update, w_h the IS weights — the unlikelihood of every sampled token when b > 0)."""
    if "oracle_values" not in batch:
        raise ValueError(
            f"critic={critic!r} reads the dataset's oracle_values column, which these rows lack: "
            "add it with dqo_tutorial.oracle.with_oracle_values"
        )
    mask, v = batch["action_mask"].bool(), batch["oracle_values"].float()
    first = mask.long().argmax(dim=1, keepdim=True)  # the first action's column
    flat, boot = v.gather(1, first)[:, 0], batch["oracle_bootstrap"].float()
    if critic == "flat":
        v, boot = torch.where(mask, flat[:, None], 0.0), flat
    elif critic == "oracle_dead_flat":  # V* = 0: no continuation succeeds (a dead state)
        v = torch.where(mask & (v <= 0), flat[:, None], v)
        boot = torch.where(boot <= 0, flat, boot)
    v, boot = torch.where(mask, v + offset, 0.0), boot + offset
    return v, torch.where(batch["terminal"], torch.zeros_like(boot), boot)


def _dqo(batch: Mapping[str, Tensor], fwd: Forward, cfg: Any, n: Tensor) -> tuple:
    """DQO: :func:`~dqo_tutorial.kernels.dqo_loss`, bootstrapping V_φ(s_{H+1}) for cut rows;
    with a fixed critic (``cfg.critic`` oracle / flat: :func:`fixed_critic`) V is read from the
    batch and no value loss is returned. With ``is_normalize`` the weights here are
    unnormalised and ``stats["is_weight_sum"]`` carries Σ w: the trainer normalises over the
    whole window."""
    stats = _ratio_stats(batch, fwd.logps)
    if getattr(cfg, "critic", "learned") == "learned":
        v = fwd.values()
        values = v.values
        bootstrap = torch.where(batch["terminal"], torch.zeros_like(v.final), v.final)
    else:
        values, bootstrap = fixed_critic(batch, cfg.critic, getattr(cfg, "critic_offset", 0.0))
        values, bootstrap = values.to(fwd.logps.dtype), bootstrap.to(fwd.logps.dtype)
    pl, vl, dqo_stats = dqo_loss(
        fwd.logps,
        batch["ref_logps"],
        values,
        batch["rewards"],
        batch["action_mask"],
        beta=cfg.beta,
        lam=cfg.lam,
        bootstrap=bootstrap,
        behavior_logps=batch["behavior_logps"],
        is_mode=cfg.is_mode,
        is_clip=cfg.is_clip,
        is_normalize=False,  # self-normalisation spans the whole window: see the trainer
        detach_target=cfg.detach_target,
        num_items=n,
    )
    stats |= {k: t for k, t in dqo_stats.items() if k not in ("log_ratio_mean", "num_tokens")}
    if cfg.is_normalize and "is_weight_mean" in dqo_stats:
        stats["is_weight_sum"] = dqo_stats["is_weight_mean"] * dqo_stats["num_tokens"]
    return pl, (vl if getattr(cfg, "critic", "learned") == "learned" else None), stats


def _rows_with(keep: Callable[[Mapping[str, Any]], bool], full: bool) -> Callable:
    def build(rows: Any, ctx: ExampleContext) -> list[dict[str, Any]]:
        return [_sampled(r, full, ctx.process_reward_coef) for r in rows if keep(r)]

    return build


for _method in (
    Method("sft", _gold_examples, _tokens, _nll_loss, gold=True),
    # a length-cut response is never a positive (rewards.outcome: one rule)
    Method("rft", _rows_with(lambda r: outcome(r) == 1.0, False), _tokens, _nll_loss),
    Method("dpo", _dpo_examples, _pairs, _dpo, reference=True, paired=True),
    # a cut response has no r(x, y) to regress on
    Method(
        "dro", _rows_with(lambda r: outcome(r) is not None, True), _rows, _dro,
        value_model=True, reference=True,
    ),
    # every row: a cut one is bootstrapped
    Method("dqo", _rows_with(lambda r: True, True), _tokens, _dqo, value_model=True,
           reference=True),
):  # fmt: skip
    register(_method)
assert tuple(REGISTRY) == METHODS  # the comparison's five, in its order
