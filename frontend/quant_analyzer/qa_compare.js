// Two or more runs side by side (PTQ runs, QuantAnalyzer runs, or both):
// what each costs and where, layer by layer, one got better or worse.
//
//   renderComparison(root, [{ name, tables }], Plotly)
//
// `tables` are a run's payload tables after normalizeTables (qa_data.js).

import { dataTable, h } from "../common/dom.js";
import { formatBytes, formatDb, formatNumber, isNumber } from "../common/format.js";
import { plot } from "../common/plot.js";
import { layerRows, runKind } from "./qa_data.js";
import { placeMixedPrecision } from "./qa_mixed_precision.js";

const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d"];

// Per run: its layer rows by name, and the union of layer names in graph order.
export function compareRows(entries) {
  const order = [];
  const seen = new Set();
  const perRun = entries.map((entry) => {
    const rows = new Map();
    for (const row of layerRows(entry.tables)) {
      rows.set(row.layer, row);
      if (!seen.has(row.layer)) {
        seen.add(row.layer);
        order.push(row.layer);
      }
    }
    return rows;
  });
  return { order, perRun };
}

function summaryRow(entry) {
  const { tables } = entry;
  const rows = layerRows(tables);
  const isolated = rows.map((r) => r.sqnr_isolated_db).filter(isNumber);
  const accumulated = rows.map((r) => r.sqnr_accumulated_db).filter(isNumber);
  const sensitivity = tables.sensitivity || {};
  const lt = tables.layer_table;
  return {
    run: entry.name,
    kind: runKind(tables),
    rounding: lt ? (lt.adaround ? "AdaRound" : "nearest") : null,
    quantized: rows.filter((r) => r.quantized).length,
    flagged: rows.filter((r) => r.severity > 0).length,
    memory_before: lt ? lt.memory_before : null,
    memory_after: lt ? lt.memory_after : null,
    min_isolated: isolated.length ? Math.min(...isolated) : null,
    mean_isolated: isolated.length ? isolated.reduce((a, b) => a + b, 0) / isolated.length : null,
    output_sqnr: accumulated.length ? accumulated[accumulated.length - 1] : null,
    fp32: sensitivity.fp32,
    weights_only: sensitivity.weights_only,
    activations_only: sensitivity.activations_only,
    fully_quantized: sensitivity.fully_quantized,
  };
}

function layout(title, yTitle, extra = {}) {
  return {
    title: { text: title, x: 0, xanchor: "left", font: { size: 15 } },
    margin: { l: 70, r: 20, t: 60 + 22 * Math.ceil((extra.legendRows || 1)), b: 40 },
    height: extra.height || 400,
    barmode: "group",
    hovermode: "closest",
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
    xaxis: { type: "category", tickangle: -50, automargin: true },
    yaxis: { title: { text: yTitle }, automargin: true, zeroline: false },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
  };
}

