// The QuantAnalyzer views over scores and per-layer errors: sensitivity to
// weight and activation quantization, per-layer quantizer enablement, SQNR and
// MSE. Each `build*(panel, tables, Plotly)` fills its panel and returns the
// view's handle ({} here: these views have no per-layer focus).

import { chartBox, dataTable, h, note } from "../common/dom.js";
import { formatDb, formatNumber, isNumber } from "../common/format.js";
import { COLORS, plot } from "../common/plot.js";
import { mseSpec, perLayerSpec, sensitivitySpec, sqnrSpec, stepSpec } from "./qa_charts.js";
import { sensitivityVerdict } from "./qa_data.js";
import { incomplete, missing } from "./qa_view_notes.js";

export function buildSensitivity(panel, tables, Plotly) {
  const table = tables.sensitivity;
  panel.append(h("h2", {}, "Sensitivity to weight and activation quantization"));
  if (!table) {
    return missing(panel, "The sensitivity analysis did not run (the analysis stopped before it).");
  }
  panel.append(h("p", { class: "qa-verdict" }, sensitivityVerdict(table)));
  const chart = chartBox();
  panel.append(chart);
  plot(Plotly, chart, sensitivitySpec(table));
  panel.append(dataTable(
    [
      { key: "label", label: "model" },
      { key: "what", label: "quantized" },
      { key: "score", label: "eval score", numeric: true, format: (v) => formatNumber(v, 6) },
    ],
    [
      { label: table.labels.fp32, what: "nothing (batch norms folded)", score: table.fp32 },
      { label: table.labels.weights_only, what: "weights only", score: table.weights_only },
      { label: table.labels.activations_only, what: "activations only", score: table.activations_only },
      ...(table.labels.fully_quantized
        ? [{ label: table.labels.fully_quantized, what: "weights and activations", score: table.fully_quantized }]
        : []),
    ],
  ));
  return {};
}

export function buildPerLayer(panel, tables, Plotly) {
  const enabled = tables.per_layer_quant_enabled;
  const disabled = tables.per_layer_quant_disabled;
  const total = (tables.summary && tables.summary.layers || []).length;
  panel.append(h("h2", {}, "Per-layer quantizer enablement"));
  panel.append(h("p", { class: "qa-explain" },
    "Left: every quantizer off but one layer's. Right: every quantizer on but one layer's. ",
    "A layer whose quantization alone drops the score, and whose float version restores it, is the culprit."));
  if (!enabled && !disabled) {
    return missing(panel, "The per-layer analyses did not run (the analysis stopped before them).");
  }
  // Both cells exist before either chart is drawn, so each is drawn at its final width.
  const cells = [h("div", { class: "qa-cell" }), h("div", { class: "qa-cell" })];
  panel.append(h("div", { class: "qa-two" }, cells));
  for (const [cell, table, title, color] of [
    [cells[0], enabled, "Only this layer quantized", COLORS.enabled],
    [cells[1], disabled, "All layers but this one quantized", COLORS.disabled],
  ]) {
    if (!table) {
      cell.append(note(`${title}: did not run.`, "warning"));
      continue;
    }
    const warning = incomplete(table, total);
    if (warning) {
      cell.append(warning);
    }
    const chart = chartBox();
    cell.append(chart);
    plot(Plotly, chart, perLayerSpec(table, title, color));
  }
  const merged = new Map();
  for (const r of (enabled ? enabled.rows : [])) {
    merged.set(r.layer, { layer: r.layer, class: r.class, enabled: r.score });
  }
  for (const r of (disabled ? disabled.rows : [])) {
    const entry = merged.get(r.layer) || { layer: r.layer, class: r.class };
    entry.disabled = r.score;
    merged.set(r.layer, entry);
  }
  panel.append(dataTable(
    [
      { key: "layer", label: "layer" },
      { key: "class", label: "class" },
      { key: "enabled", label: "only this layer quantized", numeric: true, format: (v) => formatNumber(v, 5) },
      { key: "disabled", label: "this layer in float", numeric: true, format: (v) => formatNumber(v, 5) },
    ],
    [...merged.values()],
  ));
  return {};
}

export function buildSqnr(panel, tables, Plotly) {
  const table = tables.per_layer_sqnr;
  panel.append(h("h2", {}, "Per-layer SQNR"));
  if (!table) {
    return missing(panel, "The SQNR analysis did not run.");
  }
  panel.append(h("p", { class: "qa-explain" },
    `SQNR = 10·log10(Σ float² / Σ (float − quantized)²) over ${table.samples} samples of the ${table.data}, ` +
    "one pass per batch. Accumulated: the whole model quantized, so error carries downstream. " +
    "Isolated: only that layer quantized, fed the float input. Higher is better; about 6 dB per bit. " +
    `Bit-exact outputs show as ${table.max_sqnr_db} dB in the table and are left out of the chart.`));
  const chart = chartBox();
  panel.append(chart);
  plot(Plotly, chart, sqnrSpec(table));
  if (table.rows.some((row) => isNumber(row.accumulated_step_db))) {
    const steps = chartBox();
    panel.append(steps);
    plot(Plotly, steps, stepSpec(table));
  }
  panel.append(dataTable(
    [
      { key: "layer", label: "layer" },
      { key: "class", label: "class" },
      { key: "sqnr_accumulated_db", label: "accumulated", numeric: true, format: formatDb },
      { key: "sqnr_isolated_db", label: "isolated", numeric: true, format: formatDb },
      { key: "accumulated_step_db", label: "drop here", numeric: true, format: formatDb },
      { key: "mse_accumulated", label: "MSE accumulated", numeric: true, format: (v) => formatNumber(v, 3) },
      { key: "mse_isolated", label: "MSE isolated", numeric: true, format: (v) => formatNumber(v, 3) },
      { key: "cosine_accumulated", label: "cosine", numeric: true, format: (v) => (isNumber(v) ? v.toFixed(5) : "n/a") },
    ],
    table.rows,
  ));
  return {};
}

export function buildMse(panel, tables, Plotly) {
  const table = tables.per_layer_mse_loss;
  panel.append(h("h2", {}, "Per-layer MSE loss"));
  if (!table) {
    return missing(panel,
      "The MSE analysis did not run: call enable_per_layer_mse_loss(data, num_batches) before analyze().");
  }
  panel.append(h("p", { class: "qa-explain" },
    `Mean squared error between each layer's FP32 output and its output in the quantized model, ` +
    `${table.normalization}, over ${table.samples} samples (AIMET divides by the batch size twice). ` +
    "MSE scales with each output's magnitude: use SQNR to compare layers."));
  const chart = chartBox();
  panel.append(chart);
  plot(Plotly, chart, mseSpec(table));
  return {};
}
