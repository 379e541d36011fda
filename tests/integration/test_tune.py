"""``knowrec tune`` with the real bundled model on a slice of the demo: a tiny tune end to end, resume, the GGUF
adapter in llama.cpp against the PEFT adapter in torch, and the adapter served by the Recommender."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from knowrec import Recommender, Settings
from knowrec.agent.llm.llama_cpp import LlamaCppClient, bundled_llm_path
from knowrec.agent.llm.torch_engine import TorchClient
from knowrec.agent.rank import LABELS
from knowrec.errors import InvalidInput
from knowrec.tuning.export import vllm_problems, write_gguf_lora

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOLERANCE = 0.35
"""The engines' agreement on label log-probabilities without an adapter (``tests/integration/test_llm_torch.py``):
with one, the same tolerance holds."""

TINY = {
    "examples": 4,
    "per_user": 1,
    "eval_every": 2,
    "knowledge_share": 0.5,
    "threads": 2,
    "val_share": 0.2,
    "patience": 10,  # a one-user validation is noise: the resume test needs every evaluation to run
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    # the fusion of user histories only: tuning prompts never come from a cold start (its two models cost half the fit)
    fusion = {"cold_start_share": 0.0, "constrained_users": 0}
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("tune-store"), progress=False, llm={"backend": "none"}, fit={"fusion": fusion}
    )
    rec = Recommender(settings)
    rec.ingest_demo(max_users=30)
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def tuned(small: Recommender, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tuned") / "movies"
    return out, small.tune(out, progress=False, **TINY)


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    """The dequantised model where ``knowrec tune`` itself keeps it (the user's cache): converting the GGUF again into
    a folder of the test's own costs 40 s and tests nothing new (``test_llm_torch`` converts into a fresh one)."""
    from knowrec.config import default_cache_dir

    return default_cache_dir() / "llm"


def test_a_tiny_tune_writes_an_adapter_for_every_backend(tuned: tuple[Path, dict[str, Any]]):
    out, manifest = tuned
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter.gguf").stat().st_size > 0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["objectives"] == ["ranking", "knowledge"]
    ex = manifest["examples"]
    assert ex["ranking_examples"] == 4 and ex["knowledge_examples"] == 2 and ex["val_examples"] >= 1
    assert ex["prompt"].startswith("rank_verbalizer@")
    # validated before training and every two examples, the last at the end
    assert [row["examples"] for row in manifest["curve"]] == [0, 2, 4, 6]
    assert all(0.0 <= row["val_ndcg@10"] <= 1.0 for row in manifest["curve"])
    assert manifest["vllm_problems"] == [] and vllm_problems(out / "adapter") == []
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["bias"] == "none" and config["r"] == 8 and not config.get("modules_to_save")
    assert manifest["gguf_weights"] == 8 * 4  # the last 8 layers × q, k, v, o
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    kinds = {(r["split"], r["kind"]) for r in rows}
    assert kinds == {("train", "ranking"), ("train", "knowledge"), ("val", "ranking")}
    for r in rows:
        assert r["prompt"].rstrip().endswith("assistant") and 0 <= r["target"] < len(r["labels"])
        assert r["labels"] == list(LABELS[: len(r["choices"])])
    train_users = {r["user"] for r in rows if r["split"] == "train" and r["kind"] == "ranking"}
    val_users = {r["user"] for r in rows if r["split"] == "val"}
    assert train_users and val_users and not train_users & val_users


def test_tuning_twice_into_one_folder_is_refused(small: Recommender, tuned: tuple[Path, dict[str, Any]]):
    with pytest.raises(InvalidInput, match="already holds a tuned adapter"):
        small.tune(tuned[0], progress=False, **TINY)


def test_resume_continues_from_the_checkpoint(small: Recommender, tuned: tuple[Path, dict[str, Any]], tmp_path: Path):
    out, first = tuned
    again = tmp_path / "movies"
    shutil.copytree(out, again)
    second = small.tune(again, progress=False, resume=True, **{**TINY, "epochs": 2})
    assert second["examples"] == first["examples"]  # the same examples, read back
    assert second["curve"][: len(first["curve"])] == first["curve"]
    assert [row["examples"] for row in second["curve"]][len(first["curve"]) :] == [8, 10, 12]
    assert second["steps_examples"] == 12


def ranking_prompt(llm: TorchClient | LlamaCppClient) -> str:
    from tests.integration.test_llm_torch import HISTORY, TITLES
    from tests.integration.test_llm_torch import ranking_prompt as render

    return render(llm, HISTORY, TITLES[:8])


def test_the_gguf_adapter_in_llama_cpp_matches_the_peft_adapter_in_torch(tmp_path: Path, cache_dir: Path):
    """A LoRA with random (non-zero) weights on every projection, written both ways: llama.cpp and torch agree
    within the engines' own tolerance, while the adapter moves the scores by far more than that (a GGUF that
    llama.cpp ignored, or with the query/key rows in the wrong order, fails)."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = TorchClient(bundled_llm_path(), n_threads=2, cache_dir=cache_dir, prefix_cache=0, cache_size=0)
    prompt = ranking_prompt(base)
    labels = list(LABELS[:8])
    before = base.label_logprobs(prompt, labels)
    torch.manual_seed(0)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=[24, 25, 26, 27, 28, 29],
        init_lora_weights=False,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base._load(), cfg)
    with torch.no_grad():  # moderate random weights: a clear change of the answer, not a broken model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(str(tmp_path / "adapter"))
    assert write_gguf_lora(model, tmp_path / "adapter.gguf", alpha=16) == 6 * 7
    assert vllm_problems(tmp_path / "adapter") == []
    with_torch = TorchClient(
        bundled_llm_path(), n_threads=2, cache_dir=cache_dir, adapter=tmp_path / "adapter", prefix_cache=0
    ).label_logprobs(prompt, labels)
    cpp = LlamaCppClient(bundled_llm_path(), n_ctx=2048, n_threads=2, lora_path=tmp_path / "adapter.gguf")
    assert cpp.model_id.endswith(f"+{tmp_path.name}")  # named by the folder that holds adapter.gguf
    with_cpp = cpp.label_logprobs(prompt, labels)
    moved = max(abs(with_torch[lab] - before[lab]) for lab in labels)
    gap = max(abs(with_torch[lab] - with_cpp[lab]) for lab in labels)
    assert moved > 3 * TOLERANCE, moved
    assert gap <= TOLERANCE, (gap, with_torch, with_cpp)


def test_a_zero_initialised_lora_changes_nothing_and_the_tuned_one_does(
    tuned: tuple[Path, dict[str, Any]], tmp_path: Path, cache_dir: Path
):
    from peft import LoraConfig, get_peft_model

    base = TorchClient(bundled_llm_path(), n_threads=2, cache_dir=cache_dir, prefix_cache=0, cache_size=0)
    prompt = ranking_prompt(base)
    labels = list(LABELS[:8])
    before = base.label_logprobs(prompt, labels)
    zero = get_peft_model(base._load(), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    zero.save_pretrained(str(tmp_path / "zero"))
    same = TorchClient(bundled_llm_path(), n_threads=2, cache_dir=cache_dir, adapter=tmp_path / "zero")
    assert max(abs(same.label_logprobs(prompt, labels)[lab] - before[lab]) for lab in labels) < 1e-9
    out, _ = tuned
    best = TorchClient(bundled_llm_path(), n_threads=2, cache_dir=cache_dir, adapter=out / "adapter")
    assert best.model_id.endswith("+movies")
    # the last trained adapter (the kept one is the best on validation, which may be the untrained start)
    changed = TorchClient(bundled_llm_path(), n_threads=2, cache_dir=cache_dir, adapter=out / "checkpoint" / "adapter")
    assert max(abs(changed.label_logprobs(prompt, labels)[lab] - before[lab]) for lab in labels) > 1e-4


def test_the_recommender_serves_the_tuned_adapter(small: Recommender, tuned: tuple[Path, dict[str, Any]]):
    out, _ = tuned
    settings = small.settings.model_copy(
        update={"llm": small.settings.llm.model_copy(update={"backend": "llama_cpp", "adapter": str(out)})}
    )
    rec = Recommender(settings)
    user = next(iter(rec.store.interactions())).user_id
    r = rec.recommend(user, k=5, mode="verbalizer")
    assert len(r.items) == 5 and not r.fallback
    assert "+movies" in r.model, r.model  # results name the adapter that answered
    rec.close()


def test_distillation_asks_the_teacher_server_for_every_training_prompt(
    small: Recommender, llm_server: str, tmp_path: Path
):
    from tests.servers_llm import MODEL_ALIAS

    teacher = {"teacher_url": llm_server, "teacher_model": MODEL_ALIAS, "teacher_dialect": "llama_cpp"}
    if os.environ.get("KNOWREC_TEST_LLM_URL"):
        teacher["teacher_model"] = None
    manifest = small.tune(
        tmp_path / "distilled",
        progress=False,
        **{**TINY, "examples": 2, "knowledge_share": 0.0, "objectives": ("ranking", "distillation"), **teacher},
    )
    assert manifest["objectives"] == ["ranking", "distillation"]
    rows = [json.loads(line) for line in (tmp_path / "distilled" / "examples.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 2
    for r in train:
        # the teacher's label log-probabilities: one per label, the best of them a real probability
        assert len(r["teacher"]) == len(r["labels"]) and -20 < max(r["teacher"]) <= 0
    assert all(row["train_loss"] is None or row["train_loss"] >= 0 for row in manifest["curve"])


def test_shuffled_examples_show_the_candidates_as_the_shuffling_ranker_does(small: Recommender):
    """``ranker.shuffle``: the tuning prompts list each example's candidates in :func:`shown_order`, as the ranker
    shows them in serving, and the label of the true item follows it (the same examples otherwise)."""
    from knowrec.agent.rank import shown_order
    from knowrec.config import TuneConfig
    from knowrec.tuning import build_examples
    from tests.fakes import FakeLLM

    cfg = TuneConfig(examples=3, per_user=1, val_share=0.0, objectives=("ranking",))

    def quiet(title: str, total: int) -> Any:
        return lambda n: None

    plain, _, info = build_examples(small, cfg, FakeLLM(), quiet)
    kept = small.settings
    small.settings = kept.model_copy(update={"ranker": kept.ranker.model_copy(update={"shuffle": True})})
    try:
        shuffled, _, shuffled_info = build_examples(small, cfg, FakeLLM(), quiet)
    finally:
        small.settings = kept
    assert (info["shuffled"], shuffled_info["shuffled"]) == (False, True) and len(plain) == len(shuffled) == 3
    moved = 0
    for a, b in zip(plain, shuffled, strict=True):
        assert a.user == b.user
        assert b.choices == tuple(a.choices[p] for p in shown_order(list(a.choices)))
        assert b.choices[b.target] == a.choices[a.target]  # the label of the same item
        assert b.prompt != a.prompt
        moved += b.target != a.target
    assert moved >= 1


def test_held_out_examples_are_the_items_the_probe_models_never_saw(small: Recommender):
    """``tune.candidates = "held-out"``: every ranking target (training and validation) is one of the items the
    last fit held out of its probe stage, at its place in the user's history, and its candidates come from the
    probe models; a fit on other settings than the store's is refused rather than silently used."""
    from knowrec.agent.rank import display_title
    from knowrec.config import TuneConfig
    from knowrec.errors import ConfigError
    from knowrec.fitting import probe_models
    from knowrec.tuning import build_examples
    from knowrec.tuning.examples import user_sequences
    from knowrec.types import RecQuery
    from tests.fakes import FakeLLM

    def quiet(title: str, total: int) -> Any:
        return lambda n: None

    fit, retrieval = small.settings.fit, small.settings.retrieval
    models, holdout = probe_models(small.store, small.settings.models_path, fit, retrieval)
    assert models.sequential is not None and models.ease is not None
    cfg = TuneConfig(examples=8, per_user=2, val_share=0.2, objectives=("ranking",), candidates="held-out")
    train, val, info = build_examples(small, cfg, FakeLLM(), quiet)
    probe = small._retrieval_pipeline(models, fused=True)
    assert info["candidates_from"] == "held-out" and 0 < len(train) <= 8 and val
    sequences = user_sequences(small.store.interactions())
    for ex in [*train, *val]:
        assert ex.user is not None
        target = ex.choices[ex.target]
        held = [item for item, _ in holdout.heldout[ex.user]]
        assert target in held
        prefix = {item for item, _ in holdout.prefix[ex.user]}
        assert target not in prefix  # the probe models were fitted on the prefixes only
        # the prompt shows the history before the target: never the target itself nor what followed it
        seq = [x.item_id for x in sequences[ex.user]]
        shown_history = ex.prompt.split("Candidates:")[0]
        for item in seq[seq.index(target) :]:
            assert display_title(small.store.items([item])[item].title) not in shown_history
        # the candidates are the probe pipeline's (all but the target and the random negatives)
        before = sequences[ex.user][: seq.index(target)]
        prof = probe.profile_of(ex.user, list(reversed(before)))
        q = RecQuery(user_id=ex.user, k=len(ex.labels), history=prof.liked, seen=prof.seen, sequence=prof.sequence)
        found = [c.item_id for c in probe.retrieve(q, len(ex.labels)).items]
        assert ex.retrieved == (target in found)
        assert sum(1 for c in ex.choices if c in found) >= len(ex.labels) - cfg.negatives - (not ex.retrieved)
    stale = fit.model_copy(update={"holdout_per_user": fit.holdout_per_user + 1})
    with pytest.raises(ConfigError, match="knowrec fit"):
        probe_models(small.store, small.settings.models_path, stale, retrieval)
