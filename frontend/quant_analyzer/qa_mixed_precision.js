// The mixed-precision search and the QuantAnalyzer recommendation, as logged
// by mct_logger.search_mixed_precision and QuantAnalyzer.recommend in the
// recommended run ("mixed_precision_search" and "recommendation" payloads):
//
//   placeMixedPrecision(tables, Plotly, insert) -> number of sections placed
//
// `insert(sections)` puts the section elements into the page; the charts are
// drawn after that (plotly sizes a chart from its element in the page).
//
// Used by the single-run dashboard's "Mixed precision" view and by the
// comparison of the baseline and recommended runs.

import { dataTable, h } from "../common/dom.js";
import { formatBytes, formatDb, formatNumber, isNumber } from "../common/format.js";
import { plot } from "../common/plot.js";

const BITS_COLORS = { 2: "#b2182b", 3: "#d6604d", 4: "#f4a582", 6: "#92c5de", 8: "#4393c3", 16: "#2166ac" };

function bitsColor(bits) {
  return BITS_COLORS[bits] || "#888888";
}

function score(value) {
  return formatNumber(value, 5);
}

function section(title, ...children) {
  return h("section", { class: "qa-compare-section qa-mp-section" }, h("h2", {}, title), ...children);
}

function percentOf(part, whole) {
  return isNumber(part) && isNumber(whole) && whole > 0 ? ` (${(100 * part / whole).toFixed(1)}%)` : "";
}

export function searchFacts(table) {
  const facts = [];
  if (isNumber(table.budget)) {
    facts.push(`budget ${formatBytes(table.budget)}`);
  }
  if (isNumber(table.max_accuracy_drop)) {
    facts.push(`target: score ≥ ${score(table.target_score)} (FP32 ${score(table.float_score)} − ${table.max_accuracy_drop})`);
  }
  facts.push(`chosen weights ${formatBytes(table.weights_memory)}${percentOf(table.weights_memory, table.budget)}`);
  if (isNumber(table.score)) {
    facts.push(`score ${score(table.score)}` + (isNumber(table.float_score) ? ` (FP32 ${score(table.float_score)})` : ""));
  }
  const counts = {};
  for (const row of table.layers) {
    counts[row.bits] = (counts[row.bits] || 0) + 1;
  }
  facts.push(Object.keys(counts).sort((a, b) => a - b).map((b) => `${counts[b]} layers at ${b} bits`).join(", "));
  const seconds = table.seconds || {};
  facts.push(`${table.evaluations} evaluations; sensitivity ${seconds.sensitivity} s, total ${seconds.total} s`);
  return facts;
}

