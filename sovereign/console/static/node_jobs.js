"use strict";
const { api, el, table, fmt, fill, showError } = Sovereign;
async function decide(jobId, specHash, decision) {
  const reason = document.getElementById(`reason-${jobId}`).value.trim();
  if (!reason) { showError(new Error("reason: say why (it is kept in lineage and sent with the decision)")); return; }
  try { await api(`/api/jobs/${encodeURIComponent(jobId)}/decision`, { method: "POST", body: { decision, reason, spec_hash: specHash } }); showError(null); load(); }
  catch (error) { showError(error); }
}
async function load() {
  try {
    const answer = await api("/api/jobs");
    if (!answer.jobs.length) { fill("requests", el("p", { class: "card" }, answer.problem || "No job awaits a decision.")); return; }
    fill("requests", ...answer.jobs.map(j => el("section", { class: "card job-request", "data-job": j.job_id },
      el("h2", {}, j.job_id), el("p", { class: "note" }, `spec ${(j.spec_hash || "unreadable").slice(0, 12)}`), el("p", {}, `${j.purpose} → ${j.recipient_role} (${j.destination}), ${j.rounds} rounds, ` +
        `ε ${j.epsilon === null ? "off" : fmt(j.epsilon)}` + (j.epsilon_left === null ? " (no budget set)" : ` of ${fmt(j.epsilon_left)} left`)),
      el("p", {}, "This node's rules: ", el("span", { class: j.own_rules === "take it" ? "ok" : "bad" }, j.own_rules)),
      table(["it asks for", ""], Object.entries(j.asks || {})),
      table(["field", "what this node's policy releases of it"], Object.entries(j.reads)),
      j.decision === "awaiting yours" ? el("div", { class: "noprint" },
        el("label", {}, "Reason ", el("input", { id: `reason-${j.job_id}`, name: "reason", placeholder: "why (kept in lineage)" })),
        el("button", { type: "button", class: "approve", onclick: () => decide(j.job_id, j.spec_hash, "approved") }, "Approve"), " ",
        el("button", { type: "button", class: "secondary deny", onclick: () => decide(j.job_id, j.spec_hash, "denied") }, "Deny"))
        : el("p", {}, "Decision: ", el("span", { class: `badge ${j.decision}`, id: `decision-${j.job_id}` }, j.decision)))));
  } catch (error) { showError(error); }
}
load();
