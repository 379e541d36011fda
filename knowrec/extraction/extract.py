"""Facts from item text: ask the LLM under a JSON schema, keep what the text supports, resolve objects, write.

Per item: the text of the chosen fields is cut into numbered sentences; the LLM answers
``{"facts": [[relation, object, evidence], …]}`` under a JSON schema (a llama.cpp grammar in process, vLLM's
``response_format`` over HTTP); a fact survives only when its evidence occurs in the text, its object occurs in the
text and in that evidence, and its relation is in the schema (every drop is counted by reason); objects resolve to
stored entities (:mod:`knowrec.extraction.resolve`) or become new ones. Each item's facts are written whole, with
provenance (source ``llm``, model, adapter, prompt, confidence, evidence). Results are kept per item in a JSONL file
so that an interrupted run resumes where it stopped and a second run over unchanged text asks and writes nothing.
An item read again (its text changed, or another model or prompt read it) has the facts of its earlier reading that
the new one does not repeat retracted in the same write; if the new answer fails, those whose evidence the new text
still contains stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from knowrec.agent.llm.base import LLMClient
from knowrec.config import ExtractConfig
from knowrec.errors import InvalidInput, LLMError
from knowrec.extraction.resolve import EntityResolver
from knowrec.extraction.schema import ExtractionSchema
from knowrec.extraction.text import Sentence, contains, mentions, normalise, sentences
from knowrec.kg_store.base import GraphBatch, GraphStore, Retraction
from knowrec.prompts import load_prompt
from knowrec.types import Fact, Item, Provenance, fact_id

__all__ = [
    "Checked",
    "ExtractSummary",
    "ExtractionRun",
    "FactExtractor",
    "ItemAnswer",
    "load_results",
    "parse_item_ids",
    "source_text",
]

log = logging.getLogger(__name__)

LLM_SOURCE = "llm"

EXTRACTOR_VERSION = "3"
"""Bumped when the checks or the names offered change, so that stored results are not reused across versions."""


@dataclass
class _ItemWrite:
    """An answered item not yet written: its facts (each with the object text it was read from), the facts of an
    earlier reading it keeps (a failed answer: those the text still supports) and those it retracts."""

    answer: ItemAnswer
    facts: list[tuple[str, Fact]]
    carried: list[dict[str, Any]] = field(default_factory=list)
    retract: list[Retraction] = field(default_factory=list)


_Pending = list[_ItemWrite]


def source_text(item: Item, fields: Sequence[str]) -> list[tuple[str, str]]:
    """``(field, text)`` of each chosen field that has text: ``text``, ``title`` or an attribute name."""
    out = []
    for name in fields:
        value = item.text if name == "text" else item.title if name == "title" else item.attributes.get(name, "")
        if value and value.strip():
            out.append((name, value.strip()))
    return out


_ARTICLE = re.compile(r"^(?:the|a|an) ")


def _title_forms(title: str) -> tuple[str, ...]:
    """The ways a text names the item itself: "The Thin Blue Line (1988)", "The Thin Blue Line", "Thin Blue Line"."""
    bare = title.rsplit(" (", 1)[0] if title.endswith(")") else title
    return tuple(dict.fromkeys((title, bare, _ARTICLE.sub("", bare.casefold()))))


def _without_title(text: str, title: str) -> str:
    """The text with the item's title taken out where it is quoted whole (MovieLens texts start with it)."""
    for form in sorted(set(_title_forms(title)[:2]), key=len, reverse=True):  # with and without "(year)"
        text = re.sub(re.escape(form), " ", text, flags=re.IGNORECASE)
    return text


