"use strict";
/* Launch a joint forecast: every change is checked by POST /jobs/check (the same rules as
   POST /jobs), which answers with the field at fault or with what the job would cost. */
const { api, el, fill, fmt, showError } = Sovereign;
const form = document.getElementById("launch");
let timer = null, lastOk = false;

function value(name) { return form.elements[name].value; }
function checked(name) { return form.elements[name].checked; }
function request() {
  const nodes = [...form.querySelectorAll("input[name=node]:checked")].map(i => i.value);
  const regions = [...form.querySelectorAll("input[name=region]:checked")].map(i => i.value);
  const spec = {
    job_id: value("job_id"), purpose: value("purpose"), target: value("target"),
    horizon: Number(value("horizon")), rounds: Number(value("rounds")), local_epochs: Number(value("local_epochs")),
    regions,
    dp: { enabled: checked("dp_enabled"), target_epsilon: Number(value("target_epsilon")), delta: Number(value("delta")) },
    he: { scheme: value("scheme") },
  };
  if (checked("customer_dp")) spec.customer_dp = { epsilon: Number(value("customer_epsilon")) };
  if (checked("node_dp")) spec.node_dp = { enabled: true, noise_multiplier: Number(value("node_noise")), nodes: Math.max(nodes.length, 1) };
  return { spec, nodes, min_contributors: Number(value("min_contributors")) };
}
function showCost(c) {
  const rows = [
    ["record-level (DP-SGD)", c.record_epsilon === null ? "off" : `ε ${fmt(c.record_epsilon)} at δ ${c.record_delta} per branch, over ${c.rounds} rounds`],
    ["customer-level", c.customer_epsilon_per_year === null ? "off" : `ε ${fmt(c.customer_epsilon_per_year)} per year of purchases: ` +
      `${Math.round(c.customer_budget_share * 100)} % of a branch's default yearly budget (${c.customer_jobs_per_year} such jobs a year)`],
    ["node-level", c.node_epsilon === null ? "off" : `ε ${fmt(c.node_epsilon)} at δ ${c.node_delta} for any one dealership's participation`],
  ];
  fill("cost", el("dl", {}, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    ...(c.warnings || []).map(w => el("p", { class: "bad warning" }, w)),
    el("p", { class: "note" }, "Each branch spends by its own settings and refuses a job that would overrun its budget."));
}
async function check() {
  const box = document.getElementById("check");
  try {
    const answer = await api("/jobs/check", { method: "POST", body: request() });
    showCost(answer.privacy); box.className = "check ok"; box.textContent = `ready to request of ${answer.nodes} branches`; lastOk = true;
  } catch (error) { box.className = "check error"; box.textContent = error.message; lastOk = false; }
  document.getElementById("submit").disabled = !lastOk;
}
form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
form.addEventListener("submit", async event => {
  event.preventDefault();
  try {
    const job = await api("/jobs", { method: "POST", body: request() });
    location.href = `/ui/jobs/${encodeURIComponent(job.job_id)}`;
  } catch (error) { showError(error); }
});
(async () => {
  try {
    const nodes = await api("/nodes");
    const regions = [...new Set(nodes.map(n => n.region).filter(Boolean))].sort();
    const byRegion = regions.map(r => el("div", {}, el("strong", {}, r), " ",
      el("button", { type: "button", class: "secondary", onclick: () => { form.querySelectorAll(`input[data-region="${r}"]`).forEach(i => { i.checked = true; }); check(); } }, "all"),
      el("div", {}, nodes.filter(n => n.region === r).map(n => el("label", {},
        el("input", { type: "checkbox", name: "node", value: n.node_id, "data-region": r, checked: true }), n.node_id)))));
    const loose = nodes.filter(n => !n.region).map(n => el("label", {}, el("input", { type: "checkbox", name: "node", value: n.node_id, checked: true }), n.node_id));
    fill("nodes", ...byRegion, ...loose);
    fill("regions", ...regions.map(r => el("label", {}, el("input", { type: "checkbox", name: "region", value: r }), r)));
    form.elements.job_id.value = `forecast-${new Date().toISOString().slice(0, 10)}-${Math.random().toString(36).slice(2, 6)}`;
    form.elements.min_contributors.value = Math.min(3, nodes.length || 1);
    check();
  } catch (error) { showError(error); }
})();
