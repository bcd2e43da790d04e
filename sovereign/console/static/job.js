"use strict";
/* One joint forecast: its state and the branches' answers, rounds as they close (polled),
   and once it completes the released forecasts with intervals and the accuracy figures. */
const { api, el, table, fmt, fill, showError, forecastChart, ARMS } = Sovereign;
const root = document.getElementById("job"), jobId = root.dataset.job, role = root.dataset.role;
const LIVE = new Set(["draft", "requested", "running"]);
const STATISTICAL = ["ets", "theta", "moving_average_3", "seasonal_naive", "mean_12", "local_choice"];  // common.evaluation.STATISTICAL_ARMS
const LAUNCHERS = new Set(["admin", "analyst", "regional_analyst"]);  // a regional analyst: the API allows its region's jobs only
let shownResults = false;

async function step(action) {
  try { await api(`/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST", body: { reason: "" } }); refresh(); }
  catch (error) { showError(error); }
}
function forecastTable(name, t) {
  if (!t || !t.point) return el("p", {}, `${name}: withheld. The branches release a total only over at least their minimum ` +
    "number of contributors, and never one that, taken from the alliance's, would leave fewer.");
  return el("div", {}, el("h3", {}, `${name} (${t.nodes} branches)`), forecastChart(t),
    table(["month ahead", "forecast", "80 % interval", "95 % interval"],
      t.point.map((p, i) => [`+${i + 1}`, fmt(p, 5), `${fmt(t.low80[i], 5)} – ${fmt(t.high80[i], 5)}`, `${fmt(t.low95[i], 5)} – ${fmt(t.high95[i], 5)}`]),
      { numeric: [1] }));
}
function accuracy(acc) {
  if (!acc) return el("p", {}, "No accuracy was released.");
  const arms = Object.keys(ARMS).filter(a => acc[a]);
  const versus = acc.versus || {};
  // The yardstick: the strongest method a branch can run alone, picked after the fact (so at least as strong as any one).
  const best = STATISTICAL.filter(a => acc[a]).sort((a, b) => acc[a].mase - acc[b].mase)[0];
  const against = (arm, label) => {
    if (!arm || !acc[arm] || !acc.federated) return null;
    const change = acc.federated.mase / acc[arm].mase - 1, v = versus[arm];
    return el("li", {}, `Against ${label}: MASE ${fmt(acc.federated.mase)} vs ${fmt(acc[arm].mase)}, ` +
      `${Math.abs(change * 100).toFixed(1)} % ${change <= 0 ? "better" : "worse"}` +
      (v && v.interval95 ? `; MAE ratio ${fmt(v.geomean)}, 95 % interval ${fmt(v.interval95[0])} – ${fmt(v.interval95[1])}` : "") + ".");
  };
  return el("div", {},
    el("ul", { class: "headline" }, against(best, `the best a branch could do alone (${ARMS[best]})`),
      against("moving_average_3", "what stores do today (a 3-month moving average)")),
    el("p", {}, `Held-out accuracy over ${acc.nodes} branches (MASE: lower is better; each branch scored on months it never trained on).`),
    table(["method", "MASE", "sMAPE", "joint better on", "MAE ratio (joint / alone), 95 % interval"], arms.map(a => {
      const v = versus[a];
      return [ARMS[a], fmt(acc[a].mase), fmt(acc[a].smape), v ? `${v.federated_better_on} of ${acc.nodes}` : "",
        v ? `${fmt(v.geomean)}` + (v.interval95 ? ` (${fmt(v.interval95[0])} – ${fmt(v.interval95[1])})` : "") : ""];
    }), { numeric: [1, 2] }),
    acc.coverage ? el("p", {}, `Interval coverage on held-out months: 80 % → ${fmt(acc.coverage["80"])}, 95 % → ${fmt(acc.coverage["95"])}`) : null);
}
async function showResults() {
  const results = await api(`/jobs/${encodeURIComponent(jobId)}/results`);
  document.getElementById("results-card").hidden = false;
  const f = results.forecast || {};
  const regions = Object.entries(f.regions || {});
  fill("results",
    f.alliance ? forecastTable("Alliance", f.alliance) : null,
    ...regions.map(([r, t]) => forecastTable(`Region ${r}`, t)),
    results.accuracy !== undefined ? el("h3", {}, "Accuracy") : null, results.accuracy !== undefined ? accuracy(results.accuracy) : null,
    results.final_model_digest ? el("p", { class: "note" }, `The model stays with the branches, encrypted under their key; ` +
      `the coordinator never held it in the clear. Digest ${results.final_model_digest}.`) : null);
  const blob = new Blob([JSON.stringify(results, null, 2)], { type: "application/json" });
  const link = document.getElementById("download-results");
  link.href = URL.createObjectURL(blob); link.download = `${jobId}-results.json`;
  if (role !== "regional_analyst") {
    try {
      const card = await api(`/audit/card?model=${encodeURIComponent(results.final_model_digest || "")}`);
      document.getElementById("card-card").hidden = false;
      fill("card", el("p", {}, `Model ${card.model_version} (job ${card.job_id}, ${card.purpose}), ${card.released ? "released" : "not released"}, ${card.rounds.length} rounds.`),
        table(["branch", "datasets", "fields read (as treated)", "policy"], Object.entries(card.nodes).map(([n, c]) =>
          [n, c.datasets.join(", "), c.fields.map(x => c.treatments[x] ? `${x} (${c.treatments[x]})` : x).join(", "), c.policies.join("; ")])));
    } catch (_) { /* identity cards need an embedded run's stores; the digest above still names the model */ }
  }
}
function reportHtml() {
  const css = [...document.styleSheets].map(s => { try { return [...s.cssRules].map(r => r.cssText).join("\n"); } catch (_) { return ""; } }).join("\n");
  const body = ["summary", "results-card", "card-card", "rounds"].map(id => document.getElementById(id)).filter(n => n && !n.hidden).map(n => n.outerHTML).join("\n");
  const name = el("span", {}, jobId).innerHTML;  // as text, whatever the address held
  return `<!doctype html><html><head><meta charset="utf-8"><title>${name}: joint forecast</title><style>${css}</style></head><body><main><h1>Joint forecast ${name}</h1>${body}</main></body></html>`;
}
document.getElementById("print").addEventListener("click", () => window.print());
document.getElementById("download-report").addEventListener("click", () => {
  const a = el("a", { href: URL.createObjectURL(new Blob([reportHtml()], { type: "text/html" })), download: `${jobId}-report.html` });
  document.body.append(a); a.click(); a.remove();
});
async function refresh() {
  try {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    const approved = job.nodes.filter(a => a.decision === "approved").length;
    fill("summary", el("p", {}, el("span", { class: `badge ${job.state}`, id: "state" }, job.state), " ",
      `${job.spec.purpose} of ${job.spec.target} for ${job.spec.recipient_role}, ${job.spec.horizon} months ahead, ${job.spec.rounds} rounds; ` +
      `record ε ${job.spec.dp.enabled ? job.spec.dp.target_epsilon : "off"}, ${job.spec.he.scheme}; at least ${job.min_contributors} branches; by ${job.created_by}.`),
      el("p", { class: "note" }, job.steps.length ? job.steps[job.steps.length - 1].reason : ""));
    const actions = [];
    if (LAUNCHERS.has(role) && job.state === "requested")
      actions.push(el("button", { type: "button", id: "start", disabled: approved < job.min_contributors ? true : null, onclick: () => step("start") },
        approved < job.min_contributors ? `Start (needs ${job.min_contributors - approved} more approvals)` : "Start"));
    if (LAUNCHERS.has(role) && LIVE.has(job.state))
      actions.push(el("button", { type: "button", class: "secondary", onclick: () => step("stop") }, "Stop"));
    fill("actions", ...actions);
    fill("answers", table(["branch", "answer", "reason", "when (UTC)"], job.nodes.map(a =>
      [a.node_id, el("span", { class: `badge ${a.decision}` }, a.decision), a.reason || "", (a.decided_at || "").slice(0, 19).replace("T", " ")])));
    fill("steps", table(["state", "why", "who", "when (UTC)"], job.steps.map(s => [s.state, s.reason, s.actor, s.at.slice(0, 19).replace("T", " ")])));
    const rounds = await api(`/jobs/${encodeURIComponent(jobId)}/rounds`);
    const done = rounds.length, share = Math.min(100, Math.round(100 * done / job.spec.rounds));
    fill("progress", el("p", {}, `${done} of ${job.spec.rounds} rounds closed`),
      el("div", { class: "progress" }, el("div", { style: { width: `${share}%` } })));
    fill("rounds", rounds.length ? table(["round", "branches contributing", "left out (why)", "node-level ε so far", "seconds"],
      rounds.map(r => [r.round, r.contributors.length + (r.others_contributing || 0), Object.entries(r.refused).map(([n, w]) => `${n}: ${w}`).join("; "),
        fmt(r.node_level_epsilon), fmt(r.seconds)]), { numeric: [1, 3, 4] }) : el("p", { class: "note" }, "No round closed yet."),
      el("p", { class: "note" }, (job.spec.dp.enabled ? `Record-level ε: each branch spends at most ε ${fmt(job.spec.dp.target_epsilon)} over the ` +
        "job, accounted on the branch (its own spend stays there: it would tell its size). " : "") +
        "No loss is shown per round: it would be a statistic of the branches' data that no privacy budget accounts for; " +
        "accuracy on held-out months is released once, at the end."));
    if (job.state === "completed" && !shownResults && role !== "branch_it") { shownResults = true; await showResults(); }
    showError(null);
    if (LIVE.has(job.state)) setTimeout(refresh, 2000);
  } catch (error) { showError(error); setTimeout(refresh, 5000); }
}
refresh();
