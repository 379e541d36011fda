"""Write a synthetic dataset in the generic format (docs/data-format.md) of a given size, for the scale benchmark.

Usage:
    python bench/make_scale_data.py --items 100000 --interactions 2000000 --facts 1000000 --seed 0 --out /tmp/scale

Writes ``items.csv``, ``interactions.csv``, ``facts.tsv`` and ``scale-meta.json`` (the parameters, the counts and
the genre names; the loader ignores it) into ``--out``. Same arguments, same bytes.

What the data looks like, so that every generator has something to find:

* **Clusters.** Items are split into clusters of ``--cluster-size`` items, each an ordered chain. Clusters have a
  theme (a few made-up words in every item's text), a primary genre, a studio, a handful of tags and a cast, so the
  vector and knowledge-graph generators see the same structure the interactions follow.
* **Popularity.** Every item has a Zipf-like weight ``1 / (rank + 10) ** --zipf`` (ranks shuffled over the ids).
* **Sessions.** A user's history is a series of sessions (mean length ``--session-len``). A session starts at an
  item drawn by popularity (or, half the time, from the user's favourite cluster) and walks forward along that
  cluster's chain, one or two steps at a time; ``--noise`` of the steps jump to a random popular item instead. So
  the next item is predictable from the last ones (sequential model) and users who share clusters share items (EASE).
* **Users** have lognormal history lengths (at least 5), strictly increasing timestamps (minutes inside a session,
  days between sessions) and integer ratings 1-5 from item quality + user bias + noise.
* **Facts** link items to entities of four kinds, each with a label: ``genre:`` (20 genres, huge fan-out), ``studio:``
  (about ``items/100``, Zipf fan-out around a hundred), ``tag:`` (about ``items/20``, fan-out tens) and people
  ``person:`` with relations ``starring``/``director``/``writer`` (about ``0.8 × items``, fan-out ~5). Shares of the
  ``--facts`` total: genre 20%, studio 10%, tag 30%, people 40%; each fact is the cluster's own entity most of the time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
    "IMAX",
    "Biography",
)


def _words(text: str) -> np.ndarray:
    return np.array(text.split())


_SYLLABLES = _words(
    "ka lo mi ra ne to su vi da pe ro la zen mor tal ith an el or ur bel cor dan fin gar hal jor kel lin "
    "mar nor pol quin ser tor val wen yor zar bri cla dre fro glo pra sti tre"
)
_ADJ = _words(
    "silent golden broken hidden last crimson distant frozen burning lonely secret wild bright dark "
    "hollow iron little lost midnight northern quiet restless savage shining stolen strange sudden "
    "velvet wandering young"
)
_NOUN = _words(
    "river empire garden station voyage harbor kingdom mirror letter island storm promise shadow journey "
    "city heart road circus winter summer forest machine signal frontier orchard lantern tower bridge "
    "echo"
)


def _names(rng: np.random.Generator, n: int, parts: int) -> list[str]:
    """``n`` made-up capitalised names of ``parts`` words of two syllables each (not necessarily unique)."""
    syl = _SYLLABLES[rng.integers(0, len(_SYLLABLES), size=(n, parts, 2))]
    words = np.char.add(syl[:, :, 0], syl[:, :, 1])
    out = words[:, 0]
    for p in range(1, parts):
        out = np.char.add(np.char.add(out, " "), words[:, p])
    return [s.title() for s in out.tolist()]


def _zipf_weights(rng: np.random.Generator, n: int, a: float) -> np.ndarray:
    """Probabilities ``∝ 1 / (rank + 10) ** a`` with ranks randomly assigned to the ``n`` entries."""
    w = 1.0 / (np.arange(n) + 10.0) ** a
    w = w[rng.permutation(n)]
    return w / w.sum()


def _draw(rng: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    """``size`` indices drawn with probabilities ``p`` (inverse CDF; much faster than ``choice`` with ``p``)."""
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(p) - 1)


def _sessions(
    rng: np.random.Generator,
    rows: int,
    n_users: int,
    cluster_of: np.ndarray,
    pos_of: np.ndarray,
    chain: np.ndarray,
    cl_start: np.ndarray,
    cl_len: np.ndarray,
    pop: np.ndarray,
    quality: np.ndarray,
    session_len: float,
    noise: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """About ``rows`` interaction rows (users contiguous, in time order): user, item, rating, timestamp arrays and
    the number of sessions (see the module docstring)."""
    lengths = rng.lognormal(mean=0.0, sigma=0.9, size=n_users)
    lengths = np.maximum(5, np.round(lengths / lengths.sum() * rows)).astype(np.int64)
    total = int(lengths.sum())
    user = np.repeat(np.arange(n_users), lengths)
    first_of_user = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos_in_user = np.arange(total) - np.repeat(first_of_user, lengths)
    new_session = (pos_in_user == 0) | (rng.random(total) < 1.0 / session_len)
    session = np.cumsum(new_session) - 1
    n_sessions = int(session[-1]) + 1
    sess_first = np.flatnonzero(new_session)
    # session start: by popularity, or (half the time) a random item of the user's favourite cluster
    fav_cluster = cluster_of[_draw(rng, pop, n_users)]
    sess_user = user[sess_first]
    start = _draw(rng, pop, n_sessions)
    from_fav = rng.random(n_sessions) < 0.5
    fc = fav_cluster[sess_user[from_fav]]
    start[from_fav] = chain[cl_start[fc] + rng.integers(0, 1 << 30, size=fc.size) % cl_len[fc]]
    # walk the chain: each step advances 1 or 2 positions inside the start item's cluster
    steps = np.where(rng.random(total) < 0.75, 1, 2)
    steps[new_session] = 0
    walked = np.cumsum(steps)
    walked -= walked[sess_first][session]
    s_item = start[session]
    c = cluster_of[s_item]
    offset = (pos_of[s_item] - cl_start[c] + walked) % cl_len[c]
    item = chain[cl_start[c] + offset]
    jump = (rng.random(total) < noise) & ~new_session
    item[jump] = _draw(rng, pop, int(jump.sum()))
    # timestamps: minutes apart inside a session, about two days between sessions; users start over three years
    gap = np.where(new_session, rng.exponential(2 * 86400.0, total), rng.exponential(600.0, total)) + 1.0
    gap[pos_in_user == 0] = rng.uniform(0, 3 * 365 * 86400.0, n_users)
    t = np.cumsum(gap)
    t -= np.repeat(t[first_of_user] - gap[first_of_user], lengths)
    ts = 1_500_000_000 + np.floor(t).astype(np.int64) + pos_in_user  # strictly increasing per user
    user_bias = rng.normal(0.0, 0.4, n_users)
    rating = np.clip(np.rint(quality[item] + user_bias[user] + rng.normal(0.0, 0.8, total)), 1, 5).astype(np.int64)
    return user, item, rating, ts, n_sessions


def make(
    n_items: int,
    n_interactions: int,
    n_facts: int,
    n_users: int,
    seed: int,
    *,
    cluster_size: int = 50,
    session_len: float = 8.0,
    noise: float = 0.15,
    zipf: float = 0.9,
) -> dict[str, object]:
    """Generate the dataset in memory; returns the arrays and strings :func:`write` needs."""
    rng = np.random.default_rng([seed, 0])
    n_clusters = max(1, -(-n_items // cluster_size))
    # chain order: item chain[p] sits at chain position p; cluster c holds positions [c*C, (c+1)*C)
    chain = rng.permutation(n_items)
    pos_of = np.empty(n_items, dtype=np.int64)
    pos_of[chain] = np.arange(n_items)
    cluster_of = pos_of // cluster_size  # of each item id
    cl_start = np.arange(n_clusters) * cluster_size
    cl_len = np.minimum(cluster_size, n_items - cl_start)
    pop = _zipf_weights(rng, n_items, zipf)
    quality = np.clip(rng.normal(3.5, 0.6, n_items), 1.0, 5.0)

    # -- users and sessions -------------------------------------------------------------------------------------
    # repeats of (user, item) are dropped, so draw more rows than wanted (more again if still short), then trim
    factor = 1.15
    for attempt in range(8):
        rng_x = np.random.default_rng([seed, 1, attempt])
        user, item, rating, ts, n_sessions = _sessions(
            rng_x,
            int(n_interactions * factor) + 16,
            n_users,
            cluster_of,
            pos_of,
            chain,
            cl_start,
            cl_len,
            pop,
            quality,
            session_len,
            noise,
        )
        key = user.astype(np.int64) * n_items + item
        _, first = np.unique(key, return_index=True)
        if first.size >= n_interactions or attempt == 7:
            break
        factor *= 1.02 * n_interactions / first.size
    # a user meets an item once: keep the first occurrence, then drop random rows down to the target
    keep = np.zeros(user.size, dtype=bool)
    keep[first] = True
    if first.size > n_interactions:
        keep[rng_x.choice(first, size=first.size - n_interactions, replace=False)] = False
    user, item, rating, ts = user[keep], item[keep], rating[keep], ts[keep]

    rng = np.random.default_rng([seed, 2])
    # -- facts -------------------------------------------------------------------------------------------------
    n_studios = max(5, n_items // 100)
    n_tags = max(10, n_items // 20)
    n_people = max(20, int(n_items * 0.8))
    cl_genre = rng.integers(0, len(GENRES), n_clusters)
    cl_studio = _draw(rng, _zipf_weights(rng, n_studios, 1.0), n_clusters)
    cl_tags = rng.integers(0, n_tags, (n_clusters, 5))
    cl_people = rng.integers(0, n_people, (n_clusters, 12))
    studio_w = _zipf_weights(rng, n_studios, 1.0)
    people_w = _zipf_weights(rng, n_people, 0.9)
    parts: list[np.ndarray] = []  # (head item, kind, tail index) rows per kind
    # kind: 0 genre, 1 studio, 2 tag, 3 starring, 4 director, 5 writer

    def add(target: int, over: float, own_share: float, own: object, other: object, kind: object) -> None:
        """``target`` distinct facts of one kind: spread over the items, the cluster's entity with probability
        ``own_share`` (else ``other``), drawn ``over`` times the target, repeats dropped, trimmed at random."""
        count = int(target * over) + 8
        h = np.concatenate([np.tile(np.arange(n_items), count // n_items), rng.permutation(n_items)[: count % n_items]])
        mine = rng.random(h.size) < own_share
        tail = np.where(mine, own(cluster_of[h]), other(h.size))  # type: ignore[operator]
        k = kind(h.size)  # type: ignore[operator]
        _, first = np.unique((h * 6 + k) * (n_people + n_items + 1) + tail, return_index=True)
        if first.size > target:
            first = rng.choice(first, size=target, replace=False)
        parts.append(np.stack([h[first], k[first], tail[first]]))

    target = {"genre": int(n_facts * 0.2), "studio": int(n_facts * 0.1), "tag": int(n_facts * 0.3)}
    target["people"] = n_facts - sum(target.values())
    # genre: the cluster's primary genre, or a random one
    add(
        target["genre"],
        1.8,
        0.5,
        lambda c: cl_genre[c],
        lambda n: rng.integers(0, len(GENRES), n),
        lambda n: np.zeros(n, dtype=np.int64),
    )
    # studio: the cluster's studio, or one by studio popularity
    add(
        target["studio"],
        1.5,
        0.7,
        lambda c: cl_studio[c],
        lambda n: _draw(rng, studio_w, n),
        lambda n: np.ones(n, dtype=np.int64),
    )
    # tag: one of the cluster's five tags, or a random one
    add(
        target["tag"],
        1.4,
        0.7,
        lambda c: cl_tags[c, rng.integers(0, 5, c.size)],
        lambda n: rng.integers(0, n_tags, n),
        lambda n: np.full(n, 2, dtype=np.int64),
    )
    # people: the cluster's cast, or anyone (Zipf); starring 70%, director 15%, writer 15%
    add(
        target["people"],
        1.3,
        0.6,
        lambda c: cl_people[c, rng.integers(0, 12, c.size)],
        lambda n: _draw(rng, people_w, n),
        lambda n: 3 + _draw(rng, np.array([0.7, 0.15, 0.15]), n),
    )
    f_head, f_kind, f_tail = np.concatenate(parts, axis=1)
    order = np.lexsort((f_tail, f_kind, f_head))  # by item, then kind
    f_head, f_kind, f_tail = f_head[order], f_kind[order], f_tail[order]

    # -- texts ---------------------------------------------------------------------------------------------------
    words = np.array([f"{a}{b}" for a in _SYLLABLES for b in _SYLLABLES])  # the theme vocabulary
    cl_theme = rng.integers(0, len(words), (n_clusters, 3))
    adj = _ADJ[rng.integers(0, len(_ADJ), n_items)]
    noun = _NOUN[rng.integers(0, len(_NOUN), n_items)]
    item_theme = words[cl_theme[cluster_of]]
    extra = words[rng.integers(0, len(words), (n_items, 2))]
    return {
        "n_items": n_items,
        "user": user,
        "item": item,
        "rating": rating,
        "ts": ts,
        "f_head": f_head,
        "f_kind": f_kind,
        "f_tail": f_tail,
        "adj": adj,
        "noun": noun,
        "item_genre": cl_genre[cluster_of],
        "item_theme": item_theme,
        "item_extra": extra,
        "studio_names": _names(rng, n_studios, 1),
        "tag_names": [f"{w}" for w in words[rng.integers(0, len(words), n_tags)].tolist()],
        "people_names": _names(rng, n_people, 2),
        "counts": {
            "clusters": n_clusters,
            "studios": n_studios,
            "tags": n_tags,
            "people": n_people,
            "sessions": n_sessions,
        },
    }


def write(data: dict[str, object], out: Path) -> dict[str, int]:
    """Write the three files; returns the row counts."""
    out.mkdir(parents=True, exist_ok=True)
    n_items = int(data["n_items"])  # type: ignore[call-overload]
    ids = [f"i{j}" for j in range(n_items)]
    adj, noun = data["adj"].tolist(), data["noun"].tolist()  # type: ignore[attr-defined]
    titles = [f"The {a.title()} {b.title()} {j}" for j, (a, b) in enumerate(zip(adj, noun, strict=True))]
    genre = data["item_genre"].tolist()  # type: ignore[attr-defined]
    theme = data["item_theme"].tolist()  # type: ignore[attr-defined]
    extra = data["item_extra"].tolist()  # type: ignore[attr-defined]
    with (out / "items.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,title,text\n")
        fh.writelines(
            f"{ids[j]},{titles[j]},A {GENRES[genre[j]].lower()} story of {' '.join(theme[j])} and "
            f"{' '.join(extra[j])}\n"
            for j in range(n_items)
        )
    user, item = data["user"].tolist(), data["item"].tolist()  # type: ignore[attr-defined]
    rating, ts = data["rating"].tolist(), data["ts"].tolist()  # type: ignore[attr-defined]
    with (out / "interactions.csv").open("w", encoding="utf-8") as fh:
        fh.write("user_id,item_id,rating,timestamp\n")
        fh.writelines(f"u{u},i{i},{r},{t}\n" for u, i, r, t in zip(user, item, rating, ts, strict=True))
    studios, tags, people = data["studio_names"], data["tag_names"], data["people_names"]
    kinds = (
        ("genre", "genre:{}", lambda k: GENRES[k]),
        ("studio", "studio:{}", lambda k: studios[k]),  # type: ignore[index]
        ("tag", "tag:{}", lambda k: tags[k]),  # type: ignore[index]
        ("starring", "person:{}", lambda k: people[k]),  # type: ignore[index]
        ("director", "person:{}", lambda k: people[k]),  # type: ignore[index]
        ("writer", "person:{}", lambda k: people[k]),  # type: ignore[index]
    )
    f_head = data["f_head"].tolist()  # type: ignore[attr-defined]
    f_kind = data["f_kind"].tolist()  # type: ignore[attr-defined]
    f_tail = data["f_tail"].tolist()  # type: ignore[attr-defined]
    with (out / "facts.tsv").open("w", encoding="utf-8") as fh:
        fh.write("head_id\trelation\ttail_id\thead_label\ttail_label\n")
        fh.writelines(
            f"{ids[h]}\t{kinds[k][0]}\t{kinds[k][1].format(GENRES[t] if k == 0 else t)}\t{titles[h]}\t"
            f"{kinds[k][2](t)}\n"
            for h, k, t in zip(f_head, f_kind, f_tail, strict=True)
        )
    return {"items": n_items, "interactions": len(user), "users": len(set(user)), "facts": len(f_head)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--interactions", type=int, default=2_000_000)
    ap.add_argument("--facts", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=None, help="default: interactions / 50")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cluster-size", type=int, default=50)
    ap.add_argument("--session-len", type=float, default=8.0)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--zipf", type=float, default=0.9)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    n_users = args.users or max(1, args.interactions // 50)
    t0 = time.perf_counter()
    data = make(
        args.items,
        args.interactions,
        args.facts,
        n_users,
        args.seed,
        cluster_size=args.cluster_size,
        session_len=args.session_len,
        noise=args.noise,
        zipf=args.zipf,
    )
    t1 = time.perf_counter()
    counts = write(data, args.out)
    t2 = time.perf_counter()
    meta = {
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"users": n_users},
        "counts": counts | data["counts"],  # type: ignore[operator]
        "genres": list(GENRES),
        "seconds": {"generate": round(t1 - t0, 2), "write": round(t2 - t1, 2)},
    }
    (args.out / "scale-meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta["counts"] | meta["seconds"]))


if __name__ == "__main__":
    main()
