"use strict";
const { api, el, table, fmt, fill, showError, forecastChart, ARMS } = Sovereign;
(async () => {
  try {
    const s = await api("/api/status");
    fill("health", table(["", ""], [
      ["node", `${s.node} (${s.dataset}${s.region ? `, region ${s.region}` : ""})`],
      ["versions", Object.entries(s.versions).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["coordinator", s.coordinator.url ? el("span", { class: s.coordinator.reachable ? "ok" : "bad" },
        `${s.coordinator.url}: ${s.coordinator.reachable ? "reachable" : s.coordinator.problem}`) : "none configured"],
      ["policy", s.policy.name ? el("span", { class: s.policy.problem ? "bad" : "ok" },
        `${s.policy.name} v${s.policy.version} (${s.policy.jurisdiction}), hash ${s.policy.hash.slice(0, 16)}…` + (s.policy.problem ? `: ${s.policy.problem}` : "")) :
        el("span", { class: "bad" }, s.policy.problem)],
      ["lineage", s.lineage.length ? s.lineage.map(c => el("div", { class: c.verified ? "ok" : "bad" },
        `${c.chain}: ${c.events} events, ${c.verified ? "verified" : c.problem}`)) : "no events yet"],
    ]));
    fill("rules", table(["rule", "value"], [["approvals", s.rules.approvals === "by_hand" ? "by hand, each job's exact spec" : "standing: any job these rules accept"],
      ["accepted purposes", s.rules.accepted_purposes.join(", ")], ["accepted recipients", s.rules.accepted_recipient_roles.join(", ")],
      ["coordinator jurisdiction", s.rules.coordinator_jurisdiction], ["trusted app builds", s.rules.trusted_apps]]));
    const b = await api("/api/budget");
    const parts = Object.entries(b.datasets).map(([d, r]) => el("div", {},
      el("h3", {}, `${d}: ε ${fmt(r.committed_epsilon)} committed of ${fmt(r.budget.epsilon)}, ${fmt(r.remaining_epsilon)} left`),
      el("div", { class: "progress" }, el("div", { style: { width: `${Math.min(100, 100 * r.committed_epsilon / r.budget.epsilon)}%` } })),
      r.jobs.length ? table(["job", "status", "planned ε", "spent ε", "δ", "accountant", "why"], r.jobs.map(j =>
        [j.job_id, j.status, fmt(j.planned_epsilon), fmt(j.epsilon), fmt(j.delta), j.accountant, j.reason || ""]), { numeric: [2, 3, 4] })
        : el("p", { class: "note" }, "No job has spent from it yet.")));
    if (b.customer) parts.push(el("h3", {}, `customer-level: at most ε ${b.customer.epsilon_per_year} per year of purchases`),
      Object.keys(b.customer.years).length ? table(["year", "spent", "left", "releases"], Object.entries(b.customer.years).map(([y, r]) => [y, fmt(r.spent), fmt(r.left), r.releases]))
        : el("p", { class: "note" }, "No release yet."));
    fill("budget", ...(parts.length ? parts : [el("p", { class: "bad" }, "No privacy budget set in node.json: the node refuses DP jobs until one is.")]));
    const f = (await api("/api/forecast")).report;
    if (!f) { fill("forecast", el("p", { class: "note" }, "No job has evaluated on this node yet.")); }
    else {
      const arms = Object.keys(f.scores || {});
      const outlook = f.outlook;
      fill("forecast", el("p", {}, `Job ${f.job_id}: held-out months ${f.months[0]} to ${f.months[f.months.length - 1]}.`),
        table(["method", "MASE on held-out months"], arms.map(a => [ARMS[a] || a.replace(/_/g, " "), fmt(f.scores[a].mase)]), { numeric: [1] }),
        outlook ? el("div", {}, el("h3", {}, "Months ahead"), forecastChart({ point: outlook.point, low80: outlook.low80, high80: outlook.high80, low95: outlook.low95, high95: outlook.high95 }),
          table(["month", "forecast", "80 % interval", "95 % interval"], outlook.months.map((m, i) => [m, fmt(outlook.point[i], 4),
            `${fmt(outlook.low80[i], 4)} – ${fmt(outlook.high80[i], 4)}`, `${fmt(outlook.low95[i], 4)} – ${fmt(outlook.high95[i], 4)}`]))) : null);
    }
    showError(null);
  } catch (error) { showError(error); }
})();
