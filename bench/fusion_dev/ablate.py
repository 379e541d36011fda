"""Offline: retrain the fusion on the dumped examples with feature subsets blanked (NaN); report its own validation.

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

WORK = os.environ.get("KNOWREC_DEV", "/tmp/dev")

x, y, groups, owners, rrf, ids, targets = pickle.loads(Path(sys.argv[1]).read_bytes())
variants = {"all": []}
for spec in sys.argv[2:]:
    name, _, cols = spec.partition("=")
    variants[name] = cols.split(",") if cols else []
for name, drop in variants.items():
    xx = x.copy()
    for c in drop:
        if c.startswith("fc."):
            continue
        xx[:, FEATURES.index(c)] = np.nan
    over = {c.split("=")[0][3:]: float(c.split("=")[1]) for c in drop if c.startswith("fc.")}
    cfg = FitConfig(threads=2)
    if over:
        cfg = cfg.model_copy(
            update={
                "fusion": cfg.fusion.model_copy(update={k: (int(v) if v.is_integer() else v) for k, v in over.items()})
            }
        )
    _, rep = F._train_fusion(xx, y, groups, owners, rrf, ids, targets, cfg, F._Progress(False))
    print(
        name,
        {
            k: rep[k]
            for k in (
                "valid_learned_recall@20",
                "valid_learned_ndcg@10",
                "valid_rrf_recall@20",
                "trees",
                "valid_all_groups",
            )
        },
        flush=True,
    )
