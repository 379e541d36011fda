"""Val-item P3 fused recall with a fusion retrained on the dumped examples with some features blanked.

See bench/fusion_dev/README.md.
"""

import os
import pickle
import sys
from pathlib import Path

import numpy as np

import knowrec.fitting as F
from knowrec.agent.fusion import FEATURES
from knowrec.config import FitConfig
from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from knowrec.types import RecQuery

WORK = os.environ.get("KNOWREC_DEV", "/tmp/dev")

drop = [FEATURES.index(c) for c in sys.argv[2].split(",")] if len(sys.argv) > 2 and sys.argv[2] else []
x, y, groups, owners, rrf, ids, targets = pickle.loads(Path(WORK, "examples-fusion.pkl").read_bytes())
x = x.copy()
x[:, drop] = np.nan
fusion, rep = F._train_fusion(x, y, groups, owners, rrf, ids, targets, FitConfig(threads=2), F._Progress(False))
print({k: rep[k] for k in ("valid_learned_recall@20", "trees")})
h = Harness(load_config(Path(sys.argv[1])))
ctx = h.load()
rec = h.recommender(ctx, "val", fitted=False)
pipe = rec.pipeline("none")
inner = fusion.score


def score(xx):
    xx = xx.copy()
    xx[:, drop] = np.nan
    return inner(xx)


fusion.score = score
pipe.fusion = fusion
hits = {c: [] for c in (10, 20, 50, 100)}
for user in ctx.users:
    prof = pipe.profile(user)
    q = RecQuery(user_id=user, k=10, history=prof.liked, seen=prof.seen, sequence=prof.sequence)
    fused = pipe.fuse(q, pipe.generate(q, 100), 100).ids()
    for c in hits:
        hits[c].append(float(ctx.split.val[user] in fused[:c]))
print(sys.argv[2:], {c: round(float(np.mean(v)), 4) for c, v in hits.items()})
