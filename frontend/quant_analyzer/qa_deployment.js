// The QuantAnalyzer tab's "Deployment" view: a LiteRT int8 export
// (info.export_litert) checked node by node against the simulation.
//
//   buildDeployment(panel, tables, Plotly, context)
//
// Output agreement first, then the facts (sizes, op counts), the three SQNR
// curves along the network (flagged nodes marked), the flagged nodes with their
// likely cause, every node's row, the float ops with why, and unmatched nodes.

import { dataTable, chartBox, h, note } from "../common/dom.js";
import { formatDb, formatNumber, isNumber } from "../common/format.js";
import { plot } from "../common/plot.js";
import { deploymentCurvesSpec } from "./qa_charts.js";
import {
  EXACT_DB, deploymentFacts, deploymentHeadline, flaggedFirst, formatParityDb, lossDb, opCountRows,
  sqnrCurves,
} from "./qa_deployment_data.js";

export function buildDeployment(panel, tables, Plotly) {
  const table = tables.deployment;
  panel.append(h("h2", {}, "Deployment: LiteRT int8"));
  if (!table) {
    panel.append(note("No LiteRT export in this run: call info.export_litert(path) after " +
      "keras_post_training_quantization with a log folder set."));
    return {};
  }
  panel.append(h("section", { class: "qa-deploy-agreement", "aria-label": "Output agreement" },
    deploymentHeadline(table).map((line) =>
      h("p", { class: "qa-suspect" }, h("strong", {}, line.node), ": ", line.text))));
  panel.append(h("p", { class: "qa-facts" }, deploymentFacts(table).join(" · ")));
  panel.append(h("p", { class: "qa-explain" },
    `${table.path}. SQNR = 10·log10(Σ a² / Σ (a − b)²) between float, the simulation and the ` +
    "LiteRT interpreter's dequantized int8 tensors, on the same samples. A node where LiteRT " +
    "loses more than 1 dB against the simulation is flagged with its likely cause. " +
    `${sqnrCurves(table).exact} node(s) are bit-exact between simulation and LiteRT ` +
    `(≥ ${EXACT_DB} dB, left out of the chart).`));
  const chart = chartBox();
  panel.append(chart);
  plot(Plotly, chart, deploymentCurvesSpec(table));
  const rows = flaggedFirst(table).map((r) => ({ ...r, loss: lossDb(r) }));
  panel.append(h("h3", {}, "Nodes, flagged first"));
  panel.append(dataTable([
    { key: "layer", label: "node" },
    { key: "op", label: "LiteRT op", format: (v, r) => (isNumber(r.op_index) ? `${v} #${r.op_index}` : v) },
    { key: "dtype", label: "dtype" },
    { key: "sqnr_float_sim_db", label: "float → sim", numeric: true, format: formatParityDb },
    { key: "sqnr_float_litert_db", label: "float → LiteRT", numeric: true, format: formatParityDb },
    { key: "sqnr_sim_litert_db", label: "sim → LiteRT", numeric: true, format: formatParityDb },
    { key: "loss", label: "LiteRT loss", numeric: true, format: formatDb },
    { key: "beyond_one_step", label: "> 1 step", numeric: true,
      format: (v) => (isNumber(v) ? `${(100 * v).toFixed(2)}%` : "n/a") },
    { key: "scale", label: "LiteRT scale / zp", numeric: true,
      format: (v, r) => `${formatNumber(v, 4)} / ${r.zero_point}` },
    { key: "cause", label: "likely cause" },
  ], rows, { rowClass: (r) => (r.flagged ? "qa-row-flag-2" : "") }));
  const counts = table.op_counts || {};
  panel.append(h("h3", {}, "Ops"));
  panel.append(dataTable([
    { key: "op", label: "int8 op" },
    { key: "count", label: "count", numeric: true },
  ], opCountRows(table)));
  const floats = counts.float_ops || [];
  panel.append(floats.length
    ? h("ul", { class: "qa-deploy-float" }, floats.map((f) => h("li", {}, h("code", {}, f.op), ": ", f.reason)))
    : h("p", { class: "qa-explain" }, "Every op runs in int8 (no float fallback)."));
  const unmatched = table.unmatched || [];
  if (unmatched.length) {
    panel.append(h("h3", {}, "Unmatched nodes"));
    panel.append(h("ul", {}, unmatched.map((u) => h("li", {}, h("code", {}, u.layer), ": ", u.reason))));
  }
  const adapted = Object.entries(table.adaptations || {});
  if (adapted.length) {
    panel.append(h("h3", {}, "Grids adapted to LiteRT"));
    panel.append(h("ul", {}, adapted.map(([layer, notes]) =>
      h("li", {}, h("code", {}, layer), ": ", notes.join("; ")))));
  }
  return {};
}
