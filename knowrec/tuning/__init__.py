"""``knowrec tune``: LoRA-tune the LLM ranker on the stored interactions and knowledge graph.

Procedure (:func:`tune`):

1. Examples (:mod:`knowrec.tuning.examples`): ranking examples from every sampled user's history prefixes in time
   order (the verbalizer's own prompt, rendered by the ranker), knowledge examples from stored facts. A share of the
   users (``tune.val_share``) only validates: their ranking examples are never trained on.
2. Objectives (each switchable, recorded in the manifest): *ranking* and *knowledge* are cross-entropy over the
   choices' label tokens at the answer position, the very logits the verbalizer reads at inference; *distillation*
   adds KL(teacher ‖ student) over the same labels, the teacher's log-probabilities asked once per prompt from an
   OpenAI-compatible server.
3. Training: ``peft`` LoRA on the base model in fp32 on the CPU (``tune.threads``), AdamW, ``tune.grad_accum``
   examples per step, validation NDCG@10 of the true item every ``tune.eval_every`` examples, early stopping after
   ``tune.patience`` validations without improvement, a checkpoint at each validation (``--resume`` continues from
   it), the best adapter kept.
4. Outputs in ``--out``: ``adapter/`` (PEFT, what vLLM loads with ``--lora-modules NAME=DIR``), ``adapter.gguf``
   (llama.cpp), ``manifest.json`` (base, data fingerprint, objectives, prompt ids, LoRA settings, validation
   metrics), ``curve.json``, ``examples.jsonl``. ``llm.adapter = OUT`` serves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from knowrec.config import TuneConfig
from knowrec.errors import ConfigError, InvalidInput
from knowrec.tuning.examples import Example, knowledge_examples, ranking_examples, user_sequences

__all__ = ["Example", "label_ndcg", "tune"]

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
GGUF_FILE = "adapter.gguf"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_DIR = "checkpoint"


def label_ndcg(logprobs: Sequence[float], target: int) -> float:
    """NDCG@10 of the true choice when the choices are ordered by score (ties count against it)."""
    t = logprobs[target]
    rank = sum(1 for v in logprobs if v > t) + sum(1 for v in logprobs if v == t) - 1
    return 1.0 / math.log2(rank + 2) if rank < 10 else 0.0


def _fingerprint(parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _eligible(sequences: dict[str, list[Any]], cfg: TuneConfig) -> list[str]:
    eligible = sorted(u for u, s in sequences.items() if len(s) > cfg.min_history)
    if not eligible:
        raise InvalidInput(
            f"no stored user has more than tune.min_history={cfg.min_history} interactions: nothing to tune on"
        )
    return eligible


def build_examples(
    rec: Any,
    cfg: TuneConfig,
    client: Any,
    progress: Callable[[str, int], Callable[[int], None]],
    sequences: dict[str, list[Any]] | None = None,
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """(training examples, validation examples, what was built) from ``rec``'s stores. See the module docs."""
    from knowrec.agent.rank import VerbalizerRanker

    if sequences is None:
        sequences = user_sequences(rec.store.interactions())
    targets: dict[str, list[int]] | None = None
    if cfg.candidates == "held-out":
        from knowrec.fitting import probe_models

        fit = rec.settings.fit
        models, holdout = probe_models(rec.store, rec.settings.models_path, fit, rec.settings.retrieval)
        pipe = rec._retrieval_pipeline(models, fused=True)
        targets = held_out_positions(sequences, holdout.heldout, fit.protect_last)
        eligible = [u for u in _eligible(sequences, cfg) if targets.get(u)]
        if not eligible:
            raise InvalidInput("the last fit held out no item of a user with enough history: nothing to tune on")
    else:
        pipe = rec.pipeline("none")
        eligible = _eligible(sequences, cfg)
    rng = random.Random(cfg.seed)
    rng.shuffle(eligible)
    n_val = max(1, int(len(eligible) * cfg.val_share)) if cfg.val_share > 0 and len(eligible) > 1 else 0
    val_users, train_users = eligible[:n_val], eligible[n_val:]
    want_users = min(len(train_users), max(1, math.ceil(cfg.examples / cfg.per_user)))
    train_users = train_users[:want_users]
    val_users = val_users[: max(1, min(len(val_users), want_users // 5 + 1))] if val_users else []
    budget = cfg.max_prompt_tokens or rec.settings.ranker.prompt_tokens
    ranker = VerbalizerRanker(client, prompt_tokens=budget, shuffle=rec.settings.ranker.shuffle)
    n_cands = rec.settings.ranker.rerank_top
    threshold = rec.settings.retrieval.like_threshold
    common = {
        "targets": targets,
        "min_history": cfg.min_history,
        "negatives": cfg.negatives,
        "n_candidates": n_cands,
        "like_threshold": threshold,
    }
    advance = progress("tune: ranking examples", len(train_users) + len(val_users))
    train = ranking_examples(
        pipe, ranker, sequences, train_users, per_user=cfg.per_user, seed=cfg.seed, progress=advance, **common
    )[: cfg.examples]
    val = ranking_examples(
        pipe, ranker, sequences, val_users, per_user=1, seed=cfg.seed + 1, progress=advance, **common
    )
    n_know = 0
    if "knowledge" in cfg.objectives and cfg.knowledge_share > 0:
        items = sorted({x.item_id for u in train_users for x in sequences[u]})
        know = knowledge_examples(
            rec.store,
            client,
            items,
            int(len(train) * cfg.knowledge_share),
            choices=cfg.knowledge_choices,
            seed=cfg.seed,
        )
        n_know = len(know)
        train = train + know
    random.Random(cfg.seed + 2).shuffle(train)
    info = {
        "train_users": len(train_users),
        "val_users": len(val_users),
        "ranking_examples": len(train) - n_know,
        "knowledge_examples": n_know,
        "val_examples": len(val),
        "prompt": ranker.prompt.ref,
        "prompt_tokens_budget": budget,
        "candidates": n_cands,
        "shuffled": ranker.shuffle,
        "candidates_from": cfg.candidates,
        "target_in_retrieval": _share_retrieved(train + val),
        "users_sha1": _fingerprint([*sorted(train_users), "|", *sorted(val_users)]),
    }
    return train, val, info


def held_out_positions(
    sequences: dict[str, list[Any]], heldout: dict[str, list[tuple[str, float | None]]], protect_last: int = 0
) -> dict[str, list[int]]:
    """Per user, the positions in ``sequences`` (time order) of the items the fit held out (``Holdout.heldout``:
    the last ones before the ``protect_last`` evaluation items)."""
    out: dict[str, list[int]] = {}
    for user, held in heldout.items():
        seq = sequences.get(user, [])
        end = len(seq) - protect_last
        positions = list(range(end - len(held), end))
        if [seq[t].item_id for t in positions] != [item for item, _ in held]:
            raise ConfigError(
                f"user {user!r}: the interactions in time order do not end with the items the fit held out; "
                "run `knowrec fit` again"
            )
        out[user] = positions
    return out


def _better(metrics: dict[str, float], best: dict[str, Any]) -> bool:
    """A higher validation NDCG@10, or the same with a lower validation loss (NDCG moves in steps on few users)."""
    ndcg, best_ndcg = metrics.get("ndcg@10", 0.0), best.get("ndcg@10", -1.0)
    return bool(ndcg > best_ndcg or (ndcg == best_ndcg and metrics.get("loss", math.inf) < best.get("loss", math.inf)))


def _share_retrieved(examples: Sequence[Example]) -> float | None:
    ranking = [e for e in examples if e.kind == "ranking"]
    return None if not ranking else round(sum(1 for e in ranking if e.retrieved) / len(ranking), 3)


def _teacher_logprobs(cfg: TuneConfig, examples: list[Example]) -> list[Example]:
    """The examples with the teacher server's label log-probabilities (one request per prompt)."""
    from knowrec.agent.llm.http import OpenAIHTTPClient

    assert cfg.teacher_url is not None  # checked by tune() before anything is built
    teacher = OpenAIHTTPClient(cfg.teacher_url, cfg.teacher_model, dialect=cfg.teacher_dialect)
    try:
        out = []
        for ex in examples:
            lp = teacher.label_logprobs(ex.prompt, list(ex.labels))
            out.append(dataclasses.replace(ex, teacher=tuple(lp[lab] for lab in ex.labels)))
        return out
    finally:
        teacher.close()


class _Trainer:
    """LoRA training of the label cross-entropy on a ``transformers`` causal LM (fp32, CPU)."""

    def __init__(self, client: Any, cfg: TuneConfig) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed)
        self.torch = torch
        self.client = client
        self.cfg = cfg
        base = client._load()
        n_layers = int(base.config.num_hidden_layers)
        layers = list(range(max(0, n_layers - cfg.layers), n_layers)) if cfg.layers else None
        self.lora = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            layers_to_transform=layers,
            bias="none",
            task_type="CAUSAL_LM",
        )
        for p in base.parameters():
            p.requires_grad_(False)
        self.model = get_peft_model(base, self.lora)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)

    def logprobs(self, ex: Example, train: bool) -> Any:
        """Log-softmax over the choices' label tokens at the answer position."""
        torch = self.torch
        ids = torch.tensor([self.client.tokens(ex.prompt)], dtype=torch.long)
        by_label = self.client.label_token_ids(ex.labels)
        label_ids = [by_label[lab] for lab in ex.labels]
        self.model.train(train)
        out = self.model(input_ids=ids, use_cache=False, logits_to_keep=1)
        logits = out.logits[0, -1, label_ids].float()
        return torch.log_softmax(logits, dim=-1)

    def loss(self, ex: Example) -> Any:
        lp = self.logprobs(ex, train=True)
        ce = -lp[ex.target]
        if ex.teacher is None or "distillation" not in self.cfg.objectives:
            return ce
        # a label outside the server's top-k log-probabilities is -inf there: a floor keeps the KL finite
        floor = [max(v, -30.0) for v in ex.teacher]
        t = self.torch.log_softmax(self.torch.tensor(floor, dtype=self.torch.float32), dim=-1)
        kl = (t.exp() * (t - lp)).sum()
        w = self.cfg.distill_weight
        return (1 - w) * ce + w * kl

    def validate(self, examples: Sequence[Example]) -> dict[str, float]:
        if not examples:
            return {}
        ndcg, loss = [], []
        with self.torch.no_grad():
            for ex in examples:
                lp = self.logprobs(ex, train=False)
                ndcg.append(label_ndcg(lp.tolist(), ex.target))
                loss.append(float(-lp[ex.target]))
        return {"ndcg@10": round(sum(ndcg) / len(ndcg), 4), "loss": round(sum(loss) / len(loss), 4)}

    def save_adapter(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)

    def load_adapter(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))