export function renderComparison(root, entries, Plotly) {
  // a recommended run (it holds the search / recommendation tables) is compared
  // against the others: last, so the Δ columns read "recommended − baseline"
  const recommended = (e) => Boolean(e.tables.mixed_precision_search || e.tables.recommendation);
  entries = [...entries.filter((e) => !recommended(e)), ...entries.filter(recommended)];
  root.classList.add("qa-root");
  root.replaceChildren();
  root.append(h("header", { class: "qa-header" },
    h("h1", {}, "Comparing ", String(entries.length), " runs"),
    h("p", { class: "qa-facts" }, entries.map((e) => `${e.name} (${runKind(e.tables)})`).join(" · "))));

  const summaries = entries.map(summaryRow);
  const section = (title, ...children) => h("section", { class: "qa-compare-section" }, h("h2", {}, title), ...children);
  const runColumns = [
      { key: "run", label: "run" },
      { key: "kind", label: "kind" },
      { key: "rounding", label: "weight rounding" },
      { key: "quantized", label: "quantized layers", numeric: true },
      { key: "flagged", label: "flagged layers", numeric: true },
      { key: "memory_before", label: "memory FP32", numeric: true, format: formatBytes },
      { key: "memory_after", label: "memory quantized", numeric: true, format: formatBytes },
      { key: "min_isolated", label: "worst isolated SQNR", numeric: true, format: formatDb },
      { key: "mean_isolated", label: "mean isolated SQNR", numeric: true, format: formatDb },
      { key: "output_sqnr", label: "output SQNR", numeric: true, format: formatDb },
      { key: "fp32", label: "FP32 score", numeric: true, format: (v) => formatNumber(v, 5) },
      { key: "weights_only", label: "weights-only score", numeric: true, format: (v) => formatNumber(v, 5) },
      { key: "activations_only", label: "activations-only score", numeric: true, format: (v) => formatNumber(v, 5) },
      { key: "fully_quantized", label: "fully quantized score", numeric: true, format: (v) => formatNumber(v, 5) },
    // a column no run has a value for is left out
    ].filter((c) => summaries.some((s) => s[c.key] !== null && s[c.key] !== undefined));
  root.append(section("Runs",
    h("p", { class: "qa-explain" },
      "Memory: weights plus activations at batch 1 (PTQ runs). SQNR in dB, higher is better, " +
      "about 6 dB per bit; output SQNR is the accumulated SQNR of the last layer."),
    dataTable(runColumns, summaries)));
  for (const entry of entries) {
    placeMixedPrecision(entry.tables, Plotly, (sections) => {
      sections.forEach((element) => element.querySelector("h2").append(` — ${entry.name}`));
      root.append(...sections);
    });
  }

  const withSensitivity = entries.filter((e) => e.tables.sensitivity);
  if (withSensitivity.length) {
    const chart = h("div", { class: "qa-chart" });
    root.append(section("Sensitivity", chart));
    const keys = ["fp32", "weights_only", "activations_only", "fully_quantized"];
    plot(Plotly, chart, {
      data: withSensitivity.map((e, i) => ({
        type: "bar", name: e.name,
        x: keys.map((k) => e.tables.sensitivity.labels[k] || k),
        y: keys.map((k) => e.tables.sensitivity[k]),
        marker: { color: PALETTE[i % PALETTE.length] },
        hovertemplate: `${e.name}<br>%{x}: %{y:.5g}<extra></extra>`,
      })),
      layout: layout("Eval score per run: FP32, weights-only, activations-only, fully quantized", "eval score",
        { height: 360, legendRows: 1 }),
    });
  }

  const { order, perRun } = compareRows(entries);
  const sqnrChart = h("div", { class: "qa-chart" });
  root.append(section("SQNR along the network",
    h("p", { class: "qa-explain" },
      "Lines: accumulated SQNR (whole model quantized). Bars: isolated SQNR (only that layer quantized). " +
      "A layer where one run's line drops below another's is where that run loses."),
    sqnrChart));
  const traces = [];
  entries.forEach((entry, i) => {
    const color = PALETTE[i % PALETTE.length];
    const rows = perRun[i];
    const value = (layer, key) => {
      const r = rows.get(layer);
      return r && isNumber(r[key]) && r[key] < 200 ? r[key] : null;
    };
    traces.push({
      type: "bar", name: `${entry.name}: isolated`, x: order,
      y: order.map((l) => value(l, "sqnr_isolated_db")),
      marker: { color, opacity: 0.45 },
      hovertemplate: `${entry.name}<br>%{x}<br>isolated %{y:.2f} dB<extra></extra>`,
    });
    traces.push({
      type: "scatter", mode: "lines+markers", name: `${entry.name}: accumulated`, x: order,
      y: order.map((l) => value(l, "sqnr_accumulated_db")),
      line: { color }, marker: { size: 5 },
      hovertemplate: `${entry.name}<br>%{x}<br>accumulated %{y:.2f} dB<extra></extra>`,
    });
  });
  plot(Plotly, sqnrChart, { data: traces, layout: layout("Per-layer SQNR, every run", "SQNR (dB)", { height: 460, legendRows: entries.length }) });

  const first = perRun[0];
  const last = perRun[perRun.length - 1];
  const rows = order.map((layer) => {
    const row = { layer };
    entries.forEach((entry, i) => {
      const r = perRun[i].get(layer) || {};
      row[`iso_${i}`] = r.sqnr_isolated_db;
      row[`acc_${i}`] = r.sqnr_accumulated_db;
      row[`mem_${i}`] = r.memory_after;
      row[`bits_${i}`] = r.weight_bits ?? null;
    });
    const a = first.get(layer);
    const b = last.get(layer);
    row.delta_acc = a && b && isNumber(a.sqnr_accumulated_db) && isNumber(b.sqnr_accumulated_db)
      ? b.sqnr_accumulated_db - a.sqnr_accumulated_db : null;
    row.delta_mem = a && b && isNumber(a.memory_after) && isNumber(b.memory_after)
      ? b.memory_after - a.memory_after : null;
    return row;
  });
  const columns = [{ key: "layer", label: "layer" }];
  entries.forEach((entry, i) => {
    if (rows.some((r) => isNumber(r[`bits_${i}`]))) {
      columns.push({ key: `bits_${i}`, label: `${entry.name}: weight bits`, numeric: true });
    }
    columns.push({ key: `iso_${i}`, label: `${entry.name}: isolated`, numeric: true, format: formatDb });
    columns.push({ key: `acc_${i}`, label: `${entry.name}: accumulated`, numeric: true, format: formatDb });
    if (rows.some((r) => isNumber(r[`mem_${i}`]))) {
      columns.push({ key: `mem_${i}`, label: `${entry.name}: memory`, numeric: true, format: formatBytes });
    }
  });
  const lastName = entries[entries.length - 1].name;
  const firstName = entries[0].name;
  columns.push({
    key: "delta_acc", label: `Δ accumulated (${lastName} − ${firstName})`, numeric: true,
    format: (v) => (isNumber(v)
      ? h("span", { class: v > 0.05 ? "qa-better" : v < -0.05 ? "qa-worse" : "" }, `${v > 0 ? "+" : ""}${v.toFixed(2)} dB`)
      : "n/a"),
  });
  if (rows.some((r) => isNumber(r.delta_mem))) {
    columns.push({
      key: "delta_mem", label: "Δ memory", numeric: true,
      format: (v) => (isNumber(v) ? `${v > 0 ? "+" : ""}${formatBytes(v)}` : "n/a"),
    });
  }
  const better = rows.filter((r) => isNumber(r.delta_acc) && r.delta_acc > 0.05).length;
  const worse = rows.filter((r) => isNumber(r.delta_acc) && r.delta_acc < -0.05).length;
  const rebitted = rows.filter((r) => isNumber(r.bits_0) && isNumber(r[`bits_${entries.length - 1}`]) &&
    r.bits_0 !== r[`bits_${entries.length - 1}`]).length;
  const memory = memoryDelta(summaries[0], summaries[summaries.length - 1]);
  root.append(section("Layer by layer",
    h("p", { class: "qa-explain qa-compare-verdict" },
      `${lastName} vs ${firstName}: accumulated SQNR better at ${better} layers, worse at ${worse} ` +
      "(by more than 0.05 dB)" + (rebitted ? `; weight bits changed at ${rebitted} layers` : "") +
      (memory ? `; memory ${memory}` : "") + ". Sort by the Δ column to see where."),
    dataTable(columns, rows)));
  return { order };
}

// "+1.2 KiB (+4.0%)" from the first run's quantized memory to the last's, or null.
function memoryDelta(first, last) {
  if (!isNumber(first.memory_after) || !isNumber(last.memory_after) || first.memory_after <= 0) {
    return null;
  }
  const delta = last.memory_after - first.memory_after;
  const sign = delta >= 0 ? "+" : "−";
  return `${sign}${formatBytes(Math.abs(delta))} (${sign}${(100 * Math.abs(delta) / first.memory_after).toFixed(1)}%)`;
}
