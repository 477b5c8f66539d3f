// Chart specifications for the Compression tab (plotly.js `{ data, layout }`,
// SVG traces only): the chosen ratio per layer, each layer's score against its
// ratio, and the cost before and after per layer.

import { isNumber } from "../common/format.js";
import { chosenLayers } from "./compression_data.js";

const BLUE = "#4c78a8";
const GREY = "#9d9d9d";

function layout(title, yTitle, options = {}) {
  return {
    title: { text: title, x: 0, xanchor: "left", font: { size: 15 } },
    margin: { l: 70, r: 20, t: options.legend ? 72 : 45, b: 40 },
    height: options.height || 360,
    hovermode: "closest",
    showlegend: Boolean(options.legend),
    legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom" },
    xaxis: { type: options.xType || "category", tickangle: options.xType ? 0 : -50, automargin: true,
      title: options.xTitle ? { text: options.xTitle } : undefined, range: options.xRange },
    yaxis: { title: { text: yTitle }, automargin: true, range: options.yRange, zeroline: false },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
  };
}

// One bar per compressed layer: the fraction of its cost kept.
export function ratioSpec(selection) {
  const rows = chosenLayers(selection);
  return {
    data: [{
      type: "bar", name: "chosen ratio", x: rows.map((r) => r.layer), y: rows.map((r) => r.ratio),
      marker: { color: BLUE },
      customdata: rows.map((r) => [r.setting, r.macs_before, r.macs_after]),
      hovertemplate: "%{x}<br>ratio %{y}<br>rank / channels kept %{customdata[0]}" +
        "<br>MACs %{customdata[1]:,} → %{customdata[2]:,}<extra></extra>",
    }],
    layout: layout("Chosen compression ratio per layer (fraction of its cost kept)", "ratio",
      { yRange: [0, 1] }),
  };
}

// Each layer's eval score with it alone compressed, against the ratio.
export function scoreCurvesSpec(scores) {
  const data = scores.rows.filter((row) => row.scores.some(isNumber)).map((row) => ({
    type: "scatter", mode: "lines+markers", name: row.layer,
    x: scores.candidates, y: row.scores.map((s) => (isNumber(s) ? s : null)),
    hovertemplate: `${row.layer}<br>ratio %{x}<br>score %{y:.4f}<extra></extra>`,
  }));
  const lines = isNumber(scores.score_before) ? [{
    type: "line", xref: "paper", x0: 0, x1: 1, y0: scores.score_before, y1: scores.score_before,
    line: { color: GREY, dash: "dash", width: 1.5 },
  }] : [];
  const spec = {
    data,
    layout: layout("Eval score with one layer compressed (dashed: uncompressed model)", "score",
      { xType: "linear", xTitle: "compression ratio (fraction of the layer's cost kept)",
        legend: data.length <= 12, height: 380, xRange: [0, 1] }),
  };
  spec.layout.shapes = lines;
  return spec;
}

// MACs per eligible layer before and after.
export function costSpec(selection) {
  const rows = selection.rows;
  const key = selection.cost_metric === "mac" ? "macs" : "params";
  const name = key === "macs" ? "MACs" : "parameters";
  return {
    data: [
      { type: "bar", name: "before", x: rows.map((r) => r.layer), y: rows.map((r) => r[`${key}_before`]),
        marker: { color: GREY } },
      { type: "bar", name: "after", x: rows.map((r) => r.layer), y: rows.map((r) => r[`${key}_after`]),
        marker: { color: BLUE } },
    ],
    layout: { ...layout(`${name} per layer, before and after`, name, { legend: true }), barmode: "group" },
  };
}
