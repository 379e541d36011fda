"""Fit the models for the full bundled demo and copy them into the package (``knowrec/datasets/demo/models``).

``knowrec demo`` reuses them when the stored data is exactly the demo's (same data fingerprint and settings), so its
first run does not train the sequential model. Rerun this after changing the demo data, the fusion features or the
fitting defaults. The served sequential model of the models shipped before is reused where it was fitted on the same
data with the same settings (its fingerprints say so), so a change to the fusion alone does not retrain it:

    python scripts/build_demo_models.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from knowrec import Recommender, Settings
from knowrec.datasets import demo_models_path, load_demo

SHIPPED = ("manifest.json", "sequential.pt", "sequential-probe.pt", "fusion", "fusion-cold", "fusion-constrained")
"""The probe sequential model ships too (2.9 MB): a later rebuild for a change to the fusion or the facts alone then
reuses it instead of training it again (16 minutes on 2 cores)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="use this data dir (kept) instead of a temporary one")
    args = ap.parse_args()
    dst = demo_models_path()
    with tempfile.TemporaryDirectory() as tmp:
        previous = Path(tmp) / "previous-models"
        if dst.exists():  # moved away: otherwise the old fusion would be reused when nothing changed
            shutil.move(dst, previous)
        data_dir = args.keep or Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, llm={"backend": "none"}, fit={"threads": args.threads})
        rec = Recommender(settings)
        try:
            if rec.store.stats()["items"] == 0:
                rec.ingest_dataset(load_demo(), progress=True, fit=False)
            # the previous shipped folder lends what was fitted on the same data and settings: the served sequential
            # model, the probe model (shipped since the DBpedia film check), the fusion when nothing it reads changed
            rec.fit(progress=True, reuse=[settings.models_path, previous])
        except BaseException:
            if previous.exists():  # put the shipped models back
                shutil.move(previous, dst)
            raise
        src = settings.models_path
        dst.mkdir(parents=True)
        for name in SHIPPED:
            if (src / name).is_dir():
                shutil.copytree(src / name, dst / name)
            elif (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        manifest = json.loads((dst / "manifest.json").read_text())
        served = manifest.get("sequential", {}).get("served", "")
        if str(previous) in served:  # a temporary folder's name says nothing once shipped
            manifest["sequential"]["served"] = served.replace(str(previous), "the models shipped before")
            (dst / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        print(json.dumps({k: manifest[k] for k in ("data_fingerprint", "probe_fingerprint", "timings_s")}, indent=1))
        rec.close()


if __name__ == "__main__":
    main()
