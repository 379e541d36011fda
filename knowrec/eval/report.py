"""Aggregate per-user results into ``results.json``, a Markdown report with PNG plots, and paired comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from knowrec.errors import InvalidInput
from knowrec.eval.config import PIPELINE_SYSTEMS, EvalConfig
from knowrec.eval.data import Split
from knowrec.eval.metrics import catalogue_coverage, mean, percentiles

__all__ = ["build_results", "compare", "load_user_metrics", "paired_test", "write_report"]

PROTO_TITLES = {
    "p1": "P1 sampled-20 (ground truth + 19 unrated items)",
    "p2": "P2 full ranking (catalogue minus history)",
    "p3": "P3 retrieval recall",
    "p4": "P4 conversations with simulated users",
}


def _records(out: Path, system: str, proto: str) -> list[dict[str, Any]]:
    path = out / "cache" / system / f"{proto}.jsonl"
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[rec["user"]] = rec
    return list(rows.values())


def _summarise(records: list[dict[str, Any]], n_items: int) -> dict[str, Any]:
    keys = sorted({k for r in records for k in r.get("metrics", {})})
    out: dict[str, Any] = {
        "users": len(records),
        "metrics": {k: mean(r["metrics"][k] for r in records) for k in keys},
    }
    if records and "list" in records[0]:
        out["metrics"]["catalogue_coverage@10"] = catalogue_coverage([r["list"][:10] for r in records], n_items)
    stages = sorted({k for r in records for k in r.get("latency_ms", {}) if "." not in k})
    out["latency_ms"] = {
        s: percentiles([r["latency_ms"][s] for r in records if s in r.get("latency_ms", {})]) for s in stages
    }
    if records and "fallback" in records[0]:
        n_listed = sum(r["n_items"] for r in records) or 1
        cited = sum(r["cited"] for r in records)
        out["quality"] = {
            "fallback_rate": mean(float(r["fallback"]) for r in records),
            "repair_rate": mean(float(r["repaired"]) for r in records),
            "out_of_candidate_rate": sum(r["out_of_candidates"] for r in records) / n_listed,
            "duplicate_rate": sum(r["duplicates"] for r in records) / n_listed,
            "grounding_rate": (sum(r["grounded"] for r in records) / cited) if cited else float("nan"),
            "items_with_reason": sum(r["items_with_reason"] for r in records) / n_listed,
            "prompt_tokens_mean": mean(float(r.get("usage", {}).get("prompt_tokens", 0)) for r in records),
            "completion_tokens_mean": mean(float(r.get("usage", {}).get("completion_tokens", 0)) for r in records),
        }
    return out


def build_results(
    cfg: EvalConfig,
    split: Split,
    users: list[str],
    llm_users: list[str],
    meta: dict[str, dict[str, Any]],
    weight: dict[str, Any] | None,
    out: Path,
    subsets: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Everything a report needs, from the per-user cache. ``subsets``: named user subsets (e.g. the users the tuned
    systems ran on) over which every system's means are also given, for like-for-like comparisons."""
    systems = [*cfg.systems.baselines, *cfg.systems.pipeline]
    res: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "dataset": split.stats(),
        "users_evaluated": len(users),
        "llm_users": llm_users if len(llm_users) < len(users) else "all",
        "llm_weight_tuning": weight,
        "systems": {},
    }
    for name in systems:
        entry: dict[str, Any] = {"meta": meta.get(name, {}), "protocols": {}}
        entry["uses_llm"] = bool(PIPELINE_SYSTEMS.get(name, {}).get("llm", False))
        for proto in cfg.protocols.names:
            recs = _records(out, name, proto) if proto != "p4" else []
            if recs:
                entry["protocols"][proto] = _summarise(recs, len(split.items))
        res["systems"][name] = entry
    # the same users for everyone: restricted means over the LLM users let LLM and non-LLM systems be compared
    if len(llm_users) < len(users):
        subset = set(llm_users)
        for name in systems:
            for proto in cfg.protocols.names:
                recs = [r for r in _records(out, name, proto) if r["user"] in subset]
                if recs and proto not in ("p3", "p4"):
                    res["systems"][name]["protocols"][proto]["on_llm_users"] = _summarise(recs, len(split.items))[
                        "metrics"
                    ]
    res["subsets"] = {}
    for label, chosen in (subsets or {}).items():
        res["subsets"][label] = len(chosen)
        if label == "p4_llm_users":  # P4's own subset: the P4 section uses it
            continue
        keep = set(chosen)
        for name in systems:
            for proto in cfg.protocols.names:
                recs = [r for r in _records(out, name, proto) if r["user"] in keep]
                if recs and proto not in ("p3", "p4") and len(recs) == len(keep):
                    res["systems"][name]["protocols"][proto][f"on_{label}"] = _summarise(recs, len(split.items))[
                        "metrics"
                    ]
    if "p4" in cfg.protocols.names:
        from knowrec.eval.conversation import summarise_p4

        res["p4"] = {
            name: summarise_p4(recs) for name in cfg.systems.conversational if (recs := _records(out, name, "p4"))
        }
        llm_chosen = set((subsets or {}).get("p4_llm_users", []))
        if llm_chosen:  # every system on the users the LLM system played, for a like-for-like comparison
            res["p4_on_llm_users"] = {
                name: summarise_p4(recs)
                for name in cfg.systems.conversational
                if len(recs := [r for r in _records(out, name, "p4") if r["user"] in llm_chosen]) == len(llm_chosen)
            }
        res["p4_settings"] = {
            "turns": cfg.protocols.p4_turns,
            "k": cfg.protocols.p4_k,
            "users": cfg.protocols.p4_users,
            "more_rate": cfg.protocols.p4_more_rate,
            "llm_users": cfg.protocols.p4_llm_users,
        }
    return res


