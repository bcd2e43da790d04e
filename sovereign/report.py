"""report.html: what the analytics team reads after a joint forecast. Plots are embedded
PNGs (matplotlib, Agg), so the file is self-contained and opens anywhere."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {
    "federated": "#1f77b4", "local": "#d62728", "local_dp": "#ff7f0e", "central": "#2ca02c", "seasonal_naive": "#7f7f7f",
}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def accuracy_plot(summary: dict) -> str:
    """Alliance-level mean MASE per forecast, all branches and (if released) young ones."""
    groups = [("all branches", summary["mase"])]
    if summary["young_branches"]["released"]:
        groups.append((f"young branches ({summary['young_branches']['nodes']})", summary["young_branches"]["mase"]))
    methods = [m for m in COLORS if summary["mase"].get(m) is not None]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        values = [g.get(m) or 0.0 for _, g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, color=COLORS[m], label=m.replace("_", " "))
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [name for name, _ in groups])
    ax.set_ylabel("mean MASE (lower is better)")
    ax.legend(fontsize=7)
    return _png(fig)


def rounds_plot(result) -> str:
    """Who took part in each round: contributors and nodes that sat out (by refusal)."""
    rounds = [r.round for r in result.rounds]
    took_part = [len(r.contributors) for r in result.rounds]
    sat_out = [len(r.refused) for r in result.rounds]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar(rounds, took_part, color="#1f77b4", label="contributed")
    ax.bar(rounds, sat_out, bottom=took_part, color="#bbbbbb", label="sat out")
    ax.set_xlabel("round")
    ax.set_ylabel("nodes")
    ax.legend(fontsize=7)
    return _png(fig)


def write_report(path: Path, summary: dict, result) -> None:
    """The analyst's report: alliance-level figures only. Each branch's own forecast and
    accuracy stay on its node (`sovereign node report`)."""
    esc = html.escape
    means = "".join(
        f"<tr><td>{m.replace('_', ' ')}</td><td>{summary['mase'][m]}</td><td>{summary['smape'][m]}</td>"
        + (f"<td>{summary['young_branches']['mase'].get(m)}</td>" if summary["young_branches"]["released"] else "") + "</tr>"
        for m in COLORS if summary["mase"].get(m) is not None
    )
    young_head = (f"<th>young branches' MASE ({summary['young_branches']['nodes']})</th>"
                  if summary["young_branches"]["released"] else "")
    named = "".join(
        f"<tr><td>{esc(b)}</td>" + "".join(f"<td>{scores.get(m, {}).get('mase', '-')}</td>" for m in ("federated", "local", "local_dp", "seasonal_naive"))
        + "</tr>" for b, scores in sorted(summary.get("branches_releasing_own_metrics", {}).items())
    )
    named_table = (
        "<h2>Branches that release their own accuracy</h2><p>Only branches whose policy says "
        "<code>release_branch_metrics: true</code>; every other branch's accuracy reaches the alliance only inside sums.</p>"
        "<table><tr><th>branch</th><th>federated MASE</th><th>alone</th><th>alone, DP</th><th>same month last year</th></tr>"
        f"{named}</table>" if named else ""
    )
    sat_out = "".join(f"<tr><td>{esc(b)}</td><td>{esc(r)}</td></tr>" for b, r in sorted(summary["refusals"].items()))
    eps = summary["epsilon"]
    customer = eps.get("customer")
    customer_text = (
        f"<p>For one customer's sale, which sits in up to {customer['windows_per_month']} windows, group privacy gives "
        f"ε ≤ {customer['epsilon']} at δ ≤ {customer['delta']:.2g}"
        + ("" if customer["meaningful"] else ": <b>a weak guarantee for a single customer</b>") + ".</p>"
        if customer else ""
    )
    privacy = (
        f"<p>Every node trained with DP-SGD (Opacus, {eps['accountant']} accountant) and planned its noise for "
        f"<b>ε ≤ {eps['max']}</b> at δ = {eps['delta']}, protecting {esc(eps['unit'])}; a node stops at its plan. "
        "Each node's exact spend stays in its own ledger (<code>sovereign node budget</code>): it would reveal the "
        f"branch's size.</p>{customer_text}"
        if summary["dp"] else "<p>Differential privacy was <b>off</b> for this run.</p>"
    )
    if eps.get("node_level"):
        nl = eps["node_level"]
        privacy += (f"<p>Node-level DP (each node clipped its update to {nl['clip']} and added its share of noise, "
                    f"σ = {nl['noise_multiplier']} in total): one dealership's participation is protected at "
                    f"ε ≤ {nl['epsilon']}, δ = {nl['delta']}.</p>")
    he = summary["he"]
    he_text = (
        f"<p>Updates travelled as CKKS ciphertexts (N = {he['poly_modulus_degree']}, moduli {he['coeff_mod_bit_sizes']}); "
        f"the coordinator summed {he['bytes_per_round'] / 1e6:.2f} MB per round without a secret key.</p>"
        if he["enabled"] else "<p>Homomorphic encryption was <b>off</b>: updates travelled in plaintext.</p>"
    )
    imp = summary["federated_vs_local_mase_improvement"]
    naive = summary["federated_vs_seasonal_naive_mase_improvement"]
    young = summary["young_branches"]
    young_text = (
        f"; for the {young['nodes']} branches with {esc(young['definition'])}: "
        f"<b>{young['federated_vs_local_mase_improvement']:+.0%}</b>"
        if young["federated_vs_local_mase_improvement"] is not None else ""
    )
    groups: dict[tuple, list[str]] = {}
    for branch, p in summary.get("node_policies", {}).items():
        if "policy" in p:
            key = (p["policy"], p["version"], p["jurisdiction"], p["cross_border"], tuple(p["treatments"].items()))
            groups.setdefault(key, []).append(branch)
    policy_rows = "".join(
        f"<tr><td>{esc(name)} v{version}</td><td>{esc(home)}</td><td>{'yes' if abroad else 'no'}</td>"
        f"<td>{len(branches)}</td><td style='text-align:left'>"
        + "<br>".join(f"{esc(field)}: {esc(how)}" for field, how in treatments) + "</td></tr>"
        for (name, version, home, abroad, treatments), branches in sorted(groups.items())
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Sovereign joint forecast {esc(summary['job_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Joint forecast {esc(summary['job_id'])}</h1>
<p>{summary['branches']} dealerships, {summary['rounds']} rounds, forecasting monthly units sold {summary['horizon_months']} months ahead.
Accuracy is measured on each branch's last {summary['holdout_months']} months, which no model saw in training.
MASE below 1 beats the seasonal-naive forecast's in-sample error; sMAPE is in percent.</p>
<h2>Accuracy (alliance level)</h2>
<p>Each node scored the joint model and its own local forecasts on its held-out months and sent the scores encrypted;
the coordinator added them up and the nodes released only the sums over {summary['branches_evaluated']} branches (never
fewer than each node's minimum number of contributors). The pooled row is a simulator-side experiment, run apart from the job.</p>
<table><tr><th>forecast</th><th>mean MASE</th><th>mean sMAPE %</th>{young_head}</tr>{means}</table>
<p>Federated vs each branch alone: <b>{'' if imp is None else f'{imp:+.0%}'}</b> MASE improvement{young_text};
vs the same month last year: <b>{'' if naive is None else f'{naive:+.0%}'}</b>.</p>
<img src="data:image/png;base64,{accuracy_plot(summary)}">
{named_table}
<h2>Rounds</h2><img src="data:image/png;base64,{rounds_plot(result)}">
<h2>Branches that sat out</h2>
<table><tr><th>branch</th><th>reason code</th></tr>{sat_out or '<tr><td>none</td><td></td></tr>'}</table>
<h2>Branch policies</h2><p>Each branch read only the fields below, treated as its own policy says, before anything else saw them.</p>
<table><tr><th>policy</th><th>branch country</th><th>cross-border</th><th>branches</th><th>fields this job used, and how</th></tr>{policy_rows}</table>
<h2>Privacy</h2>{privacy}{he_text}
<h2>Lineage</h2><p>Coordinator: <code>{esc(summary['lineage']['coordinator'])}</code>; one store per node under <code>nodes/&lt;branch&gt;/lineage.db</code>.</p>
<p>Run took {summary['seconds']} s.</p></body></html>"""
    path.write_text(doc)