def text_hash(parts: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha1(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checked:
    """A fact of the answer that the text supports."""

    relation: str
    object: str
    evidence: str
    field: str


@dataclass
class ItemAnswer:
    """What the LLM said about one item, after the evidence check (before resolution)."""

    item_id: str
    hash: str
    facts: list[Checked] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    failure: str = ""
    """Why the whole item was skipped (``llm_error``, ``invalid_answer``); ``""`` when answered."""
    detail: str = ""


class FactExtractor:
    """Asks the LLM for one item's facts and checks them against the item's text. Thread-safe (no shared state)."""

    def __init__(self, llm: LLMClient, schema: ExtractionSchema, cfg: ExtractConfig) -> None:
        self.llm = llm
        self.schema = schema
        self.cfg = cfg
        self.prompt = load_prompt("kg_extract")

    def messages(self, item: Item, sents: list[tuple[str, Sentence]], names: list[str] | None) -> list[dict[str, str]]:
        text = self.prompt.render(
            title=item.title,
            relations=[(r.name, r.description) for r in self.schema.relations],
            sentences=[(s.number, s.text) for _, s in sents],
            mentions=names or [],
        )
        return [{"role": "user", "content": text}]

    @staticmethod
    def sentences(parts: Sequence[tuple[str, str]]) -> list[tuple[str, Sentence]]:
        """Numbered sentences of every field, numbered across fields from 1."""
        out: list[tuple[str, Sentence]] = []
        for name, text in parts:
            for s in sentences(text):
                out.append((name, Sentence(len(out) + 1, s.start, s.end, s.text)))
        return out

    def ask(self, item: Item) -> ItemAnswer:
        """One item's checked facts; an LLM failure or an answer off the schema fails the item (never half of it)."""
        parts = source_text(item, self.cfg.fields)
        answer = ItemAnswer(item.id, text_hash(parts))
        if not parts:
            return answer
        sents = self.sentences(parts)
        exclude = _title_forms(item.title)
        untitled = " ".join(_without_title(t, item.title) for _, t in parts)
        names = mentions(untitled, exclude=exclude, limit=self.cfg.max_mentions) if self.cfg.constrain_objects else None
        if names is not None and not names:
            return answer  # no name in the text: nothing a fact could point at
        schema = self.schema.answer_schema(self.cfg.max_facts, names, len(sents))
        try:
            reply = self.llm.chat(self.messages(item, sents, names), schema=schema, max_tokens=self.cfg.max_tokens)
        except LLMError as exc:
            answer.failure, answer.detail = "llm_error", str(exc)[:300]
            return answer
        facts = reply.parsed.get("facts") if isinstance(reply.parsed, dict) else None
        if not isinstance(facts, list):
            answer.failure, answer.detail = "invalid_answer", reply.text[:300]
            return answer
        self._check(item, facts, sents, answer)
        return answer

    def _check(self, item: Item, facts: list[Any], sents: list[tuple[str, Sentence]], answer: ItemAnswer) -> None:
        full = " ".join(s.text for _, s in sents)
        untitled = _without_title(full, item.title)
        seen: set[tuple[str, str]] = set()
        title_keys = {normalise(t) for t in _title_forms(item.title)}
        for raw in facts:
            if isinstance(raw, list) and len(raw) == 3:
                relation, obj, evidence = str(raw[0]), str(raw[1]).strip(), raw[2]
            elif isinstance(raw, dict) and {"relation", "object", "evidence"} <= raw.keys():
                relation, obj, evidence = str(raw["relation"]), str(raw["object"]).strip(), raw["evidence"]
            else:
                answer.dropped["malformed"] += 1
                continue
            if self.schema.relation(relation) is None:
                answer.dropped["unknown_relation"] += 1
                continue
            span, where = self._evidence(evidence, sents)
            if span is None:
                answer.dropped["evidence_not_in_text"] += 1
            elif not obj or not contains(full, obj):
                answer.dropped["object_not_in_text"] += 1
            elif not contains(span, obj):
                answer.dropped["object_not_in_evidence"] += 1
            elif (
                normalise(obj) in title_keys
                or _ARTICLE.sub("", normalise(obj)) in title_keys
                or not contains(untitled, obj)  # only named inside the title: "Star Wars" of "Star Wars: Episode I"
            ):
                answer.dropped["object_is_the_item"] += 1
            elif (relation, normalise(obj)) in seen:
                answer.dropped["duplicate"] += 1
            else:
                seen.add((relation, normalise(obj)))
                answer.facts.append(Checked(relation, obj, span, where))

    @staticmethod
    def _evidence(evidence: Any, sents: list[tuple[str, Sentence]]) -> tuple[str | None, str]:
        """The evidence span and its field: a sentence number, or a quote that must occur in one of the fields."""
        if isinstance(evidence, bool):
            return None, ""
        if isinstance(evidence, int):
            if 1 <= evidence <= len(sents):
                where, s = sents[evidence - 1]
                return s.text, where
            return None, ""
        quote = " ".join(str(evidence).split())
        for where, s in sents:
            if contains(s.text, quote):
                return quote, where
        full = " ".join(s.text for _, s in sents)
        return (quote, sents[0][0]) if sents and contains(full, quote) else (None, "")


@dataclass
class ExtractSummary:
    """What a run did. ``skipped`` items had a stored result for the same text; ``failed`` counts by reason."""

    items: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    proposed: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    written: int = 0
    """Facts new to the store."""
    retracted: int = 0
    """Facts of an earlier reading of an item (its old text) removed from the store."""
    resolved: dict[str, int] = field(default_factory=dict)
    """Objects by how they resolved: ``label``, ``alias``, ``embedding``, ``new``."""
    new_entities: int = 0
    seconds: float = 0.0
    report: str = ""

    @property
    def items_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "items_per_second": round(self.items_per_second, 3)}


class ExtractionRun:
    """Extracts facts for many items with bounded concurrency, resumable, and writes them to the graph store.

    Args:
        store: where facts go (and where entities to resolve against come from).
        extractor: asks the LLM.
        resolver: maps objects to entities (its state grows with the run's new entities).
        out_dir: the per-item results (``results.jsonl``) and the review report (``report.json``, ``report.md``).
        concurrency: items in flight at once (threads calling the LLM).
        write_every: items per store write.
        adapter: the LoRA adapter that answered, for provenance.
    """

    def __init__(
        self,
        store: GraphStore,
        extractor: FactExtractor,
        resolver: EntityResolver,
        out_dir: Path,
        concurrency: int = 1,
        write_every: int = 20,
        adapter: str = "",
    ) -> None:
        self.store = store
        self.extractor = extractor
        self.resolver = resolver
        self.out_dir = Path(out_dir)
        self.concurrency = max(1, concurrency)
        self.write_every = max(1, write_every)
        self.adapter = adapter
        self.results_path = self.out_dir / "results.jsonl"
        self._last: dict[str, dict[str, Any]] = {}
        self._done = self._load()
        self._merges: dict[tuple[str, str], dict[str, Any]] = {}
        self._new: dict[str, dict[str, Any]] = {}

    @property
    def key(self) -> dict[str, str]:
        """What makes stored results reusable: the schema, the prompt, the model and the fields read."""
        ex = self.extractor
        return {
            "schema": ex.schema.fingerprint,
            "prompt": ex.prompt.ref,
            "model": ex.llm.model_id,
            "fields": ",".join(ex.cfg.fields),
            "constrain_objects": str(ex.cfg.constrain_objects),
            "extractor": EXTRACTOR_VERSION,
        }

    def _load(self) -> dict[str, dict[str, Any]]:
        """Stored results by item id (the last line of an item wins), when their key matches this run's; the last
        result of every item, whatever its key, goes to ``_last`` (the facts a new reading replaces)."""
        done: dict[str, dict[str, Any]] = {}
        if not self.results_path.is_file():
            return done
        key = self.key
        with self.results_path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: that item is asked again
                    log.warning("%s:%d: unreadable result line skipped (its item is asked again)", self.results_path, n)
                    continue
                self._last[rec["item"]] = rec
                if rec.get("key") == key:
                    done[rec["item"]] = rec
        return done

    def run(
        self,
        items: Iterable[Item],
        retry_failed: bool = False,
        on_item: Callable[[ItemAnswer | None, ExtractSummary], None] | None = None,
    ) -> ExtractSummary:
        """Extract and write facts for ``items``; ``on_item`` is called after each (``None`` for a skipped one)."""
        started = time.perf_counter()
        summary = ExtractSummary()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pending: _Pending = []
        try:
            for item, answer in self._answers(items, retry_failed, summary, on_item):
                pending.append(self._superseding(item, answer, self._resolve(item, answer, summary)))
                if len(pending) >= self.write_every:
                    self._flush(pending, summary)
                if on_item is not None:
                    on_item(answer, summary)
        finally:
            if pending:  # what was answered before an interrupt is kept
                self._flush(pending, summary)
            summary.seconds = round(time.perf_counter() - started, 3)
            summary.report = str(self._report(summary))
        return summary

    def _todo(self, item: Item, retry_failed: bool) -> bool:
        rec = self._done.get(item.id)
        if rec is None or rec["hash"] != text_hash(source_text(item, self.extractor.cfg.fields)):
            return True
        return retry_failed and bool(rec.get("failure"))

    def _answers(
        self,
        items: Iterable[Item],
        retry_failed: bool,
        summary: ExtractSummary,
        on_item: Callable[[ItemAnswer | None, ExtractSummary], None] | None,
    ) -> Iterator[tuple[Item, ItemAnswer]]:
        """LLM answers in item order, ``concurrency`` requests in flight."""

        def todo() -> Iterator[Item]:
            for item in items:
                summary.items += 1
                if self._todo(item, retry_failed):
                    yield item
                else:
                    summary.skipped += 1
                    if on_item is not None:
                        on_item(None, summary)

        if self.concurrency == 1:
            for item in todo():
                yield item, self.extractor.ask(item)
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="kg-extract") as pool:
            batch: list[Item] = []
            for item in todo():
                batch.append(item)
                if len(batch) >= self.concurrency * 2:
                    yield from zip(batch, pool.map(self.extractor.ask, batch), strict=True)
                    batch = []
            if batch:
                yield from zip(batch, pool.map(self.extractor.ask, batch), strict=True)

    def _resolve(self, item: Item, answer: ItemAnswer, summary: ExtractSummary) -> list[tuple[str, Fact]]:
        """The item's facts, objects resolved to entities, each with the object text it was read from."""
        if answer.failure:
            summary.failed[answer.failure] = summary.failed.get(answer.failure, 0) + 1
            return []
        summary.extracted += 1
        summary.proposed += len(answer.facts) + sum(answer.dropped.values())
        for reason, n in answer.dropped.items():
            summary.dropped[reason] = summary.dropped.get(reason, 0) + n
        kept: dict[str, tuple[str, Fact]] = {}
        ex = self.extractor
        for c in answer.facts:
            if self.resolver.is_attribute(c.object):  # "Drama" in "Genres: Drama" is no person or company
                answer.dropped["object_is_a_genre_or_year"] += 1
                summary.dropped["object_is_a_genre_or_year"] = summary.dropped.get("object_is_a_genre_or_year", 0) + 1
                continue
            res = self.resolver.resolve(c.object, ex.schema.types_of(c.relation))
            summary.resolved[res.method] = summary.resolved.get(res.method, 0) + 1
            if res.method == "new":
                entry = self._new.setdefault(res.entity_id, {"id": res.entity_id, "label": res.label, "items": []})
                entry["items"].append(item.id)
            elif c.object != res.label or res.method != "label":  # exact matches are not worth a review
                merge = self._merges.setdefault(
                    (c.object, res.entity_id),
                    {
                        "object": c.object,
                        "entity": res.entity_id,
                        "label": res.label,
                        "method": res.method,
                        "score": round(res.score, 4),
                        "items": [],
                    },
                )
                merge["items"].append(item.id)
            f = Fact(
                head=item.id,
                relation=c.relation,
                tail=res.entity_id,
                head_label=item.title,
                tail_label=res.label,
                source=LLM_SOURCE,
                provenance=Provenance(
                    source=LLM_SOURCE,
                    model=ex.llm.model_id,
                    adapter=self.adapter,
                    prompt=ex.prompt.ref,
                    confidence=round(min(1.0, res.score), 4),
                    evidence=c.evidence,
                    field=c.field,
                ),
            )
            kept.setdefault(f.id, (c.object, f))  # two objects resolving to one entity are one fact
        summary.kept += len(kept)
        return list(kept.values())

    def _superseding(self, item: Item, answer: ItemAnswer, facts: list[tuple[str, Fact]]) -> _ItemWrite:
        """The item's write: its new facts, and what becomes of the facts its last recorded reading wrote (an item read
        again because its text, the model or the prompt changed). Those the new answer repeats stay; after a failed
        answer, so do those whose evidence the current text still contains (the item can be asked again); the rest are
        retracted (only where the store holds them as ``llm`` facts: a fact the data also states stays)."""
        write = _ItemWrite(answer, facts)
        prev = self._last.get(item.id)
        if not prev or not prev.get("facts"):
            return write
        new = {f.id for _, f in facts}
        text = " ".join(t for _, t in source_text(item, self.extractor.cfg.fields))
        for old in prev["facts"]:
            fid = fact_id(item.id, old["relation"], old["entity"])
            if fid in new:
                continue
            if answer.failure and old.get("evidence") and contains(text, old["evidence"]):
                write.carried.append(old)
            else:
                write.retract.append(Retraction(fid, LLM_SOURCE))
        return write

    def _flush(self, pending: _Pending, summary: ExtractSummary) -> None:
        """Write the pending items' facts (and retract what they replace) in one transaction, then record them as
        done (never the reverse)."""
        facts = [f for w in pending for _, f in w.facts]
        retract = [r for w in pending for r in w.retract]
        if facts or retract:
            stats = self.store.write(GraphBatch(facts=facts, retract=retract))
            summary.written += stats.facts
            summary.retracted += stats.retracted
        key = self.key
        with self.results_path.open("a", encoding="utf-8") as fh:
            for w in pending:
                answer, fs = w.answer, w.facts
                rec = {
                    "item": answer.item_id,
                    "hash": answer.hash,
                    "key": key,
                    "failure": answer.failure,
                    "detail": answer.detail,
                    "facts": [
                        {
                            "relation": f.relation,
                            "object": obj,
                            "entity": f.tail,
                            "label": f.tail_label,
                            "evidence": f.provenance.evidence if f.provenance else "",
                        }
                        for obj, f in fs
                    ]
                    + w.carried,
                    "dropped": dict(answer.dropped),
                }
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self._done[answer.item_id] = rec
                self._last[answer.item_id] = rec
        pending.clear()

    def _report(self, summary: ExtractSummary) -> Path:
        """``report.json`` and ``report.md``: counts, merges into stored entities and new entities, for review."""
        summary.new_entities = len(self._new)
        merges = sorted(self._merges.values(), key=lambda m: (m["method"], -len(m["items"]), m["object"]))
        new = sorted(self._new.values(), key=lambda e: (-len(e["items"]), e["id"]))
        body = {"summary": summary.as_dict(), "key": self.key, "merges": merges, "new_entities": new}
        (self.out_dir / "report.json").write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n")
        lines = [
            "# Facts extracted from item text",
            "",
            f"Items: {summary.items} ({summary.extracted} asked, {summary.skipped} unchanged since the last run, "
            f"failed: {summary.failed or 'none'}). Facts proposed {summary.proposed}, kept {summary.kept}, "
            f"new to the store {summary.written}, retracted (an earlier text's) {summary.retracted}; "
            f"dropped: {summary.dropped or 'none'}.",
            "",
            "## Merged into stored entities (check these)",
            "",
            "| text | entity | how | score | items |",
            "|---|---|---|---|---|",
            *[
                f"| {m['object']} | {m['label']} (`{m['entity']}`) | {m['method']} | {m['score']} | {len(m['items'])} |"
                for m in merges
            ],
            "",
            "## New entities",
            "",
            "| entity | label | items |",
            "|---|---|---|",
            *[f"| `{e['id']}` | {e['label']} | {len(e['items'])} |" for e in new],
        ]
        path = self.out_dir / "report.md"
        path.write_text("\n".join(lines) + "\n")
        return path