def _p3_section(res: dict[str, Any]) -> list[str]:
    """One P3 table: a row per candidate list of the pipeline (each generator alone, then the fused lists) and per
    baseline (its full ranking cut at the same lengths); a column per cutoff. Nothing when no system ran P3."""
    rows: list[tuple[str, str, int, dict[int, float]]] = []  # system, list, users, recall by cutoff
    for name, entry in res["systems"].items():
        p3 = entry["protocols"].get("p3")
        if not p3:
            continue
        by_list: dict[str, dict[int, float]] = {}
        for key, value in p3["metrics"].items():
            generator, _, metric = key.rpartition(":")
            if metric.startswith("Recall@"):
                by_list.setdefault(generator, {})[int(metric.split("@")[1])] = value
        own = sorted((g for g in by_list if g), key=lambda g: (g.startswith("fused"), g))  # fused lists last
        rows += [(name, g, p3["users"], by_list[g]) for g in own]
        if "" in by_list:
            rows.append((name, "full ranking", p3["users"], by_list[""]))
    if not rows:
        return []
    rows.sort(key=lambda r: r[1] == "full ranking")  # stable: the pipeline's lists first, then the baselines
    cutoffs = sorted({c for *_, recall in rows for c in recall})
    return [
        f"## {PROTO_TITLES['p3']}",
        "",
        "Recall of the test item in each candidate list: the pipeline's generators alone and fused, and each "
        "baseline's full ranking cut at the same lengths.",
        "",
        *_table(
            [[name, lst, users, *[recall.get(c, float("nan")) for c in cutoffs]] for name, lst, users, recall in rows],
            ["system", "list", "users", *[f"Recall@{c}" for c in cutoffs]],
        ),
        "",
    ]