function searchSection(table, draws) {
  const candidates = table.bit_candidates;
  const chart = h("div", { class: "qa-chart" });
  const columns = [
    { key: "layer", label: "layer" },
    { key: "class", label: "class" },
    { key: "parameters", label: "parameters", numeric: true },
    {
      key: "bits", label: "chosen bits", numeric: true,
      format: (v) => h("span", { class: "qa-mp-bits", style: `background:${bitsColor(v)}` }, String(v)),
    },
    ...candidates.map((b, i) => ({
      key: `sqnr_${i}`, label: `isolated SQNR at ${b} bits`, numeric: true, format: formatDb,
    })),
    { key: "memory_chosen", label: "weights memory", numeric: true, format: formatBytes },
  ];
  const rows = table.layers.map((r) => {
    const row = { ...r, memory_chosen: r.memory[candidates.indexOf(r.bits)] };
    candidates.forEach((_, i) => { row[`sqnr_${i}`] = r.sqnr_db[i]; });
    return row;
  });
  const stepColumns = [
    { key: "step", label: "step", numeric: true },
    { key: "label", label: "configuration" },
    { key: "weights_memory", label: "weights memory", numeric: true, format: formatBytes },
    { key: "predicted_sqnr_db", label: "predicted output SQNR", numeric: true, format: formatDb },
    { key: "score", label: "score", numeric: true, format: score },
    { key: "chosen", label: "chosen", format: (v) => (v ? "✓ chosen" : "") },
  ];
  const section1 = section("Mixed-precision search",
    h("p", { class: "qa-facts qa-mp-facts" }, searchFacts(table).join(" · ")),
    h("p", { class: "qa-explain" },
      "Each layer's sensitivity is its isolated SQNR with its kernel at each candidate width (float input, " +
      "one pass). The choice minimises the summed relative noise power under the budget (exact knapsack); " +
      "each step below is a configuration the search built, scored with eval_callback where given."),
    chart,
    dataTable(columns, rows),
    h("h3", {}, "Search steps"),
    dataTable(stepColumns, table.steps, { rowClass: (r) => (r.chosen ? "qa-mp-chosen" : "") }));
  draws.push((Plotly) => plot(Plotly, chart, {
    data: candidates.map((b, i) => ({
      type: "bar", name: `${b}-bit`, x: table.layers.map((r) => r.layer),
      y: table.layers.map((r) => (isNumber(r.sqnr_db[i]) && r.sqnr_db[i] < 200 ? r.sqnr_db[i] : null)),
      marker: {
        color: bitsColor(b),
        line: { color: "#111", width: table.layers.map((r) => (r.bits === b ? 2 : 0)) },
      },
      hovertemplate: `%{x}<br>${b}-bit: %{y:.1f} dB<extra></extra>`,
    })),
    layout: {
      title: { text: "Isolated SQNR per candidate width (outlined: chosen)", x: 0, xanchor: "left", font: { size: 15 } },
      barmode: "group", height: 380, margin: { l: 70, r: 20, t: 70, b: 40 },
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
      xaxis: { type: "category", tickangle: -50, automargin: true },
      yaxis: { title: { text: "SQNR (dB)" }, automargin: true },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#ffffff",
    },
  }));
  return section1;
}

function recommendationSection(table) {
  const base = table.baseline || {};
  const last = table.final || {};
  const kept = table.changes.filter((c) => c.accepted).length;
  const facts = [
    `target: score ≥ ${score(table.target_score)} (FP32 ${score(table.float_score)} − ${table.max_accuracy_drop})`,
    `score ${score(base.score)} → ${score(last.score)}`,
    `memory ${formatBytes(base.memory)} → ${formatBytes(last.memory)}`,
    `${kept} of ${table.changes.length} changes kept`,
  ];
  const columns = [
    { key: "step", label: "step", numeric: true },
    { key: "change", label: "change" },
    { key: "evidence", label: "evidence" },
    { key: "score_before", label: "score before", numeric: true, format: score },
    { key: "score_after", label: "score after", numeric: true, format: score },
    {
      key: "memory_after", label: "memory after", numeric: true,
      format: (v, r) => `${formatBytes(v)} (${v - r.memory_before >= 0 ? "+" : "−"}${formatBytes(Math.abs(v - r.memory_before))})`,
    },
    { key: "accepted", label: "kept", format: (v) => (v ? "✓ kept" : "✗ rejected") },
  ];
  return section("Recommendation",
    h("p", { class: `qa-note ${table.meets_target ? "qa-note-info" : "qa-note-warning"} qa-mp-verdict` },
      table.meets_target ? "The recommended configuration meets the target." :
        "The fixes tried do not reach the target: the best found is returned."),
    h("p", { class: "qa-facts qa-mp-facts" }, facts.join(" · ")),
    dataTable(columns, table.changes, { rowClass: (r) => (r.accepted ? "qa-mp-chosen" : "") }));
}

export function placeMixedPrecision(tables, Plotly, insert) {
  const sections = [];
  const draws = [];
  if (tables.mixed_precision_search) {
    sections.push(searchSection(tables.mixed_precision_search, draws));
  }
  if (tables.recommendation) {
    sections.push(recommendationSection(tables.recommendation));
  }
  if (sections.length) {
    insert(sections);
    draws.forEach((draw) => draw(Plotly));
  }
  return sections.length;
}
