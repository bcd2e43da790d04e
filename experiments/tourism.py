"""The Tourism competition's monthly and quarterly series, split into branches: the joint
forecast (federated, DP, DP + CKKS) against the best each series can do alone, beside the
competition's published MASE figures.

Runs `sovereign experiment run --config` on each config under experiments/configs/ (20 and
127 branches, full histories and histories cut to 24 and 36 months), and writes
`experiments/results/tourism.json` (every run's results.json, less the per-branch figures; a
rerun of some configs replaces their entries) and `tourism.md` (the tables).

    python experiments/tourism.py [--configs experiments/configs/tourism_*.yaml] [--out runs/experiments]
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", default=sorted(glob.glob(str(ROOT / "experiments" / "configs" / "tourism_*.yaml"))))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "experiments")
    parser.add_argument("--name", default="tourism")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from sovereign.experiment.report import headline, markdown

    runs = []
    for config in args.configs:
        out = args.out / Path(config).stem
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sovereign.cli", "experiment", "run", "--config", config, "--out", str(out),
                               "--cache", str(args.out / "cache")], cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{config}: sovereign experiment run exited {done.returncode}")
        document = json.loads((out / "results.json").read_text())
        document["config_file"] = str(Path(config).relative_to(ROOT)) if Path(config).is_relative_to(ROOT) else config
        document["wall_seconds"] = time.perf_counter() - started
        for arm in document["arms"].values():
            arm.pop("per_branch", None)  # kept in each run's results.json; the summary carries the figures
            arm.pop("rounds", None)
        runs.append(document)
        print(headline(document), f"({document['wall_seconds']:.0f} s)", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    earlier = json.loads(path.read_text())["runs"] if path.exists() else []
    rerun = {r["config_file"] for r in runs}  # a rerun replaces its config's entry and keeps the others
    runs = sorted([r for r in earlier if r["config_file"] not in rerun] + runs, key=lambda r: r["config_file"])
    path.write_text(json.dumps({"runs": runs}, indent=2))
    lines = ["# Tourism competition, split into branches", ""]
    published = next((r for r in runs if r.get("published")), None)
    if published:
        lines += [f"Published MASE ({published['published_source']}):", ""]
        for r in runs:
            if r.get("published") and r.get("history") is None:
                lines.append(f"- {r['dataset']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["published"].items()))
        lines.append("")
    for r in runs:
        lines += [markdown(r), headline(r), ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
