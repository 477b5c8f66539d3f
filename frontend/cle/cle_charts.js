// Chart specifications of the CLE tab: each function turns a CLE table (or a
// layer's detail row) into plotly.js `{ data, layout }`. SVG traces only.

import { isNumber, weightLabel } from "../common/format.js";
import { COLORS } from "../common/plot.js";
import { channelMarks } from "./cle_data.js";

function layout(title, yTitle, options = {}) {
  return {
    title: { text: title, x: 0, xanchor: "left", y: 0.98, yanchor: "top", font: { size: 15 } },
    margin: { l: 70, r: 20, t: 75, b: 40 },
    height: options.height || 380,
    barmode: options.barmode || "group",
    hovermode: "closest",
    showlegend: options.showlegend !== false,
    legend: { orientation: "h", x: 0, xanchor: "left", y: 1.0, yanchor: "bottom" },
    xaxis: {
      type: options.xType || "category", automargin: true,
      tickangle: options.xType === "linear" ? 0 : -50,
      title: options.xTitle ? { text: options.xTitle } : undefined,
    },
    yaxis: { title: { text: yTitle }, type: options.yType || "linear", automargin: true, zeroline: false },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
  };
}

// Layers drawn in the spread chart; the table under it lists every layer.
export const SPREAD_CHART_LAYERS = 40;

// Spread score (log10 of largest / smallest live channel range) per layer, before
// and after, for the widest `SPREAD_CHART_LAYERS` layers (`ranked` is widest first).
export function spreadSpec(allRanked) {
  const ranked = allRanked.slice(0, SPREAD_CHART_LAYERS);
  const x = ranked.map((l) => l.label);
  const data = [{
    type: "bar", name: "before CLE", x, y: ranked.map((l) => l.spread_before),
    marker: { color: COLORS.before },
    hovertemplate: "%{x}<br>spread 10^%{y:.2f}<extra>before</extra>",
  }];
  if (ranked.some((l) => isNumber(l.spread_after))) {
    data.push({
      type: "bar", name: "after CLE", x, y: ranked.map((l) => l.spread_after),
      marker: { color: COLORS.after },
      hovertemplate: "%{x}<br>spread 10^%{y:.2f}<extra>after</extra>",
    });
  }
  const shown = allRanked.length > ranked.length ? `the widest ${ranked.length} of ${allRanked.length} layers` : "per layer";
  const spec = {
    data,
    layout: layout(`Channel-range spread, ${shown}, widest first (2 = 100x)`, "log10(max range / min range)"),
  };
  spec.layout.shapes = [{
    type: "line", xref: "paper", x0: 0, x1: 1, y0: 2, y1: 2,
    line: { color: COLORS.outlier, width: 1.5, dash: "dash" },
  }];
  return spec;
}

// One layer's per-channel [min, max] (floating bars) and mean, before and after.
export function channelRangesSpec(layer) {
  const data = [];
  for (const [when, stats, color] of [["before", layer.before, COLORS.before], ["after", layer.after, COLORS.after]]) {
    if (!stats || !stats.min) {
      continue;
    }
    const x = stats.min.map((_, c) => c);
    data.push({
      type: "bar", name: `[min, max] ${when} CLE`, x,
      base: stats.min, y: stats.max.map((hi, c) => hi - stats.min[c]),
      marker: { color, opacity: when === "before" ? 0.55 : 0.8 },
      customdata: stats.min.map((lo, c) => [lo, stats.max[c]]),
      hovertemplate: `channel %{x}<br>min %{customdata[0]:.4g}<br>max %{customdata[1]:.4g}<extra>${when}</extra>`,
    });
    data.push({
      type: "scatter", mode: "markers", name: `mean ${when}`, x, y: stats.mean,
      marker: { color: when === "before" ? "#555555" : "#1b3b66", size: 4, symbol: "line-ew-open" },
      hovertemplate: `channel %{x}<br>mean %{y:.4g}<extra>${when}</extra>`,
    });
  }
  return {
    data,
    layout: layout(`${layer.label}: weight range of each of ${layer.channels} output channels`, "weight value", {
      xType: "linear", xTitle: "output channel", barmode: "overlay",
    }),
  };
}

