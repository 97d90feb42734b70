"""Our DPO loss against TRL's ``DPOTrainer`` on identical token ids: loss values and gradients.

TRL builds its own batch (its tokenisation, its collator: chosen rows first, then rejected rows,
right-padded, with a ``completion_mask``) and computes its loss through its fused LM head. We
feed exactly those token ids to our one log-prob path (:func:`per_token_logprobs`) on the policy
and on a frozen copy of the reference, sum over the completion tokens and apply
:func:`dpo_loss`, and also run the project trainer's own :func:`compute_losses` ("dpo" with stored
per-token reference log-probs). Both must give TRL's number, and the same gradient.

The policy is a perturbed copy of the reference, so the loss is not log 2. Both of TRL's
reference modes are covered: a live ``ref_model`` and ``precompute_ref_log_probs=True`` (where
TRL's stored sequence log-probs are checked against ours too). Everything is offline: a tiny
model and tokenizer built in code, an in-memory dataset, telemetry off.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from dqo_tutorial.collate import tokenize_example  # noqa: E402
from dqo_tutorial.kernels import dpo_loss, masked_sum  # noqa: E402
from dqo_tutorial.modeling import per_token_logprobs  # noqa: E402
from dqo_tutorial.train import TrainConfig, compute_losses  # noqa: E402

# Raw-text prompts (TRL appends the EOS text to each completion). The last two pairs merge
# across the prompt/completion boundary (" 1" + "2" -> " 12"), on both sides of the pair.
PROMPTS = [
    "Question: 3 + 4 =",
    "Question: 12 times 2 is",
    "Question: 5 - 1 =",
    "Question: Tom has 1",
    "Answer: 1",
]
CHOSEN = [" 7", " 24, because 12 + 12 = 24", " 4", "2 apples.\n#### 12", "2"]
REJECTED = [" 8", " 14", " 6 or so", "5 apples.\n#### 15", "3"]

LOSS_TOL = 1e-5

# TRL 1.16 still calls the pre-rename `is_gradient_checkpointing` of transformers 5.x.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No telemetry ping (trainer construction queues one to the Hub: this is the documented
    opt-out), and the global RNGs that the trainer's ``set_seed`` reseeds are restored after."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # set_seed reseeds numpy's legacy global generator, so that is the state to restore
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)  # noqa: NPY002


def perturbed(model: torch.nn.Module, scale: float = 4.0, seed: int = 2) -> torch.nn.Module:
    """A copy of ``model`` plus Gaussian noise of ``scale`` × each tensor's std on every weight.

    A random tiny model is nearly uniform, so small noise barely moves the margins; at this scale
    the chosen-minus-rejected log-ratio margins are of order 1 and the loss is far from log 2."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.std().clamp(min=0.02) * torch.randn(p.shape, generator=g))
    return out


def make_trainer(policy, ref_model, tokenizer, beta: float, precompute: bool, out_dir):
    from trl import DPOConfig, DPOTrainer

    kwargs = dict(
        output_dir=str(out_dir),
        report_to=[],
        beta=beta,
        loss_type=["sigmoid"],
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast, even on a CPU
        max_length=None,  # no truncation: the whole sequences, as ours
        per_device_train_batch_size=len(PROMPTS),
        precompute_ref_log_probs=precompute,
        dataloader_num_workers=0,
    )
    # TRL turns activation checkpointing on by default; transformers >= 5.x renamed the field.
    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    ckpt = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    kwargs[ckpt] = False
    data = datasets.Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    return DPOTrainer(
        model=policy,
        ref_model=ref_model,  # always given: without it TRL would load the model id from the hub
        args=DPOConfig(**kwargs),
        train_dataset=data,
        processing_class=tokenizer,
    )


