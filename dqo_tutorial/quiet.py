"""Libraries' progress bars and warnings off: the command line (unless ``--verbose``) and the
notebooks (:func:`dqo_tutorial.course.require`) show only the package's own output.

Hugging Face's switches are read when those libraries load, so :func:`quiet_libraries` sets the
environment before any import (a value the user exported wins) and flips the switches of the
libraries already loaded. transformers' GGUF de-quantisation draws a plain tqdm bar its switch
misses: :func:`gguf_bar_follows_transformers` hides it while that switch is off.

A core module: it imports nothing of the package, and no library at import time.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_libraries", "gguf_bar_follows_transformers"]

_LIBRARIES = r"(transformers|datasets|accelerate|huggingface_hub|torch|tqdm)(\.|$)"


def quiet_libraries() -> None:
    """Silence the progress bars ("Loading weights", "Saving the dataset", "Map") and the
    warnings of Hugging Face's libraries and torch, now and for the libraries loaded later."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow it
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", module=_LIBRARIES)
    if "transformers" in sys.modules:  # already imported (a notebook, main() called from Python)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextmanager
def gguf_bar_follows_transformers() -> Iterator[None]:
    """While transformers' progress bars are off, so is its GGUF conversion bar (a bare
    ``tqdm`` in ``modeling_gguf_pytorch_utils``)."""
    from transformers.utils import logging as hf_logging

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - a transformers without GGUF support
        yield
        return
    if hf_logging.is_progress_bar_enabled():
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original
