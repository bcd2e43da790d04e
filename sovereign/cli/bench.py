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
    plaintext: bool = typer.Option(False, "--plaintext", help="Plain float64 updates instead of CKKS (the baseline)."),
    seed: int = typer.Option(0, help="Seed of the simulated updates."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """One round of N updates of P parameters through the real codec and strategy.

    Encrypt on the node side, serialise through the Flower wire codec, sum with the public
    context in the coordinator's guarded strategy, decrypt on one node; prints bytes per
    parameter, seconds per phase and the largest error against the plaintext sum."""
    from sovereign.bench import run_round

    try:
        result = run_round(nodes, params, plaintext=plaintext, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    s = result.seconds
    console.print(f"{result.nodes} nodes x {result.params:,} parameters, {result.scheme}: "
                  f"{result.bytes_per_param:.2f} bytes per parameter, max error {result.max_error:.2g}")
    console.print(f"seconds: encode {s['encode_one_node']:.4f} (one node), wire {s['wire']:.3f}, sum {s['sum']:.3f}, "
                  f"decrypt {s['decrypt']:.4f}; round {s['round']:.3f}")