def parse_item_ids(spec: str) -> list[str] | None:
    """``all`` → ``None``; ``"1,2, 3"`` → ids; ``@ids.txt`` → the ids in that file (one per line or comma-separated);
    an empty spec is an error."""
    if spec.strip().lower() == "all":
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            spec = path.read_text(encoding="utf-8").replace("\n", ",")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read item ids: {exc}", path=path) from exc
    ids = [x.strip() for x in spec.split(",") if x.strip()]
    if not ids:
        raise InvalidInput("no item ids given", field="items")
    return ids


def load_results(path: Path | str, titles: dict[str, str] | None = None) -> list[Fact]:
    """The facts of a run's ``results.jsonl`` (the last result of each item), with their provenance: to add extracted
    facts to a dataset without asking the LLM again (``knowrec eval``'s ``dataset.extracted_facts``).

    Raises:
        InvalidInput: the file is missing or a line is not a result (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInput("extraction results not found", path=path)
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                last[str(rec["item"])] = (n, rec)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InvalidInput(f"not an extraction result ({exc})", path=path, line=n) from exc
    facts: list[Fact] = []
    for item_id, (n, rec) in last.items():
        try:
            key = rec.get("key", {})
            for f in rec.get("facts", []):
                facts.append(
                    Fact(
                        head=item_id,
                        relation=f["relation"],
                        tail=f["entity"],
                        head_label=(titles or {}).get(item_id, ""),
                        tail_label=f["label"],
                        source=LLM_SOURCE,
                        provenance=Provenance(
                            source=LLM_SOURCE, model=key.get("model", ""), prompt=key.get("prompt", ""),
                            evidence=f.get("evidence", ""),
                        ),
                    )
                )  # fmt: skip
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # ValueError: pydantic's ValidationError
            raise InvalidInput(f"not an extraction result ({type(exc).__name__}: {exc})", path=path, line=n) from exc
    return facts
