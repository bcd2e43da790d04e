"""report.html: what the analytics team reads after a joint forecast. Plots are embedded
PNGs (matplotlib, Agg), so the file is self-contained and opens anywhere."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# The rows of the results table; central is the simulator-side pooled experiment.
METHODS = ("federated", "central", "best_local", "local_choice", "ets", "theta", "mean_12", "moving_average_3",
           "seasonal_naive", "local", "local_dp")
ARM_NAMES = {
    "local": "the same model, each branch alone", "local_dp": "the same model alone, same DP budget",
    "seasonal_naive": "same month last year", "moving_average_3": "moving average of 3 months",
    "mean_12": "12-month mean", "ets": "AutoETS", "theta": "AutoTheta",
    "local_choice": "per-branch choice by rolling-origin validation",
}
COLORS = {  # what the accuracy plot shows
    "federated": "#1f77b4", "central": "#2ca02c", "best_local": "#d62728", "moving_average_3": "#ff7f0e",
    "seasonal_naive": "#7f7f7f", "local": "#9467bd",
}


def row_name(summary: dict, arm: str) -> str:
    if arm == "best_local":
        return f"best a branch can do alone ({ARM_NAMES.get(summary.get('best_local_arm'), '-')})"
    return {"federated": "federated (this job)", "central": "all data pooled (simulator-side)"}.get(arm) or f"alone: {ARM_NAMES[arm]}"


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
    methods = [m for m in COLORS if summary["mase"].get(m) is not None and m not in summary.get("diverged", [])]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        values = [g.get(m) or 0.0 for _, g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, color=COLORS[m], label=row_name(summary, m))
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [name for name, _ in groups])
    ax.set_ylabel("mean MASE (lower is better)")
    ax.legend(fontsize=7)
    return _png(fig)


def forecast_plot(forecast: dict) -> str | None:
    """The alliance's units for the months ahead with its 80 % and 95 % bands, and each
    released region's forecast beside it."""
    alliance = forecast["alliance"]
    if not alliance.get("nodes"):
        return None
    steps = np.arange(1, forecast["months_ahead"] + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.fill_between(steps, alliance["low95"], alliance["high95"], color="#1f77b4", alpha=0.15, label="95 %")
    left.fill_between(steps, alliance["low80"], alliance["high80"], color="#1f77b4", alpha=0.3, label="80 %")
    left.plot(steps, alliance["point"], color="#1f77b4", lw=1.8, label=f"alliance ({alliance['nodes']} branches)")
    for ax in (left, right):
        ax.set_xlabel("months ahead")
        ax.set_ylabel("units sold")
    for name, g in forecast["regions"].items():
        if g.get("nodes"):
            right.errorbar(steps, g["point"], yerr=[np.subtract(g["point"], g["low80"]), np.subtract(g["high80"], g["point"])],
                           capsize=2, lw=1.2, label=f"{name} ({g['nodes']})")
    left.legend(fontsize=7)
    if right.lines:
        right.legend(fontsize=7)
    right.set_title("regions (80 % interval)", fontsize=9)
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


def headline_lines(summary: dict) -> list[str]:
    """What the console says about the joint model: against the best a branch can do alone and
    against the same month last year, always both; a diverged arm is named, never quoted."""
    lines = []
    if "federated" in summary["diverged"]:
        lines.append(f"[red]the federated model diverged[/] (MASE {fmt(summary['mase']['federated'])}, same month last "
                     f"year {fmt(summary['mase']['seasonal_naive'])}): no improvement is quoted; check the privacy settings")
    others = [a for a in summary["diverged"] if a != "federated"]
    if others:
        lines.append("[yellow]diverged, not compared:[/] " + ", ".join(ARM_NAMES.get(a, a) for a in others))
    best, vs = summary["best_local_arm"], summary["federated_vs_best_local"]
    if summary["federated_vs_best_local_mase_improvement"] is not None:
        detail = ""
        if vs:
            interval = vs.get("interval95")
            detail = (f"; better on {vs['federated_better_on']} of {summary['branches_evaluated']} branches; relative MAE "
                      f"{vs['geomean']:.3f}" + (f" (95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else ""))
        lines.append(f"federated vs the best a branch can do alone ({ARM_NAMES[best]}): MASE "
                     f"{summary['federated_vs_best_local_mase_improvement']:+.1%}{detail}")
    for key, label in (("federated_vs_seasonal_naive_mase_improvement", "same month last year"),
                       ("federated_vs_moving_average_3_mase_improvement", "what dealerships do today (moving average of 3 months)"),
                       ("federated_vs_local_mase_improvement", "the same model, each branch alone")):
        if summary[key] is not None:
            lines.append(f"federated vs {label}: MASE {summary[key]:+.1%}")
    if lines:
        lines.append("  (positive: federated is better; relative MAE below 1: federated is better)")
    return lines


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


NAMED_ARMS = ("federated", "local_choice", "ets", "mean_12", "moving_average_3", "seasonal_naive", "local")


def _plain(line: str) -> str:
    """A console headline (rich markup) as HTML text."""
    return html.escape(re.sub(r"\[/?[a-z ]*\]", "", line))


def _forecast_section(forecast: dict | None) -> str:
    """The deliverable: alliance and regional units for the months ahead, with intervals."""
    if not forecast:
        return ""
    esc = html.escape
    groups = {"alliance": forecast["alliance"], **forecast["regions"]}
    head = "".join(f"<th>+{h + 1}</th>" for h in range(forecast["months_ahead"]))
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{g['nodes']}</td>"
        + "".join(f"<td>{p:,.0f}<br><small>80 %: {lo:,.0f}–{hi:,.0f}<br>95 %: {lo2:,.0f}–{hi2:,.0f}</small></td>"
                  for p, lo, hi, lo2, hi2 in zip(g["point"], g["low80"], g["high80"], g["low95"], g["high95"])) + "</tr>"
        if g.get("nodes") else f"<tr><td>{esc(name)}</td><td>0</td><td colspan='{forecast['months_ahead']}'>withheld: too few "
                               "branches to release</td></tr>"
        for name, g in groups.items())
    plot = forecast_plot(forecast)
    return (f"<h2>Forecast: units sold in the months ahead</h2><p>{esc(forecast['what'])}. Each branch's own forecast stays "
            f"on its node (<code>sovereign node forecast</code>).</p><table><tr><th>group</th><th>branches</th>{head}</tr>"
            f"{rows}</table>" + (f'<img src="data:image/png;base64,{plot}">' if plot else ""))


def write_report(path: Path, summary: dict, result) -> None:
    """The analyst's report: alliance-level figures only. Each branch's own forecast and
    accuracy stay on its node (`sovereign node report`)."""
    esc = html.escape
    broken = set(summary.get("diverged", []))
    means = "".join(
        f"<tr><td>{esc(row_name(summary, m))}{' <b>(diverged)</b>' if m in broken else ''}</td><td>{summary['mase'][m]}</td>"
        f"<td>{summary['smape'][m]}</td>"
        + (f"<td>{summary['young_branches']['mase'].get(m)}</td>" if summary["young_branches"]["released"] else "") + "</tr>"
        for m in METHODS if summary["mase"].get(m) is not None
    )
    young_head = (f"<th>young branches' MASE ({summary['young_branches']['nodes']})</th>"
                  if summary["young_branches"]["released"] else "")
    named = "".join(
        f"<tr><td>{esc(b)}</td>" + "".join(f"<td>{scores.get(m, {}).get('mase', '-')}</td>" for m in NAMED_ARMS)
        + "</tr>" for b, scores in sorted(summary.get("branches_releasing_own_metrics", {}).items())
    )
    named_table = (
        "<h2>Branches that release their own accuracy</h2><p>Only branches whose policy says "
        "<code>release_branch_metrics: true</code>; every other branch's accuracy reaches the alliance only inside sums.</p>"
        "<table><tr><th>branch</th>" + "".join(f"<th>{esc(row_name(summary, m))} MASE</th>" for m in NAMED_ARMS) + "</tr>"
        f"{named}</table>" if named else ""
    )
    sat_out = "".join(f"<tr><td>{esc(b)}</td><td>{esc(r)}</td><td>{esc(stage)}</td></tr>" for b, r, stage in sorted(
        [(b, r, "training") for b, r in summary["refusals"].items()]
        + [(b, r, "evaluation") for b, r in summary.get("evaluation_refusals", {}).items()]))
    quarantine = "".join(
        f"<tr><td>{esc(b)}</td><td style='text-align:left'>{esc(', '.join(f'{k}: {n}' for k, n in sorted(q.items())))}</td></tr>"
        for b, q in sorted(summary.get("quarantined_rows", {}).items()))
    eps = summary["epsilon"]
    customer, window = eps.get("customer"), eps.get("window_level")
    if customer and "per" in customer:
        customer_text = (
            f"<p><b>Every customer: ε ≤ {customer['epsilon']} per calendar year of purchases, δ = {customer['delta']:g}</b>, "
            "over everything the nodes released. Each node counts at most "
            + "; ".join(f"{b['max_sales_per_year']} sales of one customer a year ({b['max_sales_per_month']} a month)"
                        for b in customer["bound"])
            + f", releases those monthly counts once per job under discrete Gaussian noise, and computes training, "
            f"evaluation sums and forecast totals from that release. A customer who bought in every one of the "
            f"{customer['window']['years']} years of the window: ε ≤ {customer['every_year_epsilon']}.</p>")
    elif window:
        customer_text = (
            f"<p>For one customer's sale, which sits in up to {window['windows_per_month']} windows, group privacy gives "
            f"ε ≤ {window['epsilon']} at δ ≤ {window['delta']:.2g}"
            + ("" if window["meaningful"] else ": <b>a weak guarantee for a single customer</b>") + ".</p>")
    else:
        customer_text = ""
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
    young_text = ""
    for key, label in (("young_branches", "Young branches"), ("new_stores", "New stores"), ("launch_window", "Launch window")):
        group = summary.get(key)
        if not group:
            continue
        if group.get("federated_vs_best_local_mase_improvement") is not None:
            young_text += (f"<p>{label} ({esc(group['definition'])}), {group['nodes']} of them: "
                           f"<b>{group['federated_vs_best_local_mase_improvement']:+.1%}</b> against the best they can do alone "
                           f"({esc(ARM_NAMES[group['best_local_arm']])}).</p>")
        elif key != "young_branches":
            young_text += (f"<p>{label} ({esc(group['definition'])}): withheld, too few branches (or readable as a "
                           f"difference of released groups).</p>")
    headline = "".join(f"<li>{_plain(line)}</li>" for line in headline_lines(summary))
    coverage = summary.get("interval_coverage")
    coverage_text = (f"<p>Intervals of the federated forecast, calibrated on each branch's training months: on the held-out "
                     f"months <b>{coverage['80']:.0%}</b> of actual months fell inside the 80 % interval and "
                     f"<b>{coverage['95']:.0%}</b> inside the 95 % one.</p>" if coverage else "")
    forecast_section = _forecast_section(summary.get("forecast"))
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
<ul>{headline}</ul>{young_text}
<p>"Best a branch can do alone" is the statistical method (same month last year, moving average of 3, 12-month mean,
AutoETS, AutoTheta, or each branch's own pick among them by rolling-origin validation on its training months) with the
lowest mean MASE on the held-out months, chosen after the fact: a bar no single branch could be sure to reach.
The relative MAE is the geometric mean over branches of federated MAE / that method's MAE.</p>
{coverage_text}
<img src="data:image/png;base64,{accuracy_plot(summary)}">
{forecast_section}
{named_table}
<h2>Rounds</h2><img src="data:image/png;base64,{rounds_plot(result)}">
<h2>Branches that sat out</h2>
<table><tr><th>branch</th><th>reason code</th><th>at</th></tr>{sat_out or '<tr><td>none</td><td></td><td></td></tr>'}</table>
<h2>Rows quarantined by the data contract</h2><p>Counted on each node per reason; the rows themselves never left it.</p>
<table><tr><th>branch</th><th>rows, by reason</th></tr>{quarantine or '<tr><td>none</td><td></td></tr>'}</table>
<h2>Branch policies</h2><p>Each branch read only the fields below, treated as its own policy says, before anything else saw them.</p>
<table><tr><th>policy</th><th>branch country</th><th>cross-border</th><th>branches</th><th>fields this job used, and how</th></tr>{policy_rows}</table>
<h2>Privacy</h2>{privacy}{he_text}
<h2>Lineage</h2><p>Coordinator: <code>{esc(summary['lineage']['coordinator'])}</code>; one store per node under <code>nodes/&lt;branch&gt;/lineage.db</code>.</p>
<p>Run took {summary['seconds']} s.</p></body></html>"""
    path.write_text(doc)
