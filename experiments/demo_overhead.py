"""What encryption costs the whole demo: `sovereign demo` with each scheme against `--no-he`.

Runs the demo's variants interleaved (no-he, CKKS, CKKS-ring, then again), each in a fresh
run directory and its own process, so that drift on this shared machine lands on every variant
alike; reports each run's wall seconds, the median per variant and the ratios of medians.
Writes experiments/results/demo_overhead.json.

    .venv/bin/python experiments/demo_overhead.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {"no-he": ["--no-he"], "CKKS": ["--he-scheme", "CKKS"], "CKKS-ring": ["--he-scheme", "CKKS-ring"]}


def run_once(variant: str, extra: list[str], out: Path) -> dict:
    """One demo run: wall seconds, the demo's own figure, and whether it released results."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sovereign.cli", "demo", *VARIANTS[variant], *extra, "--out", str(out)],
                          capture_output=True, text=True, env=os.environ | {"COLUMNS": "100"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{variant}: the demo failed: {done.stdout[-400:]}{done.stderr[-400:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"variant": variant, "wall_seconds": round(wall, 2), "demo_seconds": summary["seconds"],
            "released_by": len(summary["released_by"]), "mase": summary["mase"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "demo_overhead.json")
    args = parser.parse_args()
    extra = ["--branches", str(args.branches), "--rounds", str(args.rounds)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="sovereign-overhead-") as tmp:
        for repeat in range(args.repeats):
            for variant in args.variants:
                run = run_once(variant, extra, Path(tmp) / f"{variant}-{repeat}")
                runs.append(run | {"repeat": repeat})
                print(json.dumps(runs[-1]), flush=True)
    medians = {v: statistics.median(r["wall_seconds"] for r in runs if r["variant"] == v) for v in args.variants}
    ratios = {v: round(medians[v] / medians["no-he"], 3) for v in args.variants if "no-he" in medians}
    result = {"branches": args.branches, "rounds": args.rounds, "repeats": args.repeats, "runs": runs,
              "median_wall_seconds": medians, "ratio_to_no_he": ratios, "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"median_wall_seconds": medians, "ratio_to_no_he": ratios}))


if __name__ == "__main__":
    main()
