"""How masked, encrypted aggregation scales: bytes per parameter and round time against
plaintext, for 20, 127 and 1,000 simulated nodes and models of 10k, 100k and 1M parameters,
and how the coordinator's time and memory grow with nodes.

Each cell is one `sovereign.bench.run_round` (the real ceremony, SecAgg+ participants, codec,
Flower wire codec, guarded strategy and correction), run in a fresh process so its peak
resident memory is its own; the plaintext arm of the same cell runs right after it, so the
ratio is measured side by side on this shared machine. Nodes above 127 mask with a sparse
graph (`--degree`, SecAgg+), as they would in a real alliance of that size.
Writes experiments/results/aggregation_scaling.json and aggregation_scaling.png.

    .venv/bin/python experiments/aggregation_scaling.py                 # the full grid (~20 min)
    .venv/bin/python experiments/aggregation_scaling.py --nodes 20 --params 10000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPARSE_DEGREE = 20  # mask neighbours per node above 127 nodes (t = 11 by default)


def _cell(queue, nodes: int, params: int, scheme: str, degree: int | None) -> None:
    from sovereign.bench import run_round

    result = run_round(nodes, params, scheme=scheme, degree=degree)
    queue.put(result.model_dump(mode="json") | {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                                "degree": degree})


def measure(nodes: int, params: int, scheme: str, degree: int | None) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_cell, args=(queue, nodes, params, scheme, degree))
    child.start()
    result = queue.get()
    child.join()
    return result


def coordinator_seconds(cell: dict) -> float:
    s = cell["seconds"]
    return s["sum"] + s.get("correction", 0.0)


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for params in sorted({c["params"] for c in cells}):
        ring = sorted((c for c in cells if c["params"] == params and c["scheme"] == "CKKS-ring"), key=lambda c: c["nodes"])
        plain = sorted((c for c in cells if c["params"] == params and c["scheme"] == "plain"), key=lambda c: c["nodes"])
        line, = left.plot([c["nodes"] for c in ring], [c["seconds"]["round"] for c in ring], "o-", label=f"{params:,} masked HE")
        left.plot([c["nodes"] for c in plain], [c["seconds"]["round"] for c in plain], "s--", color=line.get_color(),
                  label=f"{params:,} plaintext")
        right.plot([c["nodes"] for c in ring], [coordinator_seconds(c) for c in ring], "o-", color=line.get_color(),
                   label=f"{params:,} parameters")
    for ax, title in ((left, "one round (critical path), seconds"), (right, "coordinator: sum + unmasking, seconds")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 127, 1000])
    parser.add_argument("--params", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--name", default="aggregation_scaling")
    args = parser.parse_args(argv)
    out = HERE / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    grid = [(n, p) for n in args.nodes for p in args.params]
    kept = json.loads(out.read_text())["cells"] if out.exists() else []  # cells of other grids stay
    cells = [c for c in kept if (c["nodes"], c["params"]) not in grid]
    for nodes, params in grid:
        degree = SPARSE_DEGREE if nodes > 127 else None
        ring, plain = measure(nodes, params, "ring", degree), measure(nodes, params, "plain", None)
        cells += [ring, plain]
        print(f"{nodes:>5} nodes x {params:>9,}: {ring['bytes_per_param']:.2f} B/param (plain {plain['bytes_per_param']:.0f}), "
              f"round {ring['seconds']['round']:.3f} s vs {plain['seconds']['round']:.3f} s "
              f"({ring['seconds']['round'] / plain['seconds']['round']:.1f}x), coordinator {coordinator_seconds(ring):.3f} s, "
              f"peak {ring['peak_rss_mb']:.0f} MB, max error {ring['max_error']:.2g}", flush=True)
        write(out, cells)  # after every cell: a long grid keeps what it measured
    plot(cells, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def write(out: Path, cells: list[dict]) -> None:
    cells = sorted(cells, key=lambda c: (c["nodes"], c["params"], c["scheme"]))
    pairs = {}
    for c in cells:
        pairs.setdefault((c["nodes"], c["params"]), {})[c["scheme"]] = c
    ratios = {f"{n}x{p}": round(pair["CKKS-ring"]["seconds"]["round"] / pair["plain"]["seconds"]["round"], 2)
              for (n, p), pair in sorted(pairs.items()) if {"CKKS-ring", "plain"} <= set(pair)}
    out.write_text(json.dumps({"cells": cells, "round_ratio_masked_over_plain": ratios}, indent=2))


if __name__ == "__main__":
    main()