// Relative range per channel (range / smallest live range), outliers and dead channels marked.
export function relativeRangesSpec(layer) {
  const data = [];
  let fence = null;
  for (const [when, stats, color] of [["before", layer.before, COLORS.before], ["after", layer.after, COLORS.after]]) {
    if (!stats || !stats.relative_range) {
      continue;
    }
    const marks = channelMarks(stats);
    data.push({
      type: "bar", name: `relative range ${when} CLE`,
      x: stats.relative_range.map((_, c) => c), y: stats.relative_range,
      marker: {
        color: marks.map((m) => (m === "outlier" ? COLORS.outlier : color)),
        opacity: when === "before" ? 0.55 : 0.85,
      },
      hovertemplate: `channel %{x}<br>%{y:.3g}x the smallest<extra>${when}</extra>`,
    });
    const dead = marks.map((m, c) => (m === "dead" ? c : null)).filter((c) => c !== null);
    if (dead.length) {
      data.push({
        type: "scatter", mode: "markers", name: `dead channels ${when}`, x: dead, y: dead.map(() => 1),
        marker: { color: COLORS.dead, symbol: "x", size: 8 },
        hovertemplate: `channel %{x}: dead (all weights equal)<extra>${when}</extra>`,
      });
    }
    if (when === "before" && isNumber(stats.tukey_fence)) {
      fence = stats.tukey_fence;
    }
  }
  const spec = {
    data,
    layout: layout(`${layer.label}: relative range per channel (outliers in red, beyond the Tukey fence)`,
      "range / smallest live range", { xType: "linear", xTitle: "output channel", yType: "log", barmode: "overlay" }),
  };
  if (fence !== null) {
    spec.layout.shapes = [{
      type: "line", xref: "paper", x0: 0, x1: 1, y0: fence, y1: fence,
      line: { color: COLORS.outlier, width: 1.2, dash: "dot" },
    }];
    spec.layout.annotations = [{
      xref: "paper", x: 1, xanchor: "right", y: Math.log10(fence), yanchor: "bottom",
      text: `Tukey fence ${fence.toPrecision(3)}x (before CLE)`, showarrow: false,
      font: { color: COLORS.outlier, size: 11 },
    }];
  }
  return spec;
}

// Scale factors of one equalized set: one line per consecutive pair, per channel.
export function scaleFactorsSpec(set) {
  const data = (set.scale_factors || []).map((factors, i) => ({
    type: "scatter", mode: "lines+markers",
    name: `${set.members[i]} → ${set.members[i + 1]}`,
    x: factors.map((_, c) => c), y: factors, marker: { size: 4 },
    hovertemplate: "channel %{x}<br>scale %{y:.4g}<extra></extra>",
  }));
  return {
    data,
    layout: layout(`Scale factors of ${set.members.join(" → ")} (weights of the first divided, of the next multiplied)`,
      "scale factor", { xType: "linear", xTitle: "channel", yType: "log", height: 340 }),
  };
}

export function weightSqnrSpec(rows) {
  return {
    data: [{
      type: "bar", x: rows.map(weightLabel), y: rows.map((r) => r.sqnr_db),
      customdata: rows.map((r) => [r.bitwidth, r.per_channel ? "per channel" : "per tensor"]),
      marker: { color: COLORS.weightSqnr },
      hovertemplate: "%{x}<br>%{y:.2f} dB<br>%{customdata[0]}-bit, %{customdata[1]}<extra></extra>",
    }],
    layout: layout("Weight SQNR per kernel: quantized vs float weights", "SQNR (dB)", { showlegend: false }),
  };
}

export function channelSqnrSpec(row) {
  const values = row.channel_sqnr_db || [];
  return {
    data: [{
      type: "bar", x: values.map((_, c) => c), y: values, marker: { color: COLORS.weightSqnr },
      hovertemplate: "channel %{x}<br>%{y:.2f} dB<extra></extra>",
    }],
    layout: layout(`${weightLabel(row)}: weight SQNR of each of ${values.length} output channels`, "SQNR (dB)", {
      showlegend: false, xType: "linear", xTitle: "output channel", height: 320,
    }),
  };
}

// Float vs quantized weights on shared bins.
export function weightHistogramSpec(row) {
  const hist = row.histogram;
  const x = hist.float.map((_, i) => hist.lo + (i + 0.5) * hist.width);
  const spec = {
    data: [
      {
        type: "bar", name: "float weights", x, y: hist.float, width: hist.width,
        marker: { color: COLORS.histogram, opacity: 0.6, line: { width: 0 } },
        hovertemplate: "%{x:.4g}: %{y}<extra>float</extra>",
      },
      {
        type: "bar", name: "quantized weights", x, y: hist.quantized, width: hist.width,
        marker: { color: COLORS.quantized, opacity: 0.6, line: { width: 0 } },
        hovertemplate: "%{x:.4g}: %{y}<extra>quantized</extra>",
      },
    ],
    layout: layout(`${weightLabel(row)}: weights before vs after ${row.bitwidth}-bit quantization`, "count", {
      xType: "linear", xTitle: "weight value", barmode: "overlay", height: 340,
    }),
  };
  spec.layout.bargap = 0;
  return spec;
}
