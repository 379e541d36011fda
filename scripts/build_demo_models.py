"""Fit the models for the full bundled demo and copy them into the package (``knowrec/datasets/demo/models``).

``knowrec demo`` reuses them when the stored data is exactly the demo's (same data fingerprint and settings), so its
first run does not train the sequential model. Rerun this after changing the demo data, the fusion features or the
fitting defaults:

    python scripts/build_demo_models.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from knowrec import Recommender, Settings
from knowrec.datasets import demo_models_path

SHIPPED = ("manifest.json", "sequential.pt", "fusion", "fusion-cold", "fusion-constrained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="use this data dir (kept) instead of a temporary one")
    args = ap.parse_args()
    dst = demo_models_path()
    if dst.exists():  # otherwise the old shipped models would be reused when nothing changed
        shutil.rmtree(dst)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp)
        settings = Settings(data_dir=data_dir, llm={"backend": "none"}, fit={"threads": args.threads})
        rec = Recommender(settings)
        if rec.store.stats()["items"] == 0:
            rec.ingest_demo(progress=True)  # fits too (nothing shipped matches yet, so everything is trained)
        else:  # a kept data dir: its own earlier fit may lend the sequential models
            rec.fit(progress=True, reuse=[settings.models_path])
        src = settings.models_path
        dst.mkdir(parents=True)
        for name in SHIPPED:
            if (src / name).is_dir():
                shutil.copytree(src / name, dst / name)
            elif (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        manifest = json.loads((dst / "manifest.json").read_text())
        print(json.dumps({k: manifest[k] for k in ("data_fingerprint", "probe_fingerprint", "timings_s")}, indent=1))
        rec.close()


if __name__ == "__main__":
    main()