def _p4_section(res: dict[str, Any]) -> list[str]:
    """The P4 tables: success by turn, then repeats, violations and turn latency (and the same on the LLM users)."""
    if not res.get("p4"):
        return []
    st = res["p4_settings"]
    n_users = sorted({e["users"] for e in res["p4"].values()})
    lines = [
        f"## {PROTO_TITLES['p4']}",
        "",
        f"- {', '.join(str(n) for n in n_users)} simulated users (`p4_users` = {st['users']}, drawn with seed + 4; "
        f"the LLM system: `p4_llm_users` = {st.get('llm_users', 'all')} of them, seed + 5); up to {st['turns']} "
        f"messages each, {st['k']} items per answer; a message after the first only asks for more with probability "
        f"{st['more_rate']}; every system hears the same script; dialogues in `cache/<system>/p4.jsonl`",
        "",
        *_p4_tables(res["p4"], st["k"], st["turns"]),
    ]
    if res.get("p4_on_llm_users"):
        n = res["subsets"].get("p4_llm_users")
        lines += [f"The same on the {n} users the LLM system played:", ""]
        lines += _p4_tables(res["p4_on_llm_users"], st["k"], st["turns"])
    return lines


def _p4_tables(p4: dict[str, Any], k: int, turns: int) -> list[str]:
    rows = []
    for name, e in p4.items():
        by_turn = [e["metrics"].get(f"Success@{k}@{t}", float("nan")) for t in range(1, turns + 1)]
        rows.append([name, e["users"], *by_turn, e["mean_turns_to_success"]])
    lines = _table(rows, ["system", "users", *[f"S@{k} turn {t}" for t in range(1, turns + 1)], "turns to success"])
    lines += ["", "Per user (means): items shown again, on “more” turns, constraint violations, short answers;", ""]
    rows = [
        [
            name,
            e["metrics"].get("repeats", float("nan")),
            e["metrics"].get("repeats_after_more", float("nan")),
            e["more_turns"],
            e["metrics"].get("violations", float("nan")),
            e["metrics"].get("short", float("nan")),
            f"{e['turn_ms'].get('p50', float('nan')):.0f} / {e['turn_ms'].get('p95', float('nan')):.0f}",
        ]
        for name, e in p4.items()
    ]
    header = ["system", "repeats", "repeats after more", "more turns (all users)", "violations", "short"]
    lines += _table(rows, [*header, "turn ms p50 / p95"])
    return [*lines, ""]


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, float):
        return "—" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _plots(res: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for proto, metric in (("p1", "NDCG@10"), ("p2", "NDCG@10")):
        names, vals = [], []
        for name, entry in res["systems"].items():
            p = entry["protocols"].get(proto)
            if p and metric in p["metrics"]:
                names.append(name)
                vals.append(p["metrics"][metric])
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.5))
        colors = ["#d95f02" if res["systems"][n]["uses_llm"] else "#1b9e77" for n in names]
        ax.bar(names, vals, color=colors)
        ax.set_ylabel(metric)
        ax.set_title(f"{PROTO_TITLES[proto]} — {metric} (orange: LLM systems)")
        ax.tick_params(axis="x", rotation=35)
        fig.tight_layout()
        fname = f"{proto}-{metric.replace('@', '')}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files.append(fname)
    lat: dict[str, list[float]] = {}
    for name in res["systems"]:
        recs = _records(out, name, "p2")
        vals = [r["latency_ms"]["total"] for r in recs if "total" in r.get("latency_ms", {})]
        if vals:
            lat[name] = vals
    if lat:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.boxplot(list(lat.values()), showfliers=False)
        ax.set_xticks(range(1, len(lat) + 1), list(lat), rotation=35)
        ax.set_yscale("log")
        ax.set_ylabel("ms per user (log)")
        ax.set_title("P2 latency per user, whole list")
        fig.tight_layout()
        fig.savefig(out / "latency-p2.png", dpi=110)
        plt.close(fig)
        files.append("latency-p2.png")
    return files


