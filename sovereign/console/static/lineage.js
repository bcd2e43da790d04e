"use strict";
/* Lineage explorer: every store's chains verified, events searched across the stores this
   service can read, a graph from datasets and fields to jobs to models, and exports. */
const { api, el, table, fill, showError } = Sovereign;
const form = document.getElementById("search");

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
  return params;
}
async function stores() {
  try {
    const rows = await api("/audit/stores");
    fill("stores", table(["store", "chain", "events", "status", "checked against"], rows.map(r =>
      [r.store, r.chain, r.events, el("span", { class: r.verified ? "ok" : "bad" }, r.verified ? "verified" : `FAILED: ${r.problem}`), r.key])));
  } catch (error) { showError(error); }
}
function graph(g) {
  if (!g.nodes.length) return el("p", { class: "note" }, "No data read in these events.");
  const NS = "http://www.w3.org/2000/svg", columns = ["dataset", "field", "job", "model"], gap = 26, colWidth = 270;
  const rows = Object.fromEntries(columns.map(c => [c, g.nodes.filter(n => n.kind === c)]));
  const where = {};
  columns.forEach((c, ci) => rows[c].forEach((n, ri) => { where[n.id] = [20 + ci * colWidth, 30 + ri * gap]; }));
  const height = 40 + Math.max(...columns.map(c => rows[c].length)) * gap;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${20 + columns.length * colWidth} ${height}`); svg.setAttribute("id", "lineage-graph");
  const add = (tag, attrs, text) => { const s = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) s.setAttribute(k, v); if (text) s.textContent = text; svg.append(s); return s; };
  columns.forEach((c, ci) => add("text", { x: 20 + ci * colWidth, y: 14, "font-weight": 700, "font-size": 12 }, c));
  for (const e of g.edges) {
    const [x1, y1] = where[e.source], [x2, y2] = where[e.target];
    add("line", { x1: x1 + 200, y1: y1 - 4, x2: x2 - 4, y2: y2 - 4, stroke: "#9aa5b1", "stroke-width": 1 });
  }
  for (const n of g.nodes) { const [x, y] = where[n.id]; add("text", { x, y, "font-size": 11, class: `node ${n.kind}` }, n.label.slice(0, 34)); }
  return svg;
}
async function search(event) {
  if (event) event.preventDefault();
  const params = query();
  try {
    const found = await api(`/audit/events?${params}`);
    fill("events", el("p", {}, `${found.total} events` + (found.total > found.events.length ? ` (first ${found.events.length} shown)` : "")),
      table(["time (UTC)", "store", "actor", "seq", "kind", "job", "round", "purpose", "fields", "what"], found.events.map(e =>
        [e.recorded_at.slice(0, 19).replace("T", " "), e.store, e.actor, e.seq, e.kind, e.job_id, e.round ?? "", e.purpose, e.fields.join(", "),
          e.details.reason || e.details.decision || e.details.state || (e.digest || "").slice(0, 16)])));
    const job = params.get("job_id");
    fill("graph", graph(await api(`/audit/graph${job ? `?job_id=${encodeURIComponent(job)}` : ""}`)));
    const scope = new URLSearchParams();
    if (job) scope.set("job_id", job);
    if (params.get("node")) scope.set("node", params.get("node"));
    fill("exports", ...[["openlineage", "OpenLineage (JSON)"], ["csv", "CSV"], ["html", "HTML report"]].flatMap(([format, label], i) => [
      i ? " · " : "", el("a", { href: `/audit/export?format=${format}&${scope}`, download: true, id: `export-${format}` }, label)]));
    showError(null);
  } catch (error) { showError(error); }
}
form.addEventListener("submit", search);
const initial = new URLSearchParams(location.search);
for (const [k, v] of initial) if (form.elements[k]) form.elements[k].value = v;
stores(); search();
