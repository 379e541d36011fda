"""Command line: ``knowrec demo | ingest | recommend | similar | info | serve | eval``.

Errors print one clear line on stderr and exit with status 1 (2 for usage errors).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knowrec.api import RecommenderAPI
from knowrec.config import RankerConfig, Settings
from knowrec.errors import KnowrecError
from knowrec.recommender import Recommender
from knowrec.types import ChatProgress, Recommendation, display_title

app = typer.Typer(
    name="knowrec",
    help="An LLM recommender with knowledge-graph injection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
log = logging.getLogger(__name__)

T = TypeVar("T")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the stores live (default: settings / KNOWREC_DATA_DIR).")
]
_MODES = get_args(RankerConfig.model_fields["mode"].annotation)
# a plain string checked by Settings (not click.Choice), so a bad mode is the usual one-line "invalid setting" error
Mode = Annotated[
    str | None,
    typer.Option("--mode", help=f"Ranking mode: {', '.join(_MODES[:-1])} or {_MODES[-1]} (default: settings)."),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn knowrec and settings errors into one line and exit status 1."""
    try:
        yield
    except KnowrecError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        err.print(f"[bold red]error:[/] invalid setting {where}: {first.get('msg')}", highlight=False)
        raise typer.Exit(1) from None


def _recommender(data_dir: Path | None, mode: str | None = None, **extra: Any) -> Recommender:
    kwargs: dict[str, Any] = dict(extra)
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    if mode is not None:
        kwargs["ranker"] = {"mode": mode}
    return Recommender(Settings(**kwargs))


def _api(data_dir: Path | None, mode: str | None = None, **extra: Any) -> RecommenderAPI:
    """The recommender as the serving commands see it (recommend, similar, info, chat, serve): through the public
    :class:`~knowrec.api.RecommenderAPI` only; the admin commands (ingest, fit, tune, kg extract) take the concrete
    :class:`~knowrec.Recommender`."""
    return _recommender(data_dir, mode, **extra)


def _run(fn: Callable[[], T]) -> T:
    with _errors():
        return fn()