def tune(
    rec: Any,
    out: Path,
    cfg: TuneConfig,
    *,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Tune a LoRA adapter of the ranker on ``rec``'s stored data into ``out``; returns the manifest."""
    try:
        import peft  # noqa: F401
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("knowrec tune needs torch, transformers and peft: pip install 'knowrec[local]'") from exc
    from knowrec.agent.llm.llama_cpp import bundled_llm_path
    from knowrec.agent.llm.torch_engine import TorchClient
    from knowrec.config import default_cache_dir
    from knowrec.fitting import _Progress, read_fit_data

    started = time.perf_counter()
    out = Path(out)
    ckpt = out / CHECKPOINT_DIR
    if out.exists() and (out / MANIFEST_FILE).exists() and not resume:
        raise InvalidInput(f"{out} already holds a tuned adapter; choose another --out, or --resume to continue")
    if "distillation" in cfg.objectives and not cfg.teacher_url:
        raise ConfigError("the distillation objective needs tune.teacher_url (--teacher URL)")
    sequences = user_sequences(rec.store.interactions())
    _eligible(sequences, cfg)  # a clear error before the model loads
    out.mkdir(parents=True, exist_ok=True)
    base = cfg.base or rec.settings.llm.model_path or bundled_llm_path()
    torch.set_num_threads(cfg.threads)
    client = TorchClient(
        Path(base), n_threads=cfg.threads, prefix_cache=0, cache_size=0, cache_dir=default_cache_dir() / "llm"
    )
    client.verify()
    prog = _Progress(progress)
    data_fp = read_fit_data(rec.store).fingerprint()
    with prog.running():

        def task(title: str, total: int) -> Callable[[int], None]:
            update = prog.task(title, total)
            return lambda n: update(n, None)

        examples_path = out / "examples.jsonl"
        if resume and examples_path.is_file():
            rows = [json.loads(line) for line in examples_path.read_text().splitlines() if line]
            train = [Example.from_json(r) for r in rows if r.get("split") == "train"]
            val = [Example.from_json(r) for r in rows if r.get("split") == "val"]
            info = (
                json.loads((ckpt / "examples-info.json").read_text()) if (ckpt / "examples-info.json").is_file() else {}
            )
        else:
            train, val, info = build_examples(rec, cfg, client, task, sequences)
            if "distillation" in cfg.objectives:
                train = _teacher_logprobs(cfg, train)
            with examples_path.open("w") as fh:
                for split, exs in (("train", train), ("val", val)):
                    for ex in exs:
                        fh.write(json.dumps({"split": split, **ex.to_json()}) + "\n")
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "examples-info.json").write_text(json.dumps(info, indent=1))
        if not train:
            raise InvalidInput("no tuning example could be built from the stored data")
        trainer = _Trainer(client, cfg)
        state: dict[str, Any] = {"seen": 0, "curve": [], "best": None, "bad": 0, "train_loss": []}
        if resume and (ckpt / "state.json").is_file():
            state = json.loads((ckpt / "state.json").read_text())
            trainer.load_adapter(ckpt / ADAPTER_DIR)
            if (ckpt / "optimizer.pt").is_file():
                trainer.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        retrieval_ndcg = (
            round(sum(label_ndcg([-float(i) for i in range(len(e.labels))], e.target) for e in val) / len(val), 4)
            if val
            else None
        )
        if not state["curve"]:
            zero = trainer.validate(val)
            state["curve"].append({"examples": 0, "train_loss": None, **{f"val_{k}": v for k, v in zero.items()}})
            state["best"] = {"examples": 0, **zero}
            trainer.save_adapter(out / ADAPTER_DIR)
        total = cfg.epochs * len(train)
        update = prog.task("tune: LoRA steps", total)
        update(state["seen"], None)
        stopped = None
        window: list[float] = []
        while state["seen"] < total:
            ex = train[state["seen"] % len(train)]
            loss = trainer.loss(ex) / cfg.grad_accum
            loss.backward()
            window.append(float(loss.detach()) * cfg.grad_accum)
            state["seen"] += 1
            if state["seen"] % cfg.grad_accum == 0 or state["seen"] == total:
                trainer.opt.step()
                trainer.opt.zero_grad()
            update(1, f"tune: LoRA steps (loss {sum(window[-50:]) / len(window[-50:]):.3f})")
            if state["seen"] % cfg.eval_every == 0 or state["seen"] == total:
                metrics = trainer.validate(val)
                mean_loss = round(sum(window) / len(window), 4) if window else None
                window = []
                state["curve"].append(
                    {"examples": state["seen"], "train_loss": mean_loss, **{f"val_{k}": v for k, v in metrics.items()}}
                )
                if not val or _better(metrics, state["best"] or {}):
                    state["best"] = {"examples": state["seen"], **metrics}
                    state["bad"] = 0
                    trainer.save_adapter(out / ADAPTER_DIR)
                else:
                    state["bad"] += 1
                ckpt.mkdir(parents=True, exist_ok=True)
                trainer.save_adapter(ckpt / ADAPTER_DIR)
                torch.save(trainer.opt.state_dict(), ckpt / "optimizer.pt")
                (ckpt / "state.json").write_text(json.dumps(state, indent=1))
                update(0, f"tune: LoRA steps (val NDCG@10 {metrics.get('ndcg@10', float('nan')):.4f})")
                if val and state["bad"] >= cfg.patience and state["seen"] < total:
                    stopped = f"no improvement in {cfg.patience} validations"
                    break
    # the best adapter, also as GGUF for llama.cpp
    from knowrec.tuning.export import vllm_problems, write_gguf_lora

    trainer.load_adapter(out / ADAPTER_DIR)
    try:
        n_weights: int | str = write_gguf_lora(trainer.model, out / GGUF_FILE, alpha=cfg.alpha)
    except ConfigError as exc:  # a base whose GGUF layout is unknown: the PEFT adapter still serves torch and vLLM
        log.warning("no GGUF adapter written: %s", exc)
        n_weights = f"skipped: {exc}"
    problems = vllm_problems(out / ADAPTER_DIR)
    manifest = {
        "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": str(base),
        "base_fingerprint": _file_fingerprint(Path(base)),
        "data_fingerprint": data_fp,
        "objectives": list(cfg.objectives),
        "settings": cfg.model_dump(mode="json"),
        "examples": info,
        "steps_examples": state["seen"],
        "stopped": stopped or "all epochs",
        "best": state["best"],
        "zero_shot": state["curve"][0],
        "val_retrieval_order_ndcg@10": retrieval_ndcg,
        "curve": state["curve"],
        "gguf_weights": n_weights,
        "vllm_problems": problems,
        "trainable_params": sum(p.numel() for p in trainer.params),
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": _peak_rss_mb(),
    }
    (out / "curve.json").write_text(json.dumps(state["curve"], indent=1) + "\n")
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _file_fingerprint(path: Path) -> str | None:
    """The base model file by name and size (hashing a multi-GB model would cost minutes)."""
    if not path.is_file():
        return None
    st = path.stat()
    return _fingerprint([path.name, st.st_size])


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def adapter_paths(adapter: str | Path) -> tuple[Path | None, Path | None]:
    """(PEFT folder, GGUF file) of ``llm.adapter``: a ``knowrec tune`` output folder, a PEFT folder or a GGUF file."""
    p = Path(adapter).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return None, p
    if (p / ADAPTER_DIR / "adapter_config.json").is_file():
        return p / ADAPTER_DIR, (p / GGUF_FILE) if (p / GGUF_FILE).is_file() else None
    if (p / "adapter_config.json").is_file():
        return p, None
    raise ConfigError(
        f"llm.adapter {str(adapter)!r} is not a knowrec tune output, a PEFT adapter folder or a .gguf LoRA file"
    )
