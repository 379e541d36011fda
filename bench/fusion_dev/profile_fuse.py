"""cProfile of the fusion stage on the 100k scale store (docs/benchmarks/retrieval.md, "What is left").

Needs the store of `python bench/bench_scale.py --sizes 100k ...` in /tmp/knowrec-scale:

    KNOWREC_CONFIG=/dev/null python bench/fusion_dev/profile_fuse.py
"""

import argparse
import cProfile
import pstats
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_scale as B
import torch

from knowrec import Recommender

torch.set_num_threads(1)
args = argparse.Namespace(embedder="hash", seed=0, threads=1, max_epochs=1, eval_users=2000, fusion_users=300)
store = Path("/tmp/knowrec-scale/store-100000-2000000-1000000-s0")
rec = Recommender(B._settings(args, store), embedder=B._embedder("hash"))
users = [f"u{u}" for u in random.Random(1).sample(range(40000), 40)]
for u in users[:5]:
    rec.recommend(u, k=10, mode="none")
pr = cProfile.Profile()
pr.enable()
for u in users[5:]:
    rec.recommend(u, k=10, mode="none")
pr.disable()
st = pstats.Stats(pr)
st.sort_stats("cumulative")
st.print_callees("feature_matrix")
st.print_callees("fusion_context")
