"""Model plumbing against prefix-by-prefix loops on tiny models built from config (no download)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from dqo_tutorial.kernels import dqo_loss
from dqo_tutorial.modeling import (
    ValueHead,
    ValueModel,
    last_token_index,
    per_token_logprobs,
    value_model_for,
)

VOCAB = 61
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
"""The tiny decoder's sizes, shared by the Llama and the other families below."""


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


SEQS = [[5, 9, 3, 7, 11, 2], [4, 8, 15], [1, 2, 3, 4, 5, 6, 7, 8], [42]]


def pad_batch(seqs, side: str, pad_id: int = 0):
    t = max(map(len, seqs))
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    att = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(t - len(s), t) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s)
        att[i, sl] = 1
    return ids, att


def unpad(x: torch.Tensor, att: torch.Tensor) -> list[list[float]]:
    return [row[a.bool()].tolist() for row, a in zip(x, att)]


def prefix_loop_logprobs(model, seq, temperature=1.0):
    """log π(x_j | x_<j) by running the model on every prefix separately (no padding at all)."""
    out = [0.0]
    with torch.no_grad():
        for j in range(1, len(seq)):
            logits = model(torch.tensor([seq[:j]])).logits[0, -1] / temperature
            out.append(torch.log_softmax(logits.double(), -1)[seq[j]].item())
    return out


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_per_token_logprobs_left_right_and_prefix_loop(make):
    model = make()
    with torch.no_grad():
        right = per_token_logprobs(model, *pad_batch(SEQS, "right"))
        left = per_token_logprobs(model, *pad_batch(SEQS, "left"))
    r_rows = unpad(right, pad_batch(SEQS, "right")[1])
    l_rows = unpad(left, pad_batch(SEQS, "left")[1])
    for seq, r_row, l_row in zip(SEQS, r_rows, l_rows):
        ref = prefix_loop_logprobs(model, seq)
        torch.testing.assert_close(torch.tensor(r_row), torch.tensor(l_row), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            torch.tensor(r_row), torch.tensor(ref, dtype=torch.float32), atol=1e-5, rtol=0
        )
    assert right.dtype == torch.float32
    ids, att = pad_batch(SEQS, "right")
    assert (right[att == 0] == 0).all() and (right[:, 0] == 0).all()


def test_per_token_logprobs_temperature_is_the_tempered_law():
    model = tiny_llama(1)
    ids, att = pad_batch(SEQS, "left")
    with torch.no_grad():
        ours = per_token_logprobs(model, ids, att, temperature=0.7)
    for seq, row in zip(SEQS, unpad(ours, att)):
        torch.testing.assert_close(
            torch.tensor(row),
            torch.tensor(prefix_loop_logprobs(model, seq, 0.7), dtype=torch.float32),
            atol=1e-5,
            rtol=0,
        )


def prefix_loop_values(vm: ValueModel, seq):
    """V(s_j) for j = 1..len: the head on the last hidden state of the prefix seq[:j]."""
    vals = [0.0]
    with torch.no_grad():
        for j in range(1, len(seq) + 1):
            h = vm.trunk(input_ids=torch.tensor([seq[:j]])).last_hidden_state[0, -1]
            vals.append(vm.head.proj(h).item())
    return vals[:-1], vals[-1]  # action-aligned values, then V(s_{H+1}) of the full sequence


def test_value_model_alignment_and_final_value_any_padding():
    lm = tiny_llama(2)
    vm = ValueModel.from_causal_lm(lm)
    torch.nn.init.normal_(vm.head.proj.weight, std=0.5)  # a non-zero head, so values differ
    for side in ("left", "right"):
        ids, att = pad_batch(SEQS, side)
        with torch.no_grad():
            out = vm(ids, att)
        assert out.values.shape == ids.shape and out.final.shape == (len(SEQS),)
        for i, (seq, row) in enumerate(zip(SEQS, unpad(out.values, att))):
            ref, final = prefix_loop_values(vm, seq)
            torch.testing.assert_close(torch.tensor(row), torch.tensor(ref), atol=1e-5, rtol=0)
            assert abs(out.final[i].item() - final) < 1e-5


def test_value_model_starts_at_zero_and_shares_no_parameters():
    lm = tiny_llama(3)
    vm = ValueModel.from_causal_lm(lm)
    ids, att = pad_batch(SEQS, "right")
    assert (vm(ids, att).values == 0).all()
    lm_ptrs = {p.data_ptr() for p in lm.parameters()}
    assert not lm_ptrs & {p.data_ptr() for p in vm.parameters()}


