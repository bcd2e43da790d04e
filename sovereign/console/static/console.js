/* What every page shares: the API client (session cookie + the console header), a DOM
   builder that only ever sets text (no HTML from data), tables, and a forecast chart. */
"use strict";
const Sovereign = (() => {
  async function api(path, { method = "GET", body } = {}) {
    const response = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "X-Sovereign-Console": "1", ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    if (response.status === 401) { location.href = "/ui/signin?next=" + encodeURIComponent(location.pathname); throw new Error("signed out"); }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = explain((await response.json()).detail); } catch (_) { /* not JSON */ }
      const error = new Error(detail); error.status = response.status; throw error;
    }
    return response.status === 204 ? null : response.json();
  }
  function explain(detail) {
    if (Array.isArray(detail)) return detail.map(d => `${(d.loc || []).filter(x => x !== "body").join(".")}: ${d.msg}`).join("\n");
    return String(detail);
  }
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "style") Object.assign(node.style, v);  // through the CSSOM: the page's CSP refuses style attributes
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  function table(columns, rows, { numeric = [] } = {}) {
    return el("table", {}, el("thead", {}, el("tr", {}, columns.map(c => el("th", {}, c)))),
      el("tbody", {}, rows.map(r => el("tr", {}, r.map((v, i) => el("td", { class: numeric.includes(i) ? "num" : null }, v))))));
  }
  function fmt(x, digits = 3) {
    if (x === null || x === undefined) return "—";
    return typeof x === "number" ? x.toLocaleString("en", { maximumSignificantDigits: digits }) : String(x);  // δ 1e-5 stays 0.00001
  }
  function showError(error) {
    const box = document.getElementById("error");
    if (!box) return;
    box.hidden = !error; box.textContent = error ? (error.message || String(error)) : "";
  }
  function fill(id, ...children) { const node = document.getElementById(id); node.replaceChildren(...children); return node; }
  /* A forecast with its 80 % and 95 % bands, as inline SVG (prints, needs no library). */
  function forecastChart(totals, { width = 520, height = 180 } = {}) {
    const NS = "http://www.w3.org/2000/svg", n = totals.point.length, pad = 34;
    const lo = Math.min(...totals.low95), hi = Math.max(...totals.high95), span = (hi - lo) || 1;
    const x = i => pad + (n === 1 ? (width - 2 * pad) / 2 : i * (width - 2 * pad) / (n - 1));
    const y = v => height - pad / 2 - (v - lo) / span * (height - pad);
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`); svg.setAttribute("role", "img"); svg.setAttribute("class", "chart");
    svg.setAttribute("aria-label", "forecast with 80 and 95 percent intervals");
    const add = (tag, attrs) => { const s = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) s.setAttribute(k, v); svg.append(s); return s; };
    const band = (low, high, opacity) => add("polygon", { fill: "#0b5cad", "fill-opacity": opacity,
      points: [...low.map((v, i) => `${x(i)},${y(v)}`), ...high.map((v, i) => `${x(i)},${y(v)}`).reverse()].join(" ") });
    band(totals.low95, totals.high95, 0.12); band(totals.low80, totals.high80, 0.22);
    add("polyline", { fill: "none", stroke: "#0b5cad", "stroke-width": 2, points: totals.point.map((v, i) => `${x(i)},${y(v)}`).join(" ") });
    for (const v of [lo, hi]) { const t = add("text", { x: 2, y: y(v) + 4, "font-size": 10, fill: "#5b6773" }); t.textContent = fmt(v, 4); }
    totals.point.forEach((_, i) => { const t = add("text", { x: x(i) - 6, y: height - 2, "font-size": 10, fill: "#5b6773" }); t.textContent = `+${i + 1}`; });
    return svg;
  }
  document.addEventListener("DOMContentLoaded", () => {
    const out = document.getElementById("sign-out");
    if (out) out.addEventListener("click", async () => { await api("/ui/session", { method: "DELETE" }); location.href = "/ui/signin"; });
  });
  /* The forecasting methods a job scores, as a reader would name them. */
  const ARMS = { federated: "this joint forecast", best_local: "best a branch can do alone", local_choice: "per-branch choice (ETS/Theta/MA)",
    ets: "AutoETS alone", theta: "AutoTheta alone", moving_average_3: "3-month moving average (what stores do today)",
    seasonal_naive: "same month last year", mean_12: "12-month mean", local: "our model, branch alone",
    local_dp: "our model, branch alone, with DP" };
  return { api, el, table, fmt, fill, showError, forecastChart, ARMS };
})();
