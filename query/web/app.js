// Shukei's web page (DESIGN.md §5). It signs in with a token, shows the purposes the
// principal's grant names, and draws the reports of the purpose picked, from the query API.
// Plain JavaScript, no build step, nothing from another origin: the service's
// Content-Security-Policy allows only this file, style.css and same-origin requests.
//
// Data never goes through innerHTML: every value from the API is set as text or as an
// attribute, so a feature or tenant id cannot become markup.
"use strict";

(function () {
  const TOKEN_KEY = "shukei.token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE_SIZE = 8; // .s0 … .s7 in style.css

  const PURPOSE_NAMES = {
    service_improvement: "Service improvement",
    marketing: "Marketing",
    follow_up: "Follow-up",
    interview_selection: "Interview selection",
    support: "Support",
    external_aggregate: "External aggregates",
  };
  const STATUS_TEXT = {
    400: "Bad request",
    401: "Not signed in",
    403: "Refused",
    404: "Not found",
    500: "Report failed",
    503: "Unavailable",
    504: "Timed out",
  };
  // Reports drawn first within their purpose: the privacy budget is what a partner checks first.
  const FIRST = ["dp_budget"];

  const state = { token: null, whoami: null, purpose: null, runs: 0 };

  // --- DOM helpers -------------------------------------------------------------------------

  function byId(id) {
    return document.getElementById(id);
  }

  // el builds an HTML element. props: class, text, title, hidden, dataset, attrs, on.
  function el(tag, props, children) {
    const e = document.createElement(tag);
    apply(e, props || {});
    for (const c of children || []) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  function svg(tag, attrs, children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    }
    for (const c of children || []) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  function apply(e, props) {
    if (props.class) e.className = props.class;
    if (props.text !== undefined) e.textContent = props.text;
    if (props.title) e.title = props.title;
    if (props.hidden) e.hidden = true;
    for (const [k, v] of Object.entries(props.dataset || {})) {
      if (v !== null && v !== undefined) e.dataset[k] = String(v);
    }
    for (const [k, v] of Object.entries(props.attrs || {})) {
      if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const [k, v] of Object.entries(props.on || {})) e.addEventListener(k, v);
  }

  function pretty(name) {
    const s = String(name).replace(/_/g, " ");
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function purposeName(p) {
    return PURPOSE_NAMES[p] || pretty(p);
  }

  // --- API ---------------------------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message, auditSeq) {
      super(message);
      this.status = status;
      this.auditSeq = auditSeq;
    }
  }

  async function api(path) {
    let res;
    try {
      res = await fetch(path, {
        headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      throw new APIError(0, "the service cannot be reached: " + e.message);
    }
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    if (body && body.audit_seq) noteAudit(body.audit_seq);
    if (!res.ok) {
      const msg = body && body.error ? body.error : res.statusText || "request failed";
      throw new APIError(res.status, msg, body ? body.audit_seq : undefined);
    }
    return body;
  }

  function noteAudit(seq) {
    byId("audit-note").textContent = " (latest record of yours: #" + seq + ")";
  }

  // errorBox fills box with a refusal: its status, the service's own words, its audit record.
  function errorBox(box, err) {
    box.replaceChildren();
    const status = err.status || 0;
    box.dataset.status = String(status);
    const head = status ? status + " " + (STATUS_TEXT[status] || "Error") : "Error";
    box.append(el("strong", { class: "error-status", text: head }));
    box.append(el("span", { class: "error-text", text: err.message }));
    if (err.auditSeq) box.append(el("span", { class: "error-audit", text: "audit record #" + err.auditSeq }));
    box.hidden = false;
  }

  // --- sign-in -----------------------------------------------------------------------------

  async function signIn(token, quiet) {
    state.token = token;
    const error = byId("signin-error");
    error.hidden = true;
    byId("signin-button").disabled = true;
    try {
      const who = await api("/v1/whoami");
      sessionStorage.setItem(TOKEN_KEY, token);
      showApp(who);
    } catch (e) {
      signOut();
      if (!quiet || e.status !== 401) errorBox(error, e);
      else errorBox(error, new APIError(401, "your session has ended; sign in again"));
    } finally {
      byId("signin-button").disabled = false;
    }
  }

  function signOut() {
    state.token = null;
    state.whoami = null;
    state.purpose = null;
    sessionStorage.removeItem(TOKEN_KEY);
    byId("app").hidden = true;
    byId("who").hidden = true;
    byId("reports").replaceChildren();
    byId("purposes").replaceChildren();
    byId("audit-note").textContent = "";
    byId("token").value = "";
    byId("signin-error").hidden = true;
    byId("signin").hidden = false;
  }

  function showApp(who) {
    state.whoami = who;
    byId("signin").hidden = true;
    byId("app").hidden = false;
    byId("who").hidden = false;
    byId("who-principal").textContent = who.principal;
    byId("who-kind").textContent = who.kind;
    const details = [];
    if (who.contract_ref) details.push("contract " + who.contract_ref);
    if (who.expires_at) details.push("until " + formatTime(who.expires_at));
    byId("who-contract").textContent = details.join(" · ");
    byId("greeting").textContent = "Reports for " + who.principal;
    const purposes = who.purposes || [];
    const thresholded = (who.reports || []).some((r) => r.k_threshold);
    byId("grant").textContent = purposes.length
      ? "Your grant covers " + purposes.length + (purposes.length === 1 ? " purpose" : " purposes") + "." +
        (thresholded ? " Aggregates withhold every cell of fewer than " + who.k + " tenants." : "")
      : "Your grant covers no purpose in force: there is nothing you may read.";

    const nav = byId("purposes");
    nav.replaceChildren();
    for (const p of purposes) {
      const count = (who.reports || []).filter((r) => r.purpose === p).length;
      nav.append(el("button", {
        class: "purpose",
        dataset: { purpose: p },
        attrs: { type: "button", "aria-pressed": "false" },
        title: count + (count === 1 ? " report" : " reports"),
        on: { click: () => pickPurpose(p) },
      }, [purposeName(p)]));
    }
    byId("purpose-hint").hidden = false;
    byId("reports").replaceChildren();
  }

  // --- purposes and reports ----------------------------------------------------------------

  function pickPurpose(p) {
    state.purpose = p;
    for (const b of byId("purposes").querySelectorAll("button.purpose")) {
      b.setAttribute("aria-pressed", b.dataset.purpose === p ? "true" : "false");
    }
    byId("purpose-hint").hidden = true;
    const reps = (state.whoami.reports || []).filter((r) => r.purpose === p);
    reps.sort((a, b) => rankOf(a) - rankOf(b));
    const box = byId("reports");
    box.replaceChildren();
    box.dataset.purpose = p;
    for (const rep of reps) {
      const section = buildSection(rep);
      box.append(section);
      if (needsInput(rep)) {
        section.dataset.state = "idle";
        setStatus(section, "This report needs " + requiredNames(rep) + ": fill them in and run it.");
      } else {
        run(section, rep);
      }
    }
  }

  function rankOf(rep) {
    const i = FIRST.indexOf(rep.name);
    return i < 0 ? FIRST.length : i;
  }

  // A ticket is needed even where the parameter is optional in the API: without one the
  // service refuses the trace, so the page asks for it instead of running into the refusal.
  // (A break-glass grant is the exception path: optional on the page, used instead of a ticket.)
  function isRequired(p) {
    return p.required || (p.kind === "ticket" && p.name === "ticket");
  }

  function needsInput(rep) {
    return (rep.params || []).some(isRequired);
  }

  function requiredNames(rep) {
    return (rep.params || []).filter(isRequired).map((p) => pretty(p.name).toLowerCase()).join(" and ");
  }

  function buildSection(rep) {
    const section = el("section", {
      class: "card report" + (rep.name === "dp_budget" ? " report-budget" : ""),
      dataset: { report: rep.name, purpose: rep.purpose, state: "idle", run: "0" },
      attrs: { id: "report-" + rep.name, "aria-labelledby": "title-" + rep.name },
    });
    const head = el("header", { class: "report-head" }, [
      el("div", { class: "report-titles" }, [
        el("h2", { text: rep.title, attrs: { id: "title-" + rep.name } }),
        el("p", { class: "report-desc", text: rep.description }),
      ]),
      el("div", { class: "report-badges" }, [
        el("code", { class: "pill pill-code", text: rep.name }),
        rep.k_threshold ? el("span", { class: "pill pill-k", text: "k ≥ " + state.whoami.k, title: "cells of fewer than k tenants are withheld" }) : null,
      ]),
    ]);
    const form = buildForm(rep);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      run(section, rep);
    });
    section.append(
      head,
      form,
      el("div", { class: "status", attrs: { role: "status" } }),
      el("div", { class: "error", attrs: { role: "alert" }, hidden: true }),
      el("div", { class: "budget", hidden: true }),
      el("div", { class: "chart" }),
      el("div", { class: "table-wrap" }),
    );
    return section;
  }

  // --- parameters --------------------------------------------------------------------------

  function buildForm(rep) {
    const form = el("form", { class: "params", dataset: { report: rep.name } });
    for (const p of rep.params || []) form.append(paramField(rep, p));
    form.append(el("div", { class: "param param-run" }, [
      el("button", { class: "button button-primary run", text: "Run", attrs: { type: "submit" } }),
    ]));
    return form;
  }

  function paramField(rep, p) {
    const id = "p-" + rep.name + "-" + p.name;
    const label = pretty(p.name);
    const wrap = el("div", {
      class: "param param-" + p.kind,
      dataset: { param: p.name },
      title: p.doc + (p.default ? " (default: " + p.default.replace(/_/g, " ") + ")" : ""),
    });
    const def = p.default || "";
    let input;
    switch (p.kind) {
      case "bool":
        input = el("input", { attrs: { type: "checkbox", id, name: p.name } });
        input.checked = def === "true";
        wrap.append(el("label", { class: "check" }, [input, " " + label]));
        return wrap;
      case "enum":
        if (p.multi) {
          const chosen = def ? def.split(",") : [];
          const legend = el("legend", { class: "field", text: label });
          if (!def) legend.append(el("span", { class: "field-note", text: " · none ticked: all" }));
          const group = el("fieldset", { class: "checks", attrs: { id } }, [legend]);
          for (const v of p.values || []) {
            const box = el("input", { attrs: { type: "checkbox", name: p.name, value: v } });
            box.checked = chosen.includes(v);
            group.append(el("label", { class: "check" }, [box, " " + v]));
          }
          wrap.append(group);
          return wrap;
        }
        input = el("select", { attrs: { id, name: p.name } });
        if (!def) input.append(el("option", { text: "any", attrs: { value: "" } }));
        for (const v of p.values || []) input.append(el("option", { text: v, attrs: { value: v } }));
        input.value = def;
        break;
      case "int":
        input = el("input", { attrs: { type: "number", id, name: p.name, min: p.min, max: p.max, step: 1, inputmode: "numeric" } });
        input.value = def;
        break;
      case "date":
      case "month":
        // A default such as today, last_week or current is the service's to resolve: the
        // field starts empty and shows the date the service used once the report has run.
        input = el("input", { attrs: { type: p.kind, id, name: p.name } });
        input.value = (p.kind === "date" ? /^\d{4}-\d{2}-\d{2}$/ : /^\d{4}-\d{2}$/).test(def) ? def : "";
        if (def && !input.value) input.dataset.default = def;
        break;
      case "time":
        input = el("input", { attrs: { type: "text", id, name: p.name, placeholder: def === "now" ? "now" : "2026-11-29T10:00:00Z", spellcheck: "false" } });
        input.value = def === "now" ? "" : def;
        break;
      default: // ident, ticket: free-form but checked by the service
        input = el("input", {
          attrs: {
            type: "text", id, name: p.name, spellcheck: "false", autocomplete: "off",
            placeholder: p.multi ? "all (or a,b,…)" : "",
          },
        });
        input.value = def;
    }
    if (isRequired(p)) input.required = true;
    wrap.prepend(el("label", { class: "field", text: label + (isRequired(p) ? " *" : ""), attrs: { for: id } }));
    wrap.append(input);
    return wrap;
  }

  // query reads the form into the request's parameters. An empty field is left out, so the
  // service applies the parameter's default.
  function query(rep, form) {
    const q = new URLSearchParams();
    q.set("purpose", rep.purpose);
    for (const p of rep.params || []) {
      if (p.kind === "bool") {
        const box = form.querySelector('input[name="' + p.name + '"]');
        q.set(p.name, box.checked ? "true" : "false");
      } else if (p.kind === "enum" && p.multi) {
        const vals = Array.from(form.querySelectorAll('input[name="' + p.name + '"]:checked')).map((b) => b.value);
        if (vals.length) q.set(p.name, vals.join(","));
      } else {
        const input = form.querySelector('[name="' + p.name + '"]');
        const v = input.value.trim();
        if (v !== "") q.set(p.name, v);
      }
    }
    return q;
  }

  // --- running a report --------------------------------------------------------------------

  function setStatus(section, text) {
    section.querySelector(".status").textContent = text;
  }

  async function run(section, rep) {
    const form = section.querySelector("form.params");
    const q = query(rep, form);
    const pending = ++state.runs;
    section.dataset.pending = String(pending);
    section.dataset.state = "loading";
    section.setAttribute("aria-busy", "true");
    setStatus(section, "Running…");
    const errBox = section.querySelector(".error");
    errBox.hidden = true;
    try {
      const res = await api("/v1/reports/" + encodeURIComponent(rep.name) + "?" + q.toString());
      if (section.dataset.pending !== String(pending)) return; // a newer run replaced this one
      render(section, rep, res);
      section.dataset.state = "ready";
    } catch (e) {
      if (section.dataset.pending !== String(pending)) return;
      clearResult(section);
      errorBox(errBox, e);
      setStatus(section, "");
      section.dataset.state = "error";
      if (e.status === 401) {
        // The token is no longer accepted (revoked, or the grant changed): sign in again.
        const msg = e.message;
        signOut();
        errorBox(byId("signin-error"), new APIError(401, msg, e.auditSeq));
        return;
      }
    } finally {
      if (section.dataset.pending === String(pending)) {
        section.removeAttribute("aria-busy");
        section.dataset.run = String(Number(section.dataset.run || "0") + 1);
      }
    }
  }

  function clearResult(section) {
    section.querySelector(".chart").replaceChildren();
    section.querySelector(".table-wrap").replaceChildren();
    const budget = section.querySelector(".budget");
    budget.replaceChildren();
    budget.hidden = true;
  }

  function render(section, rep, res) {
    clearResult(section);
    const rows = res.rows || [];
    const bits = [rows.length + (rows.length === 1 ? " row" : " rows")];
    if (res.truncated) bits.push("truncated by the service");
    bits.push("generated " + formatTime(res.generated_at));
    bits.push("audit record #" + res.audit_seq);
    setStatus(section, bits.join(" · "));
    section.dataset.rows = String(rows.length);
    showResolved(section.querySelector("form.params"), rep, res.params || {});
    section.dataset.auditSeq = String(res.audit_seq);

    const chart = res.chart || rep.chart || { kind: "table" };
    const chartBox = section.querySelector(".chart");
    if (rows.length === 0) {
      chartBox.append(el("p", {
        class: "empty",
        text: res.k
          ? "No rows. Nothing in this period reached k = " + res.k + " tenants, or nothing matched the filters."
          : "No rows for these parameters.",
      }));
      return;
    }
    if (rep.name === "dp_budget") {
      drawBudget(section.querySelector(".budget"), res);
    } else if (chart.kind === "bar") {
      drawBars(chartBox, chart, res.columns || rep.columns, rows);
    }
    section.querySelector(".table-wrap").append(table(res.columns || rep.columns, rows));
  }

  // showResolved fills the empty date and month fields with the values the service used.
  function showResolved(form, rep, params) {
    for (const p of rep.params || []) {
      if (p.kind !== "date" && p.kind !== "month") continue;
      const input = form.querySelector('[name="' + p.name + '"]');
      const v = params[p.name];
      if (input && input.value === "" && typeof v === "string") input.value = v;
    }
  }

  // --- formatting --------------------------------------------------------------------------

  function isNum(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function formatNumber(v) {
    if (!isNum(v)) return String(v);
    if (v !== 0 && Math.abs(v) < 0.001) return Number(v.toPrecision(3)).toExponential();
    return v.toLocaleString("en-US", { maximumFractionDigits: 3 });
  }

  function formatTime(s) {
    if (typeof s !== "string") return String(s);
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::\d{2})?(?:\.\d+)?(Z|[+-]\d{2}:\d{2})$/.exec(s);
    if (!m) return s;
    return m[1] + " " + m[2] + (m[3] === "Z" ? " UTC" : " " + m[3]);
  }

  function formatCell(v, col) {
    if (v === null || v === undefined) return "—";
    if (isNum(v)) return formatNumber(v);
    if (col && col.type === "time") return formatTime(v);
    return String(v);
  }

  // --- table -------------------------------------------------------------------------------

  function table(columns, rows) {
    const numeric = (c) => c.type === "integer" || c.type === "number";
    const head = el("tr", {}, columns.map((c) =>
      el("th", { text: c.name, title: c.doc, class: numeric(c) ? "num" : "", attrs: { scope: "col" } })));
    const body = rows.map((r) => el("tr", {}, columns.map((c) => {
      const v = r[c.name];
      return el("td", {
        text: formatCell(v, c),
        class: (numeric(c) ? "num" : "") + (v === null || v === undefined ? " null" : ""),
        dataset: { col: c.name },
      });
    })));
    return el("table", { class: "data" }, [el("thead", {}, [head]), el("tbody", {}, body)]);
  }

  // --- bar chart ---------------------------------------------------------------------------

  function text(v) {
    return v === null || v === undefined ? "" : String(v);
  }

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    return nice * mag;
  }

  function truncate(s, n) {
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  // drawBars draws one horizontal bar a row: the label column names it, the value column is
  // its length, the series column its colour; bars of one label are drawn together. With low
  // and high columns each bar gets an error bar. Every bar carries its data as attributes.
  function drawBars(box, chart, columns, rows) {
    const col = (name) => columns.find((c) => c.name === name) || { name, doc: "" };
    const items = [];
    for (const r of rows) {
      const value = r[chart.value];
      if (!isNum(value)) continue;
      items.push({
        row: r,
        label: text(r[chart.label]),
        series: chart.series ? text(r[chart.series]) : "",
        value,
        low: chart.low && isNum(r[chart.low]) ? r[chart.low] : null,
        high: chart.high && isNum(r[chart.high]) ? r[chart.high] : null,
      });
    }
    if (items.length === 0) {
      box.append(el("p", { class: "empty", text: "No value to draw." }));
      return;
    }
    // Rows that share a label and a series (a cell released in several windows) are told
    // apart by the first date or time column.
    const seen = new Map();
    for (const it of items) seen.set(it.label + "\u0000" + it.series, (seen.get(it.label + "\u0000" + it.series) || 0) + 1);
    const when = columns.find((c) => (c.type === "time" || c.type === "date") && c.name !== chart.label);
    for (const it of items) {
      if (when && seen.get(it.label + "\u0000" + it.series) > 1) it.sub = formatTime(text(it.row[when.name])).slice(0, 10);
    }

    const series = [];
    for (const it of items) if (!series.includes(it.series)) series.push(it.series);
    const groups = new Map();
    for (const it of items) {
      if (!groups.has(it.label)) groups.set(it.label, []);
      groups.get(it.label).push(it);
    }

    if (chart.series) {
      const legend = el("ul", { class: "legend", attrs: { "aria-label": "colour: " + chart.series } }, [
        el("li", { class: "legend-title", text: pretty(chart.series) }),
      ]);
      series.forEach((s, i) => legend.append(el("li", { dataset: { series: s } }, [
        el("span", { class: "swatch s" + (i % PALETTE_SIZE) }), s === "" ? "(none)" : s,
      ])));
      box.append(legend);
    }

    let lo = 0;
    let hi = 0;
    for (const it of items) {
      lo = Math.min(lo, it.value, it.low === null ? it.value : it.low);
      hi = Math.max(hi, it.value, it.high === null ? it.value : it.high);
    }
    if (hi === lo) hi = lo + 1;
    const step = niceStep(hi - lo, 5);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;

    const width = Math.max(480, Math.min(1100, Math.floor(box.clientWidth || 760)));
    let longest = 0;
    for (const l of groups.keys()) longest = Math.max(longest, l.length);
    const labelW = Math.max(90, Math.min(Math.round(width * 0.34), longest * 7 + 16));
    const valueW = 70;
    const plotW = width - labelW - valueW;
    const barH = 18;
    const barGap = 4;
    const groupGap = 12;
    const top = 6;
    const x = (v) => labelW + ((v - lo) / (hi - lo)) * plotW;

    let height = top;
    for (const g of groups.values()) height += g.length * barH + (g.length - 1) * barGap + groupGap;
    const plotBottom = height - groupGap / 2;
    height = plotBottom + 26;

    const title = pretty(chart.value) + " by " + pretty(chart.label).toLowerCase() + (chart.series ? ", coloured by " + chart.series : "");
    const root = svg("svg", {
      class: "bars",
      viewBox: "0 0 " + width + " " + height,
      width,
      height,
      role: "img",
      "aria-label": title,
      "data-label": chart.label,
      "data-value": chart.value,
      "data-series": chart.series || null,
    }, [svg("title", {}, [title])]);

    // Grid and axis.
    const grid = svg("g", { class: "grid" });
    for (let v = lo; v <= hi + step / 2; v += step) {
      const tx = x(v);
      grid.append(svg("line", { x1: tx, x2: tx, y1: top - 2, y2: plotBottom, class: Math.abs(v) < step / 1e6 ? "zero" : null }));
      grid.append(svg("text", { x: tx, y: plotBottom + 16, "text-anchor": "middle", class: "tick" }, [formatNumber(Math.round(v * 1e6) / 1e6)]));
    }
    root.append(grid);

    let y = top;
    let index = 0;
    for (const [label, its] of groups) {
      const gh = its.length * barH + (its.length - 1) * barGap;
      const g = svg("g", { class: "group", "data-label": label });
      g.append(svg("text", { x: labelW - 8, y: y + gh / 2, "text-anchor": "end", "dominant-baseline": "central", class: "label" }, [
        truncate(label === "" ? "(none)" : label, Math.max(8, Math.floor(labelW / 7.2))),
        svg("title", {}, [label]),
      ]));
      for (const it of its) {
        const si = series.indexOf(it.series) % PALETTE_SIZE;
        const x0 = x(0);
        const x1 = x(it.value);
        const rect = svg("rect", {
          class: "bar s" + si,
          x: Math.min(x0, x1),
          y,
          width: Math.max(Math.abs(x1 - x0), it.value === 0 ? 0 : 1),
          height: barH,
          rx: 2,
          "data-label": it.label,
          "data-series": chart.series ? it.series : null,
          "data-value": it.value,
          "data-low": it.low,
          "data-high": it.high,
          "data-when": it.sub || null,
          "data-row": index,
        });
        let tip = (it.label || "(none)") + (chart.series ? " · " + it.series : "") + (it.sub ? " · " + it.sub : "") + ": " +
          chart.value + " " + formatNumber(it.value);
        if (it.low !== null && it.high !== null) tip += " (" + chart.low + " " + formatNumber(it.low) + " to " + chart.high + " " + formatNumber(it.high) + ")";
        rect.append(svg("title", {}, [tip]));
        g.append(rect);
        let end = Math.max(x0, x1);
        if (it.low !== null && it.high !== null) {
          const cy = y + barH / 2;
          const xl = x(it.low);
          const xh = x(it.high);
          g.append(svg("g", { class: "err", "data-label": it.label, "data-series": chart.series ? it.series : null, "data-low": it.low, "data-high": it.high, "data-row": index }, [
            svg("line", { x1: xl, x2: xh, y1: cy, y2: cy }),
            svg("line", { x1: xl, x2: xl, y1: cy - 5, y2: cy + 5 }),
            svg("line", { x1: xh, x2: xh, y1: cy - 5, y2: cy + 5 }),
          ]));
          end = Math.max(end, xh);
        }
        g.append(svg("text", { x: end + 6, y: y + barH / 2, "dominant-baseline": "central", class: "value" }, [
          formatNumber(it.value) + (it.sub ? "  " + it.sub : ""),
        ]));
        y += barH + barGap;
        index++;
      }
      y += groupGap - barGap;
      root.append(g);
    }
    box.append(root);

    const v = col(chart.value);
    let caption = "Bar length: " + v.name + (v.doc ? " (" + v.doc + ")" : "") + ".";
    if (chart.low && chart.high) caption += " Whiskers: " + chart.low + " to " + chart.high + ".";
    box.append(el("p", { class: "caption", text: caption }));
  }

  // drawBudget shows a month's privacy budget: ε left of the allowance, as a figure and a gauge.
  function drawBudget(box, res) {
    const r = res.rows[0];
    const budget = r.epsilon_budget;
    const left = r.epsilon_left;
    const spent = r.epsilon_spent;
    box.dataset.month = r.month;
    box.dataset.epsilonBudget = String(budget);
    box.dataset.epsilonSpent = String(spent);
    box.dataset.epsilonLeft = String(left);
    const share = budget > 0 ? Math.max(0, Math.min(1, left / budget)) : 0;
    const level = share < 0.1 ? "low" : share < 0.3 ? "mid" : "ok";
    box.className = "budget budget-" + level;

    const width = 520;
    const gauge = svg("svg", { class: "gauge", viewBox: "0 0 " + width + " 20", width, height: 20, role: "img", "aria-label": "ε left of the budget" }, [
      svg("rect", { class: "track", x: 0, y: 0, width, height: 20, rx: 10 }),
      svg("rect", {
        class: "bar fill",
        x: 0, y: 0, width: Math.round(width * share * 10) / 10, height: 20, rx: 10,
        "data-label": r.month, "data-value": left,
      }, [svg("title", {}, ["ε left " + formatNumber(left) + " of " + formatNumber(budget)])]),
    ]);
    box.append(
      el("div", { class: "budget-figure" }, [
        el("span", { class: "budget-left", text: formatNumber(left) }),
        el("span", { class: "budget-of", text: " ε left of " + formatNumber(budget) }),
      ]),
      gauge,
      el("p", {
        class: "budget-detail",
        text: "In " + r.month + ": ε " + formatNumber(spent) + " spent by releases; δ " + formatNumber(r.delta_left) +
          " left of " + formatNumber(r.delta_budget) + ". A release that would overdraw is refused.",
      }),
    );
    box.hidden = false;
  }

  // --- start -------------------------------------------------------------------------------

  function start() {
    byId("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = byId("token").value.trim();
      if (token) signIn(token, false);
    });
    byId("signout").addEventListener("click", () => {
      signOut();
      byId("token").focus();
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved, true);
    else byId("token").focus();
  }

  start();
})();
