"""Tuning pieces without a model: vLLM's adapter checks, the validation metric, settings, adapter paths, the error on
an empty store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowrec import Settings
from knowrec.errors import ConfigError, InvalidSetting, KnowrecError
from knowrec.tuning import adapter_paths, label_ndcg
from knowrec.tuning.examples import Example
from knowrec.tuning.export import vllm_problems

GOOD = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "bias": "none",
    "target_modules": ["q_proj", "v_proj"],
    "modules_to_save": None,
    "use_dora": False,
}


def adapter(tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({**GOOD, **changes}))
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    return folder


def test_a_plain_lora_passes_vllms_checks(tmp_path: Path):
    assert vllm_problems(adapter(tmp_path)) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"r": 12}, "rank 12"),
        ({"bias": "all"}, "bias"),
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["embed_tokens"]}, "target modules"),
        ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
    ],
)
def test_what_vllm_refuses_is_named(tmp_path: Path, changes: dict[str, object], words: str):
    problems = vllm_problems(adapter(tmp_path, **changes))
    assert len(problems) == 1 and words in problems[0]


def test_a_folder_without_weights_or_config_is_refused(tmp_path: Path):
    assert "missing" in vllm_problems(tmp_path)[0]
    folder = adapter(tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    assert vllm_problems(folder) == ["no adapter_model.safetensors"]


def test_label_ndcg_counts_ties_against_the_target():
    assert label_ndcg([0.0, -1.0, -2.0], 0) == 1.0
    assert label_ndcg([-1.0, 0.0, -2.0], 0) == pytest.approx(1 / 1.584962500721156)
    assert label_ndcg([0.0, 0.0], 0) == pytest.approx(label_ndcg([0.0, 1.0], 0))
    assert label_ndcg([-float(i) for i in range(20)], 15) == 0.0


def test_examples_round_trip_through_json():
    ex = Example("ranking", "u1", "prompt", ("A", "B"), 1, ("i1", "i2"), (-0.5, -1.0), retrieved=False)
    back = Example.from_json(json.loads(json.dumps(ex.to_json())))
    assert back == ex and back.teacher == ex.teacher and back.retrieved is False


def test_tune_settings_refuse_what_no_server_serves():
    with pytest.raises(InvalidSetting, match="not a rank vLLM serves"):
        Settings(tune={"rank": 12})
    with pytest.raises(InvalidSetting, match="target_modules"):
        Settings(tune={"target_modules": ["lm_head"]})
    assert Settings(tune={"rank": 16}).tune.rank == 16


def test_adapter_paths_of_each_layout(tmp_path: Path):
    out = tmp_path / "tuned"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text("{}")
    assert adapter_paths(out) == (out / "adapter", None)
    (out / "adapter.gguf").write_bytes(b"")
    assert adapter_paths(out) == (out / "adapter", out / "adapter.gguf")
    assert adapter_paths(out / "adapter") == (out / "adapter", None)
    assert adapter_paths(out / "adapter.gguf") == (None, out / "adapter.gguf")
    with pytest.raises(ConfigError, match="not a knowrec tune output") as err:
        adapter_paths(tmp_path / "nothing")
    assert isinstance(err.value, KnowrecError)


@pytest.mark.parametrize("backend", ["memory", pytest.param("disk", marks=pytest.mark.integration)])
def test_tuning_an_empty_store_is_a_clear_error_before_any_model_loads(tmp_path: Path, backend: str):
    """``memory``: an empty in-memory store and nothing else injected, so the isolation guard fails the test if the
    tuning builds the embedder's model, the Chroma index or an LLM; ``disk``: the default SQLite file."""
    from knowrec import Recommender
    from knowrec.errors import InvalidInput
    from knowrec.testing import InMemoryGraphStore

    settings = Settings(data_dir=tmp_path / "empty", progress=False, llm={"backend": "none"})
    rec = Recommender(settings, store=InMemoryGraphStore()) if backend == "memory" else Recommender(settings)
    with pytest.raises(InvalidInput, match="nothing to tune on"):
        rec.tune(tmp_path / "out")
    with pytest.raises(ConfigError, match="teacher_url"):
        rec.tune(tmp_path / "out", objectives=("ranking", "distillation"))
    rec.close()