def test_a_bigger_critic_starts_as_the_copy_and_then_learns_with_its_new_weights():
    """Critic capacity (claims): ``extra_layers`` decoder layers whose residual branches start
    at zero compute exactly what the trunk copy computes; a wide head starts at V = 0; both
    train — after one step the deeper critic's values differ from the copy's."""
    lm = tiny_llama(4)
    copy_ = ValueModel.from_causal_lm(lm)
    torch.nn.init.normal_(copy_.head.proj.weight, std=0.5)
    deep = value_model_for(lm, "separate", extra_layers=2)
    deep.head.load_state_dict(copy_.head.state_dict())
    assert len(deep.trunk.layers) == len(lm.base_model.layers) + 2
    assert deep.trunk.config.num_hidden_layers == len(deep.trunk.layers)
    assert lm.config.num_hidden_layers == len(lm.base_model.layers)  # the policy is untouched
    for side in ("left", "right"):
        ids, att = pad_batch(SEQS, side)
        with torch.no_grad():
            a, b = copy_(ids, att), deep(ids, att)
        torch.testing.assert_close(b.values, a.values, atol=1e-6, rtol=0)
        torch.testing.assert_close(b.final, a.final, atol=1e-6, rtol=0)
    wide = value_model_for(lm, "separate", head_width=32)
    ids, att = pad_batch(SEQS, "right")
    assert (wide(ids, att).values == 0).all() and wide.head.hidden[0].out_features == 32
    opt = torch.optim.SGD(deep.parameters(), lr=0.5)
    opt.zero_grad()
    (deep(ids, att).values - 1.0).pow(2).mean().backward()
    new_out = deep.trunk.layers[-1].self_attn.o_proj.weight
    assert new_out.grad is not None and new_out.grad.abs().sum() > 0  # the new layer learns
    opt.step()
    with torch.no_grad():
        assert (deep(ids, att).values - copy_(ids, att).values).abs().max() > 1e-4
    with pytest.raises(ValueError, match="separate"):
        value_model_for(lm, "shared", extra_layers=1)
    with pytest.raises(ValueError, match="Llama-style"):
        value_model_for(tiny_gpt2(), "separate", extra_layers=1)


def test_last_token_index():
    att = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
    assert last_token_index(att).tolist() == [3, 2, 0]


def batch_for_loss(seqs, prompt_len=2, side="right"):
    ids, att = pad_batch(seqs, side)
    mask = att.bool().clone()
    for i in range(len(seqs)):
        first = int(att[i].nonzero()[0])
        mask[i, first : first + prompt_len] = False
    rewards = torch.zeros(ids.shape)
    last = last_token_index(att)
    rewards[torch.arange(len(seqs)), last] = torch.tensor([1.0, 0.0, 1.0, 0.0])[: len(seqs)]
    return ids, att, mask, rewards


def test_losses_reach_only_their_own_model():
    """Policy loss → grads on the policy only; value loss → grads on the value model only."""
    policy, ref = tiny_llama(4), tiny_llama(4)
    vm = ValueModel.from_causal_lm(tiny_llama(5))
    torch.nn.init.normal_(vm.head.proj.weight, std=0.5)
    ids, att, mask, rewards = batch_for_loss(SEQS[:3])
    with torch.no_grad():
        ref_lp = per_token_logprobs(ref, ids, att)
    pol_lp = per_token_logprobs(policy, ids, att)
    v = vm(ids, att)
    for which in ("policy", "value"):
        policy.zero_grad(set_to_none=True)
        vm.zero_grad(set_to_none=True)
        pl, vl, _ = dqo_loss(
            pol_lp,
            ref_lp,
            v.values,
            rewards,
            mask,
            beta=0.1,
            bootstrap=v.final,
            behavior_logps=ref_lp,
            detach_target=False,
        )
        (pl if which == "policy" else vl).backward(retain_graph=True)
        pol_grads = [
            p.grad for p in policy.parameters() if p.grad is not None and p.grad.abs().sum() > 0
        ]
        val_grads = [
            p.grad for p in vm.parameters() if p.grad is not None and p.grad.abs().sum() > 0
        ]
        if which == "policy":
            assert pol_grads and not val_grads
        else:
            assert val_grads and not pol_grads


def test_shared_trunk_value_head_detaches_by_default():
    lm = tiny_llama(6)
    head = ValueHead(lm.config.hidden_size, detach_input=True)
    torch.nn.init.normal_(head.proj.weight, std=0.5)
    ids, att = pad_batch(SEQS, "left")
    hidden = lm.base_model(input_ids=ids, attention_mask=att).last_hidden_state
    out = head(hidden, att)
    out.values.square().sum().backward()
    assert all(p.grad is None for p in lm.parameters())
    assert head.proj.weight.grad is not None and head.proj.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ fused head


