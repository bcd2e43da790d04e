"use strict";
const { api, el, table, fill, showError } = Sovereign;
async function load() {
  try {
    const jobs = await api("/jobs");
    fill("jobs", jobs.length ? table(["job", "state", "purpose → recipient", "branches approved / asked", "rounds", "by", "updated (UTC)"],
      jobs.slice().reverse().map(j => [el("a", { href: `/ui/jobs/${encodeURIComponent(j.job_id)}` }, j.job_id),
        el("span", { class: `badge ${j.state}` }, j.state), `${j.spec.purpose} → ${j.spec.recipient_role}`,
        `${j.nodes.filter(a => a.decision === "approved").length} / ${j.nodes.length}`, j.spec.rounds, j.created_by,
        j.updated_at.slice(0, 19).replace("T", " ")])) : el("p", {}, "No joint forecast yet."));
    showError(null);
  } catch (error) { showError(error); }
}
load(); setInterval(load, 5000);
