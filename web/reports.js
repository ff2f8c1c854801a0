// sallyport console: facility reports (#/reports, #/reports/<name>?facility=…&from=…&to=…).
// Each report is one table from the gateway (GET /api/v1/reports/<name>): the chart is
// drawn from it with uPlot (web/vendor/uplot, served by the gateway), the same numbers
// are shown as an accessible table under it, and "Download CSV" saves the gateway's CSV
// of that table (GET /api/v1/reports/<name>.csv). Dates are the facility's local days.
"use strict";

const Reports = (() => {
  const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0f766e", "#a16207", "#be185d"];
  let facilitiesFor = null;
  let catalog = null;
  let plot = null;
  let current = null;
  const $ = (id) => document.getElementById(id);

  function isoDay(d) {
    const z = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + z(d.getMonth() + 1) + "-" + z(d.getDate());
  }

  async function loadChoices() {
    const token = Api.token();
    if (facilitiesFor === token && catalog) return;
    const [list, reports] = await Promise.all([Api.get("/facilities"), Api.get("/reports")]);
    facilitiesFor = token;
    catalog = reports;
    const fsel = $("report-facility");
    fsel.replaceChildren();
    for (const f of list || []) fsel.appendChild(el("option", f.id + " — " + f.name, { value: f.id }));
    const rsel = $("report-name");
    rsel.replaceChildren();
    for (const r of reports) rsel.appendChild(el("option", r.title, { value: r.name }));
    if (!$("report-from").value) {
      const to = new Date();
      const from = new Date(to);
      from.setDate(from.getDate() - 29);
      $("report-from").value = isoDay(from);
      $("report-to").value = isoDay(to);
    }
  }

  function updateExtras() {
    const name = $("report-name").value;
    $("report-days-field").hidden = name !== "welfare";
    $("report-limit-field").hidden = name !== "top-numbers";
  }

  // The form as the query of both URLs.
  function formQuery() {
    const q = new URLSearchParams();
    q.set("facility", $("report-facility").value);
    q.set("from", $("report-from").value);
    q.set("to", $("report-to").value);
    const name = $("report-name").value;
    if (name === "welfare" && $("report-days").value) q.set("days", $("report-days").value);
    if (name === "top-numbers" && $("report-limit").value) q.set("limit", $("report-limit").value);
    return q;
  }

  function onSubmit(ev) {
    ev.preventDefault();
    location.hash = "#/reports/" + encodeURIComponent($("report-name").value) + "?" + formQuery().toString();
  }

  // #/reports or #/reports/<name>?query: the form, filled from the hash, and the report.
  async function route(hash) {
    await loadChoices();
    const m = hash.match(/^#\/reports\/([a-z-]+)(?:\?(.*))?$/);
    if (!m) {
      $("report-output").hidden = true;
      updateExtras();
      return;
    }
    const name = m[1];
    const q = new URLSearchParams(m[2] || "");
    $("report-name").value = name;
    for (const [k, id] of [["facility", "report-facility"], ["from", "report-from"], ["to", "report-to"],
      ["days", "report-days"], ["limit", "report-limit"]]) {
      if (q.get(k)) $(id).value = q.get(k);
    }
    updateExtras();
    $("report-chart").dataset.drawn = "0";
    const report = await Api.get("/reports/" + encodeURIComponent(name) + "?" + q.toString());
    current = { name, query: q.toString(), report };
    render(report);
  }

  function render(r) {
    $("report-output").hidden = false;
    $("report-title").textContent = r.title + " — " + r.facility_id + ", " + r.from + " to " + r.to +
      " (" + r.time_zone + ")";
    $("report-description").textContent = r.description;
    const dl = $("report-summary");
    dl.replaceChildren();
    for (const [k, v] of r.summary) {
      dl.appendChild(el("dt", k));
      dl.appendChild(el("dd", v));
    }
    dl.hidden = r.summary.length === 0;
    renderTable(r);
    drawChart(r);
    $("report-csv-status").textContent = "";
  }

  function renderTable(r) {
    $("report-caption").textContent = r.title + " (" + r.table.rows.length + " rows): the numbers of the chart";
    const head = el("tr");
    for (const c of r.table.columns) {
      head.appendChild(el("th", c.label, { scope: "col", class: numeric(c) ? "num" : "" }));
    }
    $("report-head").replaceChildren(head);
    const body = $("report-body");
    body.replaceChildren();
    for (const row of r.table.rows) {
      const tr = el("tr");
      row.forEach((v, i) => {
        const c = r.table.columns[i];
        const cell = i === r.chart.x ? el("th", String(v), { scope: "row" }) : el("td", String(v));
        if (numeric(c)) cell.className = "num";
        tr.appendChild(cell);
      });
      body.appendChild(tr);
    }
    $("report-empty").hidden = r.table.rows.length > 0;
  }

  function numeric(c) {
    return c.unit === "count" || c.unit === "money" || c.unit === "minutes";
  }

  function drawChart(r) {
    if (plot) {
      plot.destroy();
      plot = null;
    }
    const box = $("report-chart");
    box.replaceChildren();
    box.dataset.drawn = "0";
    box.setAttribute("aria-label", "Chart: " + r.title + ". The same numbers are in the table below.");
    const rows = r.table.rows;
    const xcol = r.table.columns[r.chart.x];
    if (rows.length === 0) return;
    let xs;
    let axisX = {};
    const scales = {};
    if (xcol.unit === "date") {
      xs = rows.map((row) => Date.parse(row[r.chart.x] + "T00:00:00Z") / 1000);
      scales.x = { time: true };
    } else if (xcol.unit === "hour") {
      xs = rows.map((row) => Number(row[r.chart.x]));
      scales.x = { time: false, range: [-0.5, 23.5] };
    } else {
      // Categories: 0..n-1, labelled by the row's first cell.
      xs = rows.map((_, i) => i);
      scales.x = { time: false, range: [-0.5, rows.length - 0.5] };
      axisX = {
        splits: () => xs,
        values: (_, splits) => splits.map((i) => (rows[i] ? String(rows[i][r.chart.x]) : "")),
        rotate: rows.length > 8 ? -45 : 0,
        size: rows.length > 8 ? 110 : 40,
      };
    }
    const data = [xs];
    const series = [{ label: xcol.label }];
    const bars = r.chart.kind === "bars";
    const n = r.chart.series.length;
    r.chart.series.forEach((ci, k) => {
      const col = r.table.columns[ci];
      data.push(rows.map((row) => Number(row[ci])));
      const color = COLORS[k % COLORS.length];
      const s = { label: col.label, stroke: color, width: bars ? 1 : 2 };
      if (bars) {
        // Several series share a slot: each bar narrower, drawn over the others.
        s.fill = color + (n > 1 ? "80" : "c0");
        s.paths = uPlot.paths.bars({ size: [0.9 - 0.2 * k, 60] });
        s.points = { show: false };
      }
      series.push(s);
    });
    const width = chartWidth(box);
    const opts = {
      width,
      height: 320,
      scales,
      series,
      axes: [Object.assign({ stroke: "#1d2330" }, axisX), { stroke: "#1d2330" }],
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      hooks: {
        draw: [() => {
          box.dataset.drawn = "1";
          box.dataset.report = r.name;
          box.dataset.points = String(rows.length * n);
        }],
      },
    };
    plot = new uPlot(opts, data, box);
  }

  // "Download CSV": the gateway's CSV of this report (audited there), saved as a file.
  async function downloadCsv() {
    if (!current) return;
    const got = await Api.download("/reports/" + encodeURIComponent(current.name) + ".csv?" + current.query);
    const text = await got.blob.text();
    Reports.lastCsv = { name: got.name, text };
    const url = URL.createObjectURL(got.blob);
    const a = el("a", null, { href: url, download: got.name });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    const lines = text.split("\n").filter((l) => l.length > 0).length - 1;
    $("report-csv-status").textContent = "Saved " + got.name + " (" + lines + " rows).";
  }

  function clear() {
    if (plot) {
      plot.destroy();
      plot = null;
    }
    current = null;
    facilitiesFor = null;
    catalog = null;
    Reports.lastCsv = null;
    for (const id of ["report-head", "report-body", "report-chart", "report-summary", "report-facility"]) {
      $(id).replaceChildren();
    }
    $("report-output").hidden = true;
  }

  // The chart's width in its box (which follows the window): 320 to 1100 px.
  function chartWidth(box) {
    return Math.max(320, Math.min(1100, box.clientWidth || 900));
  }

  function init() {
    // A narrower (or wider) window redraws the chart at the box's new width.
    new ResizeObserver(() => {
      const w = chartWidth($("report-chart"));
      if (plot && plot.width !== w) plot.setSize({ width: w, height: plot.height });
    }).observe($("report-chart"));
    $("report-form").addEventListener("submit", onSubmit);
    $("report-name").addEventListener("change", updateExtras);
    $("report-csv").addEventListener("click", () => guarded(downloadCsv));
  }

  return { route, init, clear, lastCsv: null };
})();
