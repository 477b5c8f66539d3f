// The Compression dashboard of one run: the verdict and progress, the layers x
// candidate-ratios score table (filling in while the sweep runs), then the
// chosen ratio per layer, the scores against the ratio and the cost per layer.
//
//   await renderCompression(root, tables, Plotly)

import { dataTable, h, section } from "../common/dom.js";
import { plot } from "../common/plot.js";
import { costSpec, ratioSpec, scoreCurvesSpec } from "./compression_charts.js";
import {
  chosenLayers, formatCount, formatScore, ratioLabel, scoreRows, sweepProgress, verdict,
} from "./compression_data.js";

const SCHEMES = {
  spatial_svd: "spatial SVD",
  weight_svd: "weight SVD",
  channel_pruning: "channel pruning",
};

function scoreTable(scores, selection) {
  const { rows, waiting } = scoreRows(scores, selection);
  const head = h("tr", {}, h("th", { scope: "col" }, "layer"), h("th", { scope: "col", class: "qa-num" },
    scores.cost_metric === "mac" ? "MACs" : "params"),
  scores.candidates.map((ratio) => h("th", { scope: "col", class: "qa-num" }, ratioLabel(ratio))));
  const body = rows.map((row) => h("tr", { "data-layer": row.layer },
    h("td", { title: row.class }, row.layer),
    h("td", { class: "qa-num" }, formatCount(scores.cost_metric === "mac" ? row.macs : row.params)),
    row.cells.map((cell) => h("td", {
      class: `qa-num cmp-cell cmp-${cell.state}`,
      title: cell.setting === null ? "no candidate: this ratio saves nothing on this layer"
        : `${scores.scheme === "channel_pruning" ? "channels kept" : "rank"} ${cell.setting}`,
    }, cell.state === "none" ? "—" : cell.state === "pending" ? "…" : formatScore(cell.score)))));
  const table = h("div", { class: "qa-table-wrap" },
    h("table", { class: "qa-table cmp-scores" }, h("thead", {}, head), h("tbody", {}, body)));
  const more = waiting ? h("p", { class: "qa-thresholds" },
    `${waiting} more layer${waiting > 1 ? "s" : ""} waiting to be evaluated.`) : null;
  return [table, more];
}

export async function renderCompression(root, tables, Plotly) {
  const scores = tables.eval_scores;
  const selection = tables.selection || null;
  root.classList.add("qa-root");
  root.replaceChildren();
  if (!scores) {
    root.append(h("p", { class: "qa-note qa-note-warning" }, "This run has no score table."));
    return;
  }
  const facts = [
    SCHEMES[scores.scheme] || scores.scheme,
    `target ${ratioLabel(scores.target_comp_ratio)} of the ${scores.cost_metric === "mac" ? "MACs" : "parameters"}`,
    `${scores.rows.length} eligible layers × ${scores.candidates.length} ratios`,
    `score before ${formatScore(scores.score_before)}`,
  ];
  if (scores.evaluations_reused) {
    facts.push(`${scores.evaluations_reused} scores reused from the score file`);
  }
  const header = h("header", { class: "qa-header" },
    h("h1", {}, "Compression", h("span", { class: "qa-model" }, scores.model)),
    h("p", { class: "qa-facts" }, facts.join(" · ")),
    h("p", { class: "qa-verdict cmp-verdict" }, verdict(scores, selection)));
  const progress = sweepProgress(scores);
  if (progress) {
    header.append(h("p", { class: "qa-note qa-note-info qa-progress", role: "status" }, progress,
      " — the table fills in as evaluations finish."));
  }
  root.append(header);

  const pending = [];
  if (selection && chosenLayers(selection).length) {
    const ratios = h("div", { class: "qa-chart cmp-ratio-chart" });
    root.append(section("Chosen ratios", ratios));
    pending.push(plot(Plotly, ratios, ratioSpec(selection)));
  }
  root.append(section("Evaluation scores: each layer compressed alone at each ratio",
    h("p", { class: "qa-thresholds" }, "Ratio = fraction of the layer's cost kept. " +
      "Highlighted: the ratio chosen; — : that ratio saves nothing on the layer."),
    ...scoreTable(scores, selection)));
  if (scores.rows.some((r) => r.scores.some((s) => s !== null))) {
    const curves = h("div", { class: "qa-chart" });
    root.append(section("Score against ratio", curves));
    pending.push(plot(Plotly, curves, scoreCurvesSpec(scores)));
  }
  if (selection) {
    const costs = h("div", { class: "qa-chart" });
    root.append(section("Cost per layer", costs,
      dataTable([
        { key: "layer", label: "layer" },
        { key: "ratio", label: "ratio", numeric: true, format: (v) => ratioLabel(v) },
        { key: "setting", label: "rank / channels", numeric: true, format: (v) => v ?? "" },
        { key: "macs_before", label: "MACs before", numeric: true, format: formatCount },
        { key: "macs_after", label: "MACs after", numeric: true, format: formatCount },
        { key: "params_before", label: "params before", numeric: true, format: formatCount },
        { key: "params_after", label: "params after", numeric: true, format: formatCount },
      ], selection.rows)));
    pending.push(plot(Plotly, costs, costSpec(selection)));
  }
  if (Object.keys(scores.ineligible || {}).length) {
    root.append(section("Layers not compressed by this scheme", dataTable(
      [{ key: "layer", label: "layer" }, { key: "reason", label: "why" }],
      Object.entries(scores.ineligible).map(([layer, reason]) => ({ layer, reason })))));
  }
  await Promise.all(pending);
}
