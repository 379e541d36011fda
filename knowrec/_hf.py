"""Loading Hugging Face models without their own progress bars."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_depth = 0
_shown = False


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars of transformers' own while a model loads ("Loading weights", and the plain-tqdm "Converting
    and de-quantizing GGUF tensors"): they printed over ``knowrec chat``'s prompt (the models load in the background
    while the person types) and around the CLI's own status line. Nested and concurrent uses are counted, so the bars
    come back (if they were on) when the last one ends."""
    global _depth, _shown
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - depends on the install; the load itself then names the package
        yield
        return
    with _LOCK:
        if _depth == 0:
            _shown = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            bar = getattr(gguf_utils, "tqdm", None)
            if bar is not None:
                gguf_utils._knowrec_tqdm = bar
                gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                bar = getattr(gguf_utils, "_knowrec_tqdm", None)
                if bar is not None:
                    gguf_utils.tqdm = bar
                    del gguf_utils._knowrec_tqdm
                if _shown:
                    hf_logging.enable_progress_bar()
