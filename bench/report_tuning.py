"""Write a tuning report (markdown and a PNG of the curves) from a `knowrec tune` output folder's manifest.

    python bench/report_tuning.py docs/benchmarks/tuned/adapters/main --out docs/benchmarks/tuned/tuning.md

The tuning itself is run by `knowrec tune` (or by `knowrec eval run` for the tuned systems, in the validation store).
A section of an existing report headed "## The adapter in `knowrec eval`" (written by hand) is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EVAL_SECTION = "## The adapter in `knowrec eval`"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--command", default="knowrec eval run bench/eval-ml-latest-small.toml")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, required=True, help="the report (its plot goes beside it, .png)")
    args = ap.parse_args()
    m = json.loads((args.folder / "manifest.json").read_text())
    curve = m["curve"]
    # with ranker.shuffle the examples list the candidates in a random order: that is the "order shown" baseline
    order_name = "order shown (shuffled)" if m["examples"].get("shuffled") else "retrieval order"
    plot: Path | None = args.out.with_suffix(".png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        xs = [r["examples"] for r in curve]
        ax[0].plot(xs[1:], [r["train_loss"] for r in curve[1:]], marker="o", label="training (mean since last point)")
        ax[0].plot(xs, [r["val_loss"] for r in curve], marker="o", label="validation")
        ax[0].set_xlabel("examples seen")
        ax[0].set_ylabel("label cross-entropy")
        ax[0].legend()
        ax[1].plot(xs, [r["val_ndcg@10"] for r in curve], marker="o", label="adapter")
        if m.get("val_retrieval_order_ndcg@10") is not None:
            ax[1].axhline(m["val_retrieval_order_ndcg@10"], color="grey", linestyle="--", label=order_name)
        ax[1].set_xlabel("examples seen")
        ax[1].set_ylabel("validation NDCG@10 (20 candidates)")
        ax[1].legend()
        fig.tight_layout()
        fig.savefig(str(plot), dpi=110)
    except ImportError:
        plot = None
    ex = m["examples"]
    s = m["settings"]
    lines = [
        "# Tuning benchmark: `knowrec tune` on ml-latest-small (2 cores, CPU)",
        "",
        f"- command: `{args.command}` (tunes `{args.folder.name}` in the validation store: training interactions only)",
        f"- tuned at {m['tuned_at']}; base `{Path(m['base']).name}`; objectives {', '.join(m['objectives'])}; "
        f"prompt `{ex['prompt']}` ({ex['prompt_tokens_budget']}-token budget, {ex['candidates']} candidates"
        + (", shown in a seeded random order: `ranker.shuffle`)" if ex.get("shuffled") else ")"),
        f"- LoRA rank {s['rank']}, alpha {s['alpha']}, dropout {s['dropout']}, "
        f"modules {', '.join(s['target_modules'])}, last {s['layers']} layers; "
        f"{m['trainable_params']:,} trainable parameters; lr {s['lr']}, "
        f"{s['grad_accum']} examples per step, {s['epochs']} epoch(s), seed {s['seed']}, {s['threads']} threads",
        f"- examples: {ex['ranking_examples']} ranking ({ex['train_users']} users) + {ex['knowledge_examples']} "
        f"knowledge; validation {ex['val_examples']} ranking examples of {ex['val_users']} other users; the true item "
        f"was among the retrieved candidates in {ex['target_in_retrieval']:.0%} of the ranking examples (put in "
        "elsewhere); "
        + (
            "targets and candidates from the fit's probe stage (`tune.candidates = held-out`: models that never "
            "saw the targets)"
            if ex.get("candidates_from") == "held-out"
            else "candidates from the served models, fitted on the targets too (`tune.candidates = fitted`)"
        ),
        f"- wall time {m['wall_s'] / 60:.1f} min (examples, training, validations, GGUF export); peak RSS "
        f"{m['peak_rss_mb']:,.0f} MB; stopped: {m['stopped']}",
        f"- validation NDCG@10 of the true item among the 20 candidates: {order_name} "
        f"{m['val_retrieval_order_ndcg@10']}, zero-shot model {m['zero_shot']['val_ndcg@10']}, best adapter "
        f"{m['best']['ndcg@10']} (after {m['best']['examples']} examples)",
        f"- vLLM check of the PEFT adapter: {'passes' if not m['vllm_problems'] else '; '.join(m['vllm_problems'])}; "
        f"GGUF LoRA: {m['gguf_weights']} adapted weights",
    ]
    if args.note:
        lines += ["", args.note]
    lines += ["", "| examples seen | training loss | validation loss | validation NDCG@10 |", "|---:|---:|---:|---:|"]
    for r in curve:
        tl = "–" if r["train_loss"] is None else f"{r['train_loss']:.3f}"
        lines.append(f"| {r['examples']} | {tl} | {r['val_loss']:.3f} | {r['val_ndcg@10']:.4f} |")
    if plot is not None:
        lines += ["", f"![curves]({plot.name})"]
    target = args.out
    # the evaluation of the adapter (written by hand from `knowrec eval`'s report) is kept
    kept = target.read_text().partition(EVAL_SECTION)[2] if target.exists() else ""
    text = "\n".join(lines) + "\n"
    target.write_text(text + (f"\n{EVAL_SECTION}{kept}" if kept else ""))
    print(target)


if __name__ == "__main__":
    main()