def _print_recommendation(rec: Recommendation) -> None:
    head = f"user {rec.user_id}" if rec.user_id is not None else "anonymous"
    if rec.cold_start:
        head += " (cold start)"
    if rec.query:
        head += f" — “{rec.query}”"
    table = Table(title=head, show_lines=True, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("why", ratio=3)
    table.add_column("found by")
    for it in rec.items:
        why = "\n".join(f"{escape(r.text)} [dim]{' '.join(r.fact_ids)}[/]" for r in it.reasons) or "[dim]—[/]"
        table.add_row(
            str(it.rank), f"{escape(it.display_title)}\n[dim]id {escape(it.item_id)}[/]", why, ", ".join(it.sources)
        )
    out.print(table)
    timing = ", ".join(f"{k} {v:.0f} ms" for k, v in rec.timings_ms.items() if "." not in k)
    flag = f" [yellow]fallback: {rec.fallback_reason}[/]" if rec.fallback else ""
    if rec.repairs:
        flag += f" [yellow]repairs: {'; '.join(rec.repairs)}[/]"
    prompt = f"{rec.prompt_id}@{rec.prompt_version}" if rec.prompt_id else "—"
    line = f"fusion {rec.fusion} · ranking {rec.ranking_mode} · model {rec.model} · prompt {prompt} · {timing}"
    out.print(f"[dim]{line}[/]{flag}")


def _loading_message(settings: Settings) -> str:
    """What the demo says while ``warm_up`` runs: the LLM is named only when one loads in this process."""
    if settings.ranker.mode != "none" and settings.llm.backend == "llama_cpp":
        return "loading the models (the LLM's, the first time ever: about 20 s)…"
    return "loading the fitted models…"


@app.command()
def demo(
    users: Annotated[str, typer.Option(help="Comma-separated user ids to recommend for.")] = "1,42,314",
    k: Annotated[int, typer.Option(min=1, max=50)] = 5,
    max_users: Annotated[
        int | None, typer.Option(help="First run only: ingest just this many users (a quick, smaller demo).")
    ] = None,
    data_dir: DataDir = None,
    mode: Mode = None,
) -> None:
    """Ingest the bundled MovieLens + DBpedia demo (first run only), then recommend for a few users."""

    def go() -> None:
        rec = _recommender(data_dir, mode)
        if rec.stats()["items"] == 0:
            out.print("[bold]First run:[/] ingesting the bundled demo data (MovieLens ml-latest-small + DBpedia)…")
            s = rec.ingest_demo(max_users=max_users)
            out.print(
                f"ingested {s.items} items, {s.facts} facts, {s.entities} entities, {s.users} users, "
                f"{s.interactions} interactions in {s.seconds:.1f} s"
            )
        with out.status(f"[dim]{_loading_message(rec.settings)}[/]"):
            warmed = rec.warm_up()
        log.debug("warmed up in %s s", warmed)
        for user in [u.strip() for u in users.split(",") if u.strip()]:
            _print_recommendation(rec.recommend(user, k=k))
        rec.close()

    _run(go)


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    format: Annotated[str, typer.Option("--format", "-f", help="movielens or generic.")] = "generic",
    kg: Annotated[Path | None, typer.Option(help="MovieLens: DBpedia triples file (TSV, may be .gz).")] = None,
    max_users: Annotated[int | None, typer.Option(help="Keep only this many users (smallest ids).")] = None,
    no_fit: Annotated[
        bool, typer.Option("--no-fit", help="Do not fit the models afterwards (run `fit` later).")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Validate and write a dataset to the stores (atomic and idempotent), then fit the models."""

    def go() -> None:
        if format not in ("movielens", "generic"):
            raise typer.BadParameter("use movielens or generic", param_hint="--format")
        rec = _recommender(data_dir)
        s = rec.ingest(path, format=format, kg_path=kg, max_users=max_users, fit=not no_fit)  # type: ignore[arg-type]
        out.print(
            f"[green]ok[/] {s.items} items ({s.new_items} new), {s.facts} facts ({s.new_facts} new), "
            f"{s.entities} entities, {s.users} users, {s.interactions} interactions ({s.new_interactions} new); "
            f"{s.indexed} documents embedded; {s.seconds:.1f} s"
        )
        if not no_fit:
            _print_models(rec.models_info())
        rec.close()

    _run(go)


def _print_models(m: dict[str, Any]) -> None:
    if not m.get("fitted"):
        out.print("[bold]models[/] none fitted: retrieval fuses by RRF ([dim]run `knowrec fit`[/])")
        return
    seq = m["sequential"]
    stale = " [yellow](stale: the store changed since; run `knowrec fit`)[/]" if m.get("stale") else ""
    out.print(
        f"[bold]models[/] fitted {m['fitted_at']} on {m['interactions']} interactions, {m['items']} items "
        f"(data {m['data_fingerprint']}, seed {m['seed']}){stale}"
    )
    out.print(
        f"  sequential: best epoch {seq['best_epoch']}, held-out NDCG@10 {seq['heldout_ndcg@10']} · {seq['served']}"
    )
    v = m.get("fusion_valid", {})
    if m["fusion"] == "learned":
        out.print(
            f"  fusion: learned (LambdaRank); held-out NDCG@10 {v.get('valid_learned_ndcg@10')} vs RRF "
            f"{v.get('valid_rrf_ndcg@10')}, Recall@20 {v.get('valid_learned_recall@20')} vs "
            f"{v.get('valid_rrf_recall@20')}"
        )
    else:
        out.print(f"  fusion: RRF ({v.get('skipped', 'no fitted fusion')})")
    out.print(
        f"  cold start: {m.get('cold_start_fusion', 'as above')}; cold start with a constraint (fixed candidates): "
        f"{m.get('constrained_cold_start_fusion', 'as above')}"
    )


@app.command()
def fit(
    data_dir: DataDir = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice (default: fit.seed).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: fit.threads).")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Upper bound on the sequential model's epochs.")] = None,
) -> None:
    """Fit EASE, the sequential model, item statistics and the learned fusion on the stored interactions."""

    def go() -> None:
        rec = _recommender(data_dir)
        cfg = rec.settings.fit
        update: dict[str, Any] = {}
        if seed is not None:
            update["seed"] = seed
        if threads is not None:
            update["threads"] = threads
        if max_epochs is not None:
            update["sequential"] = cfg.sequential.model_copy(update={"max_epochs": max_epochs})
        if update:
            rec.settings = rec.settings.model_copy(update={"fit": cfg.model_copy(update=update)})
        manifest = rec.fit()
        out.print(f"[green]ok[/] fitted in {manifest['timings_s']['total']:.1f} s → {rec.settings.models_path}")
        _print_models(rec.models_info())
        rec.close()

    _run(go)


@app.command()
def tune(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the adapter, its GGUF and manifest are written.")],
    data_dir: DataDir = None,
    base: Annotated[
        Path | None, typer.Option(help="A .gguf file or Hugging Face folder (default: the local model).")
    ] = None,
    objectives: Annotated[
        str | None, typer.Option(help="Comma-separated: ranking, knowledge, distillation (default: tune.objectives).")
    ] = None,
    examples: Annotated[int | None, typer.Option(help="Ranking examples at most (default: tune.examples).")] = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Where the examples' candidates come from: fitted (the served models) or held-out (the last fit's "
            "probe models, which never saw the targets); default: tune.candidates."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (vLLM serves 8, 16, 32, 64, …).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Teacher server /v1 URL (adds the distillation objective).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: tune.threads).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint in --out.")] = False,
) -> None:
    """LoRA-tune the LLM ranker on the stored interactions and knowledge graph (serve it with llm.adapter=OUT)."""

    def go() -> None:
        rec = _recommender(data_dir)
        update: dict[str, Any] = {
            key: val
            for key, val in {
                "base": base,
                "examples": examples,
                "candidates": candidates,
                "epochs": epochs,
                "rank": rank,
                "lr": lr,
                "threads": threads,
                "seed": seed,
            }.items()
            if val is not None
        }
        if objectives:
            update["objectives"] = tuple(o.strip() for o in objectives.split(",") if o.strip())
        if teacher:
            update["teacher_url"] = teacher
            update["objectives"] = tuple(
                dict.fromkeys([*update.get("objectives", rec.settings.tune.objectives), "distillation"])
            )
        manifest = rec.tune(out_dir, resume=resume, **update)
        best, zero = manifest["best"], manifest["zero_shot"]
        out.print(
            f"[green]ok[/] tuned in {manifest['wall_s']:.0f} s on {manifest['steps_examples']} examples → {out_dir}\n"
            f"validation NDCG@10 {zero.get('val_ndcg@10')} (zero-shot) → {best.get('ndcg@10')} (best, after "
            f"{best.get('examples')} examples); serve it with KNOWREC_LLM__ADAPTER={out_dir}"
        )
        for problem in manifest["vllm_problems"]:
            out.print(f"[yellow]vLLM would refuse the adapter:[/] {problem}")
        rec.close()

    _run(go)


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="User id (unknown users get the cold-start path).")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=200)] = 10,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Free-text request.")] = None,
    diversity: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    data_dir: DataDir = None,
    mode: Mode = None,
) -> None:
    """Recommend items for a user, with reasons citing knowledge-graph facts."""

    def go() -> None:
        rec = _api(data_dir, mode, progress=False)
        result = rec.recommend(user, k=k, query=query, diversity=diversity)
        if as_json:
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        else:
            _print_recommendation(result)
        rec.close()

    _run(go)


@app.command()
def similar(
    item: Annotated[str, typer.Argument(help="Item id.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=200)] = 10,
    data_dir: DataDir = None,
) -> None:
    """Items most similar to ITEM by embedding."""

    def go() -> None:
        rec = _api(data_dir)
        for it, score in rec.similar(item, k):
            out.print(f"{score:.3f}  {escape(display_title(it.title))}  [dim]id {escape(it.id)}[/]")
        rec.close()

    _run(go)


@app.command()
def info(data_dir: DataDir = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Store counts and effective settings."""

    def go() -> None:
        rec = _api(data_dir)
        data = rec.info()
        if as_json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            out.print(f"[bold]data dir[/] {rec.settings.data_dir}")
            out.print("[bold]stored[/] " + ", ".join(f"{k} {v}" for k, v in data["stats"].items()))
            search = f" (vector search: {data['vector_search']})" if data.get("vector_search") else ""
            out.print(f"[bold]indexed[/] {data['index_count']} item documents{search}")
            _print_models(data["models"])
            s = rec.settings
            out.print(
                f"[bold]ranker[/] {s.ranker.mode} "
                f"(rerank top {s.ranker.rerank_top}, llm weight {s.ranker.llm_weight})"
                f" · [bold]llm[/] {s.llm.backend} · [bold]explain[/] {s.explain.mode}"
            )
        rec.close()

    _run(go)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API, the OpenAI-compatible /v1/chat/completions and the web chat page at /.

    An API key is required when KNOWREC_SERVER__API_KEY is set (Authorization: Bearer KEY or X-API-Key: KEY).
    """

    def go() -> None:
        try:
            import uvicorn

            from knowrec.server import create_app
        except ImportError as exc:
            raise typer.BadParameter(f"{exc.name} is missing: pip install 'knowrec[server]'") from None
        rec = _api(data_dir)
        uvicorn.run(create_app(rec), host=host, port=port, log_level=log_level)
        rec.close()

    _run(go)


def _footnoted(text: str, order: list[str]) -> str:
    """Fact ids in prose ("[F4a45…]") as footnote numbers into ``order`` (extended as new ids appear)."""

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in order:
            order.append(m.group(1))
        return f" [{order.index(m.group(1)) + 1}]"

    return re.sub(r"\s*\[(F[0-9a-f]+)\]", number, text)


def _print_turn(turn: Any) -> None:
    """An assistant chat turn: its text, then the recommended items (reasons with numbered facts) or the looked-up
    facts, numbered; fact ids stay out of the prose."""
    if turn.recommendation is not None and turn.recommendation.items:
        lines = [line for line in turn.text.split("\n") if not re.match(r"\d+\. ", line)]
        out.print("[bold cyan]knowrec>[/] " + escape("\n".join(lines)), highlight=False)
        table = Table(show_lines=True, box=None, padding=(0, 1))
        table.add_column("#", justify="right")
        table.add_column("item")
        table.add_column("why", ratio=3)
        for it in turn.recommendation.items:
            facts = {f.id: f for f in it.facts}
            order: list[str] = []
            why = []
            for r in it.reasons:
                cited = [f for f in r.fact_ids if f in facts]
                order += [f for f in cited if f not in order]
                why.append(escape(r.text) + "".join(f" [{order.index(f) + 1}]" for f in cited))
            order += [f for f in facts if f not in order]
            notes = "\n".join(f"[dim][{n}] {escape(facts[f].text())}[/]" for n, f in enumerate(order, start=1))
            table.add_row(
                str(it.rank),
                f"{escape(it.display_title)}\n[dim]id {escape(it.item_id)}[/]",
                ("\n".join(why) or "[dim]—[/]") + ("\n" + notes if notes else ""),
            )
        out.print(table)
    else:
        order = []
        text = escape(_footnoted(turn.text, order))
        facts = {f.id: f for f in turn.facts}
        order += [f for f in facts if f not in order]
        notes = "\n".join(
            f"[dim][{n}] {escape(facts[f].text())}[/]" for n, f in enumerate(order, start=1) if f in facts
        )
        out.print(f"[bold cyan]knowrec>[/] {text}" + ("\n" + notes if notes else ""), highlight=False)


_CHAT_STAGES = {
    "extracting": "reading your request with the LLM…",
    "retrieving": "finding candidates…",
    "ranking": "ranking them with the LLM…",
}


@app.command()
def chat(
    user: Annotated[str | None, typer.Option("--user", help="Chat as this user (their history counts).")] = None,
    session: Annotated[str | None, typer.Option("--session", help="Continue this session id.")] = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=50, help="Items per answer.")] = None,
    data_dir: DataDir = None,
    mode: Mode = None,
) -> None:
    """Talk to the recommender: /like N, /dislike N, /profile, /help, /quit (Ctrl-D also ends it)."""
    rec = _run(lambda: _api(data_dir, mode, progress=False))
    sid = _run(lambda: session or rec.new_session(user))
    n = k or rec.settings.chat.k
    warming = _warm_up_in_background(rec)
    out.print(f"[dim]session {sid} — type a wish (“something like Heat but no dramas”), /help, or /quit[/]")
    last: list[str] = []
    while True:
        try:
            out.print("[bold]you>[/] ", end="")
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            out.print()
            break
        if not line:  # end of input (Ctrl-D, or the end of piped text)
            out.print()
            break
        msg = line.strip()
        if not msg:
            continue
        try:
            with _errors():
                if msg in ("/quit", "/exit", "/q"):
                    break
                if msg == "/help":
                    out.print("/like N, /dislike N (N = position in the last list), /profile, /quit")
                elif msg == "/profile":
                    out.print(rec.session_profile(sid).summary, highlight=False)
                elif msg.startswith(("/like", "/dislike")):
                    cmd, _, arg = msg.partition(" ")
                    if not arg.strip().isdigit() or not 1 <= int(arg) <= len(last):
                        err.print(f"[bold red]error:[/] {cmd} needs a position 1–{len(last)} of the last list")
                        continue
                    item = last[int(arg) - 1]
                    rec.feedback(item, cmd == "/like", session_id=sid)
                    out.print(f"noted: you {'liked' if cmd == '/like' else 'disliked'} item {item}")
                elif msg.startswith("/"):
                    err.print(f"[bold red]error:[/] unknown command {msg.split()[0]} (try /help)")
                else:
                    with out.status("[dim]thinking…[/]", spinner="dots") as status:

                        def stage(ev: ChatProgress, status: Any = status) -> None:
                            found = f" ({len(ev.items)} found)" if ev.items else ""
                            status.update(f"[dim]{_CHAT_STAGES[ev.stage]}{found}[/]")

                        turn = rec.chat(sid, msg, user_id=user, k=n, on_progress=stage)
                    if turn.items:
                        last = list(turn.items)
                    _print_turn(turn)
        except typer.Exit:
            continue
        except KeyboardInterrupt:
            out.print()
            break
    out.print(f"[dim]bye — continue with: knowrec chat --session {sid}[/]")
    if warming is not None:
        with suppress(KeyboardInterrupt):  # a second Ctrl-C does not wait
            warming.join()  # a model half loaded, a cache half written, must not be cut off by the exit
    rec.close()


def _warm_up_in_background(rec: RecommenderAPI) -> threading.Thread | None:
    """Load the models (``Recommender.warm_up``) while the person types the first message; the first turn then
    waits only for what is not loaded yet. ``None`` for an API without a warm-up (a remote server warms itself)."""
    warm_up = getattr(rec, "warm_up", None)
    if warm_up is None:
        return None

    def run() -> None:
        try:
            log.debug("warmed up in %s s", warm_up())
        except Exception as exc:  # best effort: the first message meets the same problem and says it
            log.debug("warm-up failed: %s", exc)

    thread = threading.Thread(target=run, name="knowrec-warm-up", daemon=True)
    thread.start()
    return thread


kg_app = typer.Typer(help="The knowledge graph: build it from item text.", no_args_is_help=True)
app.add_typer(kg_app, name="kg")


@kg_app.command("extract")
def kg_extract(
    data_dir: DataDir = None,
    items: Annotated[
        str, typer.Option("--items", help="Comma-separated item ids, @FILE (ids one per line), or all.")
    ] = "all",
    fields: Annotated[
        str | None, typer.Option("--fields", help="Item fields to read: text, title, attribute names (default: text).")
    ] = None,
    schema: Annotated[
        Path | None, typer.Option("--schema", help="A TOML relation schema (default: the bundled one of the domain).")
    ] = None,
    domain: Annotated[str | None, typer.Option(help="Bundled schema: movies or generic (default: settings).")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Per-item results and the review report (default: <data dir>/extract).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Ask again where the last answer failed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Extract facts about items from their text with the LLM; only facts whose evidence is in the text are kept.

    Resumable (interrupt and run again) and idempotent (unchanged text is not asked again). Objects join stored
    entities when they are the same; the report (report.md in --out) lists merges and new entities for review.
    """
    from knowrec.extraction import parse_item_ids

    def go() -> None:
        rec = _recommender(data_dir)
        overrides: dict[str, Any] = {}
        if fields is not None:
            overrides["fields"] = tuple(f.strip() for f in fields.split(",") if f.strip())
        if schema is not None:
            overrides["schema_file"] = schema
        if domain is not None:
            overrides["domain"] = domain
        summary = rec.extract_facts(
            parse_item_ids(items), out=out_dir, retry_failed=retry_failed, progress=not as_json, **overrides
        )
        rec.close()
        if as_json:
            out.print_json(data=summary.as_dict())
            return
        out.print(
            f"[green]ok[/] {summary.extracted} item(s) read, {summary.skipped} unchanged since the last run; facts "
            f"kept {summary.kept} (new {summary.written}), retracted {summary.retracted} (an earlier text's), "
            f"dropped {sum(summary.dropped.values())} "
            f"{summary.dropped or ''}; failed items {summary.failed or 0}; {summary.items_per_second:.2f} items/s"
        )
        out.print(f"resolved: {summary.resolved or '—'} · review: {summary.report}")

    _run(go)


eval_app = typer.Typer(help="Offline evaluation: protocols P1–P4, tuned baselines, ablations, reports.")
app.add_typer(eval_app, name="eval")


@contextmanager
def _eval_progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:

        def factory(desc: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(desc, total=total)
            return lambda n: bar.advance(task, n)

        yield factory


@eval_app.command("run")
def eval_run(config: Annotated[Path, typer.Argument(help="Run configuration (TOML).")]) -> None:
    """Run the protocols, baselines and ablations of CONFIG; resumable; writes results.json and report.md."""

    def go() -> None:
        from knowrec.eval.config import load_config
        from knowrec.eval.harness import Harness

        cfg = load_config(config)
        with _eval_progress() as progress:
            results = Harness(cfg, progress=progress).run()
        out.print(f"[green]ok[/] {cfg.run.out / 'report.md'} ({results['wall_s']:.0f} s)")

    _run(go)


@eval_app.command("compare")
def eval_compare(
    a: Annotated[str, typer.Argument(help="RUN_DIR[:SYSTEM] (system defaults to knowrec).")],
    b: Annotated[str, typer.Argument(help="RUN_DIR[:SYSTEM].")],
    protocol: Annotated[str, typer.Option(help="p1, p2 or p4 (e.g. --metric Success@5@3).")] = "p2",
    metric: Annotated[list[str] | None, typer.Option(help="Metric(s); default NDCG@10 and HR@10.")] = None,
) -> None:
    """Per-user paired comparison of A and B: mean difference, paired t-test and Wilcoxon p-values."""

    def go() -> None:
        from knowrec.eval.report import compare

        rows = compare(a, b, protocol=protocol, metrics=tuple(metric or ["NDCG@10", "HR@10"]))
        table = Table(title=f"{a} vs {b} ({protocol})", title_justify="left")
        for col in ("metric", "users", "A", "B", "A − B", "t", "p (t-test)", "p (Wilcoxon)"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["metric"],
                str(r["n"]),
                f"{r['mean_a']:.4f}",
                f"{r['mean_b']:.4f}",
                f"{r['mean_diff']:+.4f}",
                f"{r['t']:.2f}",
                f"{r['p_t']:.3g}",
                f"{r['p_wilcoxon']:.3g}",
            )
        out.print(table)

    _run(go)


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
