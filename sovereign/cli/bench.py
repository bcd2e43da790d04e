"""`sovereign bench ...`: measured costs of the platform's machinery, one run side by side."""

from __future__ import annotations

import typer

from sovereign.cli.console import console, fail

bench_app = typer.Typer(help="Measure what encryption costs: bytes on the wire and seconds per phase.",
                        no_args_is_help=True)


@bench_app.command("aggregation")
def aggregation(
    nodes: int = typer.Option(20, help="Simulated nodes, each sending one update."),
    params: int = typer.Option(100_000, help="Model parameters in each update."),
    plaintext: bool = typer.Option(False, "--plaintext", help="Plain float64 updates instead of CKKS (the baseline); "
                                   "the same as --scheme plain."),
    scheme: str = typer.Option("ring", help="ring: per-job key and SecAgg+ masked digits (collusion-resistant, the "
                               "default); ckks: one alliance key, real values (before issue 14); plain: no encryption."),
    dropped: int = typer.Option(0, help="ring only: nodes that share their seeds and then send nothing (unmasked from "
                                "the survivors' shares)."),
    degree: int = typer.Option(None, help="ring only: mask neighbours per node, even (SecAgg+'s sparse graph); "
                               "default every other node."),
    seed: int = typer.Option(0, help="Seed of the simulated updates."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """One round of N updates of P parameters through the real codec and strategy.

    Ring (default): a per-job key from the node-side ceremony, every node's SecAgg+ steps
    (keys, sealed shares, masking, consent, unmasking), seeded complex-packed CKKS; then the
    Flower wire codec, the coordinator's guarded sum with a keyless context, its unmasking
    correction, and one node's decryption. Prints bytes per parameter, seconds per phase
    (nodes work in parallel, so one node's steps count once in the round) and the largest
    error against the plaintext sum."""
    from sovereign.bench import run_round

    try:
        result = run_round(nodes, params, plaintext=plaintext, scheme=scheme, seed=seed, dropped=dropped, degree=degree)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    s = result.seconds
    console.print(f"{result.nodes} nodes x {result.params:,} parameters, {result.scheme}: "
                  f"{result.bytes_per_param:.2f} bytes per parameter, max error {result.max_error:.2g}")
    console.print("seconds: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in s.items() if k != "round")
                  + f"; round {s['round']:.3f}")