def trl_batch(trainer) -> dict[str, torch.Tensor]:
    """All pairs of TRL's processed dataset, collated by TRL's own collator, on its device."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return trainer._prepare_inputs(trainer.data_collator(rows))


def param_grads(loss: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named])
    return {n: g for (n, _), g in zip(named, grads)}


@pytest.mark.parametrize("precompute", [False, True], ids=["live-ref", "precomputed-ref"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_and_gradients_match_trl(tiny_tok, tiny_model, tmp_path, beta, precompute):
    ref = tiny_model
    policy = perturbed(ref)
    # Our own copies, taken before TRL patches the forward of the models it is given.
    ours_policy, ours_ref = copy.deepcopy(policy), copy.deepcopy(ref).requires_grad_(False)
    trainer = make_trainer(policy, copy.deepcopy(ref), tiny_tok, beta, precompute, tmp_path)

    batch = trl_batch(trainer)
    trl_loss = trainer.compute_loss(trainer.model, batch)

    ids, att = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"].bool()
    n_pairs = ids.shape[0] // 2
    assert n_pairs == len(PROMPTS)
    logps = per_token_logprobs(ours_policy, ids, att)
    with torch.no_grad():
        ref_logps = per_token_logprobs(ours_ref, ids, att)
    seq, seq_ref = masked_sum(logps, mask, dim=1), masked_sum(ref_logps, mask, dim=1)
    if precompute:  # TRL's stored reference log-probs are ours
        torch.testing.assert_close(batch["ref_chosen_logps"], seq_ref[:n_pairs], rtol=0, atol=1e-4)
        torch.testing.assert_close(
            batch["ref_rejected_logps"], seq_ref[n_pairs:], rtol=0, atol=1e-4
        )

    # 1. the kernel: dpo_loss on the sequence sums, averaged over pairs
    kernel_loss = dpo_loss(
        seq[:n_pairs], seq[n_pairs:], seq_ref[:n_pairs], seq_ref[n_pairs:], beta
    ).mean()
    # 2. the project trainer's loss: stored per-token reference log-probs, N = number of pairs
    ours_batch = {
        "input_ids": ids,
        "attention_mask": att,
        "action_mask": mask,
        "ref_logps": ref_logps,
    }
    cfg = TrainConfig(method="dpo", beta=beta)
    train_loss, value_loss, _ = compute_losses("dpo", ours_batch, ours_policy, None, cfg, n_pairs)
    assert value_loss is None

    assert abs(trl_loss.item() - math.log(2)) > 0.01, "policy == reference: a weak comparison"
    assert abs(kernel_loss.item() - trl_loss.item()) < LOSS_TOL
    assert abs(train_loss.item() - trl_loss.item()) < LOSS_TOL

    trl_grads = param_grads(trl_loss, trainer.model)
    our_grads = param_grads(train_loss, ours_policy)
    assert trl_grads.keys() == our_grads.keys()
    scale = max(g.abs().max().item() for g in trl_grads.values())
    assert scale > 0
    for name, g in trl_grads.items():
        torch.testing.assert_close(our_grads[name], g, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_trl_tokenises_the_pairs_like_tokenize_example(tiny_tok, tiny_model, tmp_path):
    """Same ids and same completion/action mask, boundary-straddling merges included."""
    trainer = make_trainer(
        perturbed(tiny_model), copy.deepcopy(tiny_model), tiny_tok, 0.1, False, tmp_path
    )
    batch = trl_batch(trainer)
    n = len(PROMPTS)
    straddles = 0
    for i, prompt in enumerate(PROMPTS):
        for side, response in enumerate((CHOSEN[i], REJECTED[i])):
            ex = tokenize_example(tiny_tok, prompt, response, add_eos=True)
            row = i + side * n
            length = int(batch["attention_mask"][row].sum())
            assert batch["input_ids"][row, :length].tolist() == ex["input_ids"]
            assert batch["completion_mask"][row, :length].tolist() == ex["action_mask"]
            straddles += ex["straddles_boundary"]
    assert straddles >= 2  # the comparison covers merges across the boundary
