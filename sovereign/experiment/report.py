"""A panel experiment's results as a table, for the terminal and for a markdown file."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

ARM_LABELS = {
    "seasonal_naive": "seasonal naive, each series alone",
    "ets": "AutoETS, each series alone",
    "theta": "AutoTheta, each series alone",
    "best_local": "best local (the yardstick)",
    "local": "joint model's family, each branch alone",
    "federated": "federated",
    "federated_dp": "federated, DP",
    "federated_dp_he": "federated, DP + CKKS",
    "federated_dp_he_ets": "federated DP + CKKS, averaged on the node with its ETS",
    "central": "central: every series pooled",
}


def rows(document: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(arm, MASE, sMAPE, relative MAE vs best local [95 %], ε, seconds) per arm."""
    out = []
    for name, arm in document["arms"].items():
        label = ARM_LABELS.get(name, name) + (f" = {arm['method']}" if name == "best_local" else "")
        versus = document.get("versus_best_local", {}).get(name)
        rel = ""
        if versus:
            rel = f"{versus['geomean']:.3f}"
            if "interval95" in versus:
                lo, hi = versus["interval95"]
                rel += f" [{lo:.3f}, {hi:.3f}]"
        eps = f"{arm['epsilon']:.2f}" if arm.get("epsilon") is not None else "—"
        out.append((label, f"{arm['mase']:.3f}", f"{arm['smape']:.2f}", rel, eps, f"{arm['seconds']:.0f}"))
    return out


def headline(document: dict) -> str:
    """Federated (DP + CKKS) against best local, in one honest line."""
    arms = document["arms"]
    fed, best = arms.get("federated_dp_he") or arms.get("federated_dp") or arms.get("federated"), arms.get("best_local")
    if not fed or not best:
        return ""
    gain = 100.0 * (best["mase"] - fed["mase"]) / best["mase"]
    side = "better" if gain > 0 else "worse"
    line = (f"{document['dataset']}, {document['branches']} branches: federated (DP + CKKS) MASE {fed['mase']:.3f} vs best "
            f"local ({best['method']}) {best['mase']:.3f}: {abs(gain):.1f}% {side}")
    if blend := arms.get("federated_dp_he_ets"):
        gain = 100.0 * (best["mase"] - blend["mase"]) / best["mase"]
        line += f"; averaged on each node with its ETS {blend['mase']:.3f}: {abs(gain):.1f}% {'better' if gain > 0 else 'worse'}"
    return line


def print_results(document: dict, console: Console) -> None:
    title = (f"{document['dataset']}: {document['series']} series in {document['branches']} branches, "
             f"horizon {document['horizon']}" + (f", histories cut to their last {document['history']} values" if document.get("history") else ""))
    table = Table(title=title)
    for col in ("arm", "MASE", "sMAPE %", "rel. MAE vs best local [95%]", "ε", "s"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for row in rows(document):
        table.add_row(*row)
    console.print(table)
    if document.get("published"):
        published = ", ".join(f"{k} {v:.2f}" for k, v in document["published"].items())
        console.print(f"published MASE: {published} ({document.get('published_source') or 'source not given'})")
    if line := headline(document):
        console.print(line)


def markdown(document: dict) -> str:
    lines = [f"### {document['dataset']} — {document['branches']} branches"
             + (f", histories cut to their last {document['history']} values" if document.get("history") else ""), "",
             "| arm | MASE | sMAPE % | rel. MAE vs best local [95%] | ε | s |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(document)]
    return "\n".join(lines) + "\n"