def write_report(res: dict[str, Any], out: Path) -> Path:
    """Write ``report.md`` (and PNG plots) beside ``results.json``."""
    cfg = res["config"]
    lines = [
        f"# Evaluation report: {cfg['run']['name']}",
        "",
        f"- dataset: {cfg['dataset']['source']} — after preprocessing (min_uc {cfg['dataset']['min_uc']}, "
        f"min_sc {cfg['dataset']['min_sc']}): {res['dataset']['users']} users, {res['dataset']['items']} items, "
        f"{res['dataset']['interactions']} interactions",
        "- split: leave-one-out by timestamp (last = test, second-to-last = validation); hyperparameters chosen on "
        "the validation item, then refitted with it",
        f"- seed {cfg['run']['seed']}; users evaluated: {res['users_evaluated']} for systems without an LLM; "
        + (
            f"{len(res['llm_users'])} sampled with seed {cfg['run']['seed'] + 1} for LLM systems "
            "(listed in results.json)"
            if isinstance(res["llm_users"], list)
            else "all for LLM systems too"
        ),
        "- ranks are pessimistic (ties count against the ground truth); P1 candidate lists are in "
        "`p1-candidates-test.json`",
    ]
    if res.get("llm_weight_tuning"):
        w = res["llm_weight_tuning"]
        grid = ", ".join(f"{r['llm_weight']}: {r['NDCG@10']:.4f}" for r in w["grid"])
        line = f"- LLM fusion weight chosen on validation (P2 NDCG@10 by weight — {grid}): **{w['llm_weight']}**"
        if w.get("rule") == "paired" and w.get("test"):
            line += (
                f" (rule `paired`: the best, {w['best']}, against 0: p = {w['test']['p_t']:.3g}, "
                f"threshold {w['threshold']:.4f})"
            )
        elif w.get("rule"):
            line += f" (rule `{w['rule']}`)"
        lines.append(line)
    lines.append("")
    for proto in cfg["protocols"]["names"]:
        if proto in ("p3", "p4"):
            continue
        metrics = (
            ["NDCG@1", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10"]
            if proto == "p1"
            else ["NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@10"]
        )
        rows = []
        sub_rows = []
        for name, entry in res["systems"].items():
            p = entry["protocols"].get(proto)
            if not p:
                continue
            rows.append([name, p["users"], *[p["metrics"].get(m, float("nan")) for m in metrics]])
            if "on_llm_users" in p:
                sub_rows.append([name, *[p["on_llm_users"].get(m, float("nan")) for m in metrics]])
        lines += [f"## {PROTO_TITLES[proto]}", ""]
        lines += _table(rows, ["system", "users", *metrics])
        if sub_rows:
            lines += ["", "Same metrics on the LLM users only (a like-for-like comparison):", ""]
            lines += _table(sub_rows, ["system", *metrics])
        for label, n in res.get("subsets", {}).items():
            rows = [
                [name, *[e["protocols"][proto][f"on_{label}"].get(m, float("nan")) for m in metrics]]
                for name, e in res["systems"].items()
                if f"on_{label}" in e["protocols"].get(proto, {})
            ]
            if rows:
                lines += ["", f"Same metrics on the {n} users of `{label}` (every system that ran on all of them):", ""]
                lines += _table(rows, ["system", *metrics])
        lines.append("")
    if "p2" in cfg["protocols"]["names"]:
        lines += ["## Beyond accuracy (P2 lists, top 10)", ""]
        rows = []
        for name, entry in res["systems"].items():
            p = entry["protocols"].get("p2")
            if not p:
                continue
            m = p["metrics"]
            q = p.get("quality", {})
            rows.append(
                [
                    name,
                    m.get("ILD@10", float("nan")),
                    m.get("genres@10", float("nan")),
                    m.get("entities@10", float("nan")),
                    m.get("catalogue_coverage@10", float("nan")),
                    q.get("out_of_candidate_rate", float("nan")),
                    q.get("duplicate_rate", float("nan")),
                    q.get("fallback_rate", float("nan")),
                    q.get("grounding_rate", float("nan")),
                    p["latency_ms"].get("total", {}).get("p50", float("nan")),
                    p["latency_ms"].get("total", {}).get("p95", float("nan")),
                    q.get("prompt_tokens_mean", float("nan")),
                    q.get("completion_tokens_mean", float("nan")),
                ]
            )
        lines += _table(
            rows,
            [
                "system",
                "ILD",
                "genres",
                "entities",
                "catalogue cov.",
                "out-of-cand.",
                "dup.",
                "fallback",
                "grounding",
                "ms p50",
                "ms p95",
                "prompt tok",
                "compl. tok",
            ],
        )
        lines += ["", "Per-stage latency of our pipeline (P2, ms p50 / p95):", ""]
        rows = []
        for name, entry in res["systems"].items():
            p = entry["protocols"].get("p2")
            if not p or name not in PIPELINE_SYSTEMS:
                continue
            st = p["latency_ms"]
            rows.append(
                [name]
                + [
                    f"{st[s]['p50']:.0f} / {st[s]['p95']:.0f}" if s in st else "—"
                    for s in ("profile", "retrieve", "facts", "rank", "diversify", "explain", "total")
                ]
            )
        lines += _table(rows, ["system", "profile", "retrieve", "facts", "rank", "diversify", "explain", "total"])
        lines.append("")
    lines += _p3_section(res)
    lines += _p4_section(res)
    lines += ["## Tuning", ""]
    for name, entry in res["systems"].items():
        meta = entry.get("meta") or {}
        if "grid" in meta:
            grid = "; ".join(
                f"{json.dumps(r.get('params', r), sort_keys=True)} → {r.get('NDCG@10', r.get('score', '?'))}"
                for r in meta["grid"]
            )
            lines.append(f"- **{name}**: chosen {json.dumps(meta.get('params'))}; grid (validation NDCG@10): {grid}")
    lines.append("")
    for fname in _plots(res, out):
        lines += [f"![{fname}]({fname})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def load_user_metrics(spec: str, protocol: str, metric: str) -> dict[str, float]:
    """Per-user values of ``metric`` from ``RUN_DIR:SYSTEM`` (SYSTEM defaults to ``knowrec``)."""
    run, _, system = spec.partition(":")
    system = system or "knowrec"
    path = Path(run) / "cache" / system / f"{protocol}.jsonl"
    if not path.exists():
        raise InvalidInput(f"no per-user results for system {system!r}, protocol {protocol}", path=path)
    out: dict[str, float] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if metric not in rec.get("metrics", {}):
            raise InvalidInput(f"metric {metric!r} not recorded", path=path, line=n)
        out[rec["user"]] = float(rec["metrics"][metric])
    return out


def paired_test(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test over the users both have.

    Example:
        >>> r = paired_test({"1": 1.0, "2": 0.5, "3": 0.0}, {"1": 0.5, "2": 0.5, "3": 0.0})
        >>> r["n"], r["mean_diff"]
        (3, 0.16666666666666666)
    """
    from scipy import stats

    users = sorted(set(a) & set(b))
    x = np.array([a[u] for u in users])
    y = np.array([b[u] for u in users])
    diff = x - y
    res = {"n": len(users), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "mean_diff": float(diff.mean())}
    if len(users) < 2 or np.allclose(diff, 0):
        res.update({"t": 0.0, "p_t": 1.0, "p_wilcoxon": 1.0})
        return res
    t = stats.ttest_rel(x, y)
    res["t"], res["p_t"] = float(t.statistic), float(t.pvalue)
    nonzero = diff[diff != 0]
    res["p_wilcoxon"] = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 1 else 1.0
    return res


def compare(spec_a: str, spec_b: str, protocol: str = "p2", metrics: tuple[str, ...] = ("NDCG@10",)) -> list[dict]:
    """Paired comparison of two systems/runs, one row per metric."""
    rows = []
    for metric in metrics:
        res = paired_test(load_user_metrics(spec_a, protocol, metric), load_user_metrics(spec_b, protocol, metric))
        rows.append({"metric": metric, **res})
    return rows
