"use strict";
const { api, el, table, fill, showError } = Sovereign;
const show = t => t ? `${t.treatment}${t.field_class ? ` [${t.field_class}]` : ""}${t.rule ? ` (${t.rule})` : ""}` : "—";
(async () => {
  try {
    const versions = await api("/audit/policies");
    if (!versions.length) { fill("policies", el("p", { class: "card" }, "No node has decided on a job yet.")); return; }
    fill("policies", ...versions.map(v => el("section", { class: "card" },
      el("h2", {}, `${v.node}: ${v.policy} v${v.version}`),
      el("p", { class: "note" }, `hash ${v.policy_hash.slice(0, 16)}…, first applied ${v.first_seen.slice(0, 19).replace("T", " ")} UTC, jobs: ${v.jobs.join(", ")}`),
      v.changes.length ? el("div", {}, el("h3", {}, "Changed from the version before"),
        table(["field", "before", "after"], v.changes.map(c => [c.field, show(c.before), show(c.after)]))) : null,
      table(["field", "class", "treatment", "rule"], v.fields.map(f => [f.field, f.field_class || "unclassified", f.treatment, f.rule || ""])))));
    showError(null);
  } catch (error) { showError(error); }
})();