def _tied_llama(seed: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_fused_head_gives_the_materialised_logprobs_and_gradients(side, tau):
    """The fused path against the materialised one: values, and the gradient of every weight
    (the tied embedding gets its head gradient through the fused backward)."""
    model = _tied_llama()
    ids, att = pad_batch(SEQS, side)
    score = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.7
    results = []
    for fused in (True, False):
        model.zero_grad()
        lp = per_token_logprobs(model, ids, att, tau, score_mask=score, fused=fused)
        (lp * torch.linspace(0.5, 1.5, lp.numel()).view_as(lp)).sum().backward()
        results.append((lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp_f, g_f), (lp_m, g_m) = results
    torch.testing.assert_close(lp_f, lp_m, atol=1e-6, rtol=0)
    assert (lp_f[~score] == 0).all()
    for name in g_m:
        torch.testing.assert_close(g_f[name], g_m[name], atol=1e-5, rtol=1e-4, msg=name)
    assert g_f["model.embed_tokens.weight"].abs().sum() > 0


def test_fused_head_never_builds_the_logits_and_follows_autocast():
    model = _tied_llama()
    seen = []
    model.lm_head.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    ids, att = pad_batch(SEQS, "left")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = per_token_logprobs(model, ids, att)
        materialised = per_token_logprobs(model, ids, att, fused=False)
    # the probe's one position (once per model), no logits, then all of them
    assert seen == [(1, 1, VOCAB), (ids.shape[0], 0, VOCAB), (*ids.shape, VOCAB)]
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, materialised, atol=2e-2, rtol=0)  # both: bf16 head
    with torch.no_grad():
        full = per_token_logprobs(model, ids, att)
    assert (fused - full).abs().max() > 1e-4  # autocast really ran the fused head in bf16


def test_fused_head_falls_back_where_it_cannot_be_used():
    from dqo_tutorial.modeling import fusable_head

    assert fusable_head(_tied_llama()) is not None
    soft = _tied_llama()
    soft.config.final_logit_softcapping = 30.0  # logits ≠ head(trunk): must not be fused
    assert fusable_head(soft) is None
    with pytest.raises(ValueError, match="fused"):
        per_token_logprobs(soft, *pad_batch(SEQS, "left"), fused=True)


def _scaled_families():
    """Tiny random models whose logits are *not* lm_head(h): Granite and its MoE variants divide
    by ``logits_scaling``, HyperCLOVAX multiplies by it, Falcon-H1 by ``lm_head_multiplier``."""
    import transformers as T

    moe = dict(num_local_experts=2, num_experts_per_tok=1)
    mamba = dict(mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=8)
    families = {
        "granite": (T.GraniteConfig, T.GraniteForCausalLM, dict(logits_scaling=8.0)),
        "granitemoe": (T.GraniteMoeConfig, T.GraniteMoeForCausalLM,
                       dict(logits_scaling=8.0, **moe)),
        "granitemoeshared": (T.GraniteMoeSharedConfig, T.GraniteMoeSharedForCausalLM,
                             dict(logits_scaling=8.0, shared_intermediate_size=32, **moe)),
        "granitemoehybrid": (T.GraniteMoeHybridConfig, T.GraniteMoeHybridForCausalLM,
                             dict(logits_scaling=8.0, shared_intermediate_size=32,
                                  layer_types=["mamba", "attention"], **moe, **mamba)),
        "hyperclovax": (T.HyperCLOVAXConfig, T.HyperCLOVAXForCausalLM,
                        dict(logits_scaling=0.25)),
        "falcon_h1": (T.FalconH1Config, T.FalconH1ForCausalLM,
                      dict(lm_head_multiplier=0.3, mamba_d_ssm=32, mamba_n_heads=4,
                           mamba_d_head=8, mamba_d_state=8, mamba_chunk_size=8)),
    }  # fmt: skip
    return {k: (c, m, {**TINY, **extra}) for k, (c, m, extra) in families.items()}


@pytest.mark.parametrize("family", list(_scaled_families()))
def test_logit_scaled_families_are_scored_by_their_own_log_softmax(family):
    """Every log-prob the losses see equals the model's own ``log_softmax(logits)``, also where
    the logits are rescaled after the head (the fused path must step aside there: 0.17-0.29
    nats off before). The reference is the model's forward itself, materialised, in float32."""
    config_cls, model_cls, config = _scaled_families()[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**config)).eval()
    for side in ("left", "right"):
        ids, att = pad_batch(SEQS, side)
        with torch.no_grad():
            got = per_token_logprobs(model, ids, att)
        for row, seq in enumerate(SEQS):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq])).logits[0].float()
            own = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(seq[1:])[:, None])
            mine = got[row][att[row].bool()][1:]
            torch.testing.assert_close(mine, own[:, 0], atol=2e-5, rtol=0, msg=family)


