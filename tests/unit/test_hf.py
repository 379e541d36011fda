"""Model loads hide transformers' own progress bars, and put them back after."""

from __future__ import annotations

import pytest
import transformers.modeling_gguf_pytorch_utils as gguf_utils
from transformers.utils import logging as hf_logging

from knowrec._hf import quiet_transformers


def test_the_bars_are_hidden_during_a_load_and_come_back_after_the_last_one():
    bar = gguf_utils.tqdm
    assert hf_logging.is_progress_bar_enabled()
    with quiet_transformers():
        assert not hf_logging.is_progress_bar_enabled()
        assert gguf_utils.tqdm([1, 2]) == [1, 2]  # the GGUF conversion's plain tqdm passes the tensors through
        with quiet_transformers():  # a second load at the same time (the embedder beside the LLM)
            pass
        assert not hf_logging.is_progress_bar_enabled() and gguf_utils.tqdm is not bar
    assert hf_logging.is_progress_bar_enabled() and gguf_utils.tqdm is bar
    with pytest.raises(RuntimeError), quiet_transformers():
        raise RuntimeError("a load that fails")
    assert hf_logging.is_progress_bar_enabled() and gguf_utils.tqdm is bar


def test_bars_someone_turned_off_stay_off():
    hf_logging.disable_progress_bar()
    try:
        with quiet_transformers():
            pass
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
