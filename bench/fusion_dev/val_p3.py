"""Dev loop: fused Recall@k of the VALIDATION item in the val store (fitted on train only), all users.
Refits the fusion when its inputs changed (reusing the probe SASRec from the previous models folder).

See bench/fusion_dev/README.md.
"""

import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import knowrec.fitting as F
from knowrec.agent.fusion import build_candidate_list
from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from knowrec.types import RecQuery

WORK = os.environ.get("KNOWREC_DEV", "/tmp/dev")

_orig = F._train_fusion


def _dump(x, y, groups, owners, rrf_lists, ids, targets, cfg, prog, title="fusion", monotone=None):
    with open(f"{WORK}/examples-{title.replace(' ', '_')}.pkl", "wb") as f:
        pickle.dump((x, y, groups, owners, rrf_lists, ids, targets), f)
    return _orig(x, y, groups, owners, rrf_lists, ids, targets, cfg, prog, title=title, monotone=monotone)


F._train_fusion = _dump
cfg = load_config(Path(sys.argv[1]))
h = Harness(cfg)
ctx = h.load()
t = time.time()
rec = h.recommender(ctx, "val", fitted=False)
models = rec.settings.models_path
if models.exists() and "--refit" in sys.argv:
    old = models.with_name("models-prev")
    if old.exists():
        shutil.rmtree(old)
    models.rename(old)
    rec.close()
    rec = h.recommender(ctx, "val", fitted=False)
    rec.fit(progress=False, reuse=[old])
elif not (models / "manifest.json").exists():
    rec.fit(progress=False)
rec.close()
rec = h.recommender(ctx, "val", fitted=False)
print("fit/ingest s", round(time.time() - t, 1), flush=True)
man = json.loads((models / "manifest.json").read_text())
print(
    json.dumps(
        {
            k: man["fusion"].get(k)
            for k in ("valid_learned_recall@20", "valid_rrf_recall@20", "valid_learned_ndcg@10", "trees", "groups")
        }
    )
)
print(json.dumps(man["fusion"].get("importance")))
print(json.dumps(man["timings_s"]))
pipe = rec.pipeline("none")
hits = {}
t = time.time()
for user in ctx.users:
    prof = pipe.profile(user)
    q = RecQuery(user_id=user, k=10, history=prof.liked, seen=prof.seen, sequence=prof.sequence)
    own = pipe.generate(q, 100)
    lists = {name: [c.item_id for c in cands] for name, cands in own.items()}
    lists["fused"] = pipe.fuse(q, own, 100).ids()
    lists["union"] = [c.item_id for c in build_candidate_list(own)]
    target = ctx.split.val[user]
    for g, lst in lists.items():
        for c in (10, 20, 50, 100) if g != "union" else (10**6,):
            hits.setdefault(f"{g}@{c}", []).append(float(target in lst[:c]))
print("users", len(ctx.users), "s", round(time.time() - t, 1))
for k, v in sorted(hits.items()):
    print(k, round(sum(v) / len(v), 4))