def test_a_plain_head_is_still_fused_and_a_scaled_one_is_found_by_its_outputs():
    """The probe compares the model's own logits with head(trunk(x)) on one short row: a plain
    Llama keeps the fused path; a head scaled by a hook the config does not announce is found."""
    from dqo_tutorial.modeling import fusable_head

    plain = _tied_llama()
    assert fusable_head(plain) is not None
    hidden = _tied_llama()
    hidden.lm_head.register_forward_hook(lambda m, a, out: out * 1.5)  # no config attribute
    assert fusable_head(hidden) is None
    ids, att = pad_batch(SEQS, "left")
    with torch.no_grad():
        logits = hidden(input_ids=ids, attention_mask=att).logits.float()
        got = per_token_logprobs(hidden, ids, att, score_mask=att.bool())
    own = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    scored = (att[:, 1:] * att[:, :-1]).bool()
    torch.testing.assert_close(got[:, 1:][scored], own[scored], atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------ packing

LONG = [[5, 9, 3, 7, 11, 2, 8, 1], [4, 8, 15], [1, 2, 3, 4], [42], [7, 7], [3, 1, 4, 1, 5]]


def test_pack_rows_places_every_token_once():
    from dqo_tutorial.modeling import pack_rows

    for side in ("left", "right"):
        ids, att = pad_batch(LONG, side)
        p = pack_rows(ids, att)
        assert p.input_ids.shape[0] < ids.shape[0]  # 23 tokens of 6 rows fit in 3 rows of 8
        idx = p.index[att.bool()]
        assert len(set(idx.tolist())) == int(att.sum())  # no two tokens share a slot
        torch.testing.assert_close(p.input_ids.flatten()[idx], ids[att.bool()])
        for seq, row in zip(LONG, p.index):  # each sequence: positions 0 … L−1, contiguous
            flat = row[row >= 0]
            assert p.position_ids.flatten()[flat].tolist() == list(range(len(seq)))
            assert (flat.diff() == 1).all()


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("side", ["left", "right"])
def test_packed_batches_give_the_padded_logprobs_values_and_gradients(make, side):
    """Packed rows must not see each other: against the padded batch (itself checked against a
    prefix loop above), log-probs, values and every gradient, in float32."""
    policy = make()
    value = ValueModel.from_causal_lm(make(5))
    torch.nn.init.normal_(value.head.proj.weight, std=0.5)
    ids, att = pad_batch(LONG, side)
    weights = torch.linspace(0.5, 1.5, ids.numel()).view(ids.shape)
    results = []
    for packed in (False, True):
        policy.zero_grad(), value.zero_grad()
        lp = per_token_logprobs(policy, ids, att, packed=packed)
        v = value(ids, att, packed=packed)
        ((lp * weights).sum() + (v.values * weights).sum() + v.final.sum()).backward()
        grads = {n: p.grad.clone() for m in (policy, value) for n, p in m.named_parameters()
                 if p.grad is not None}  # fmt: skip
        results.append((lp.detach(), v.values.detach(), v.final.detach(), grads))
    (lp0, v0, f0, g0), (lp1, v1, f1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=0)
    torch.testing.assert_close(v1, v0, atol=1e-5, rtol=0)
    torch.testing.assert_close(f1, f0, atol=1e-5, rtol=0)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)


def test_packed_rows_attend_across_boundaries_with_a_cache():
    """Why the packed forward passes use_cache=False: with a cache transformers does not look
    for packed sequences and the rows of a packed row attend to each other — the comparison
    above would then fail. This shows it does."""
    from dqo_tutorial.modeling import pack_rows

    model = tiny_llama()
    ids, att = pad_batch(LONG, "right")
    p = pack_rows(ids, att)
    with torch.no_grad():
        kw = {"input_ids": p.input_ids, "position_ids": p.position_ids, "attention_mask": None}
        isolated = model(**kw, use_cache=False).logits
        leaky = model(**kw, use_cache=True).logits
        padded = model(input_ids=ids, attention_mask=att).logits
    real = att.bool()
    torch.testing.assert_close(p.unpack(isolated)[real], padded[real], atol=1e-5, rtol=0)
    assert (p.unpack(leaky)[real] - padded[real]).abs().max() > 1e-3
