// Chart specifications for the QuantAnalyzer views: each function turns a
// payload table into plotly.js `{ data, layout }`. SVG trace types only (bar,
// scatter): WebGL needs a GPU. common/plot.js draws them with the shared config.

import { isNumber, weightLabel } from "../common/format.js";
import { COLORS } from "../common/plot.js";

function baseLayout(title, yTitle, options = {}) {
  const legend = options.showlegend !== false;
  return {
    title: { text: title, x: 0, xanchor: "left", y: 0.98, yanchor: "top", font: { size: 15 } },
    margin: { l: 70, r: 20, t: legend ? 72 : 45, b: 40 },
    height: (options.height || 380) + (legend ? 27 : 0),
    hovermode: "closest",
    showlegend: legend,
    legend: { orientation: "h", x: 0, xanchor: "left", y: 1.0, yanchor: "bottom" },
    xaxis: {
      type: options.xType || "category",
      tickangle: options.xType === "linear" ? 0 : -50,
      automargin: true,
      title: options.xTitle ? { text: options.xTitle } : undefined,
    },
    yaxis: {
      title: { text: yTitle },
      type: options.yType || "linear",
      automargin: true,
      zeroline: false,
    },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
  };
}

function horizontalLine(y, color, label) {
  return {
    shape: {
      type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: y, y1: y,
      line: { color, width: 1.5, dash: "dash" },
    },
    annotation: {
      xref: "paper", x: 1, xanchor: "right", yref: "y", y, yanchor: "bottom",
      text: label, showarrow: false, font: { color, size: 11 },
    },
  };
}

// `anchor`: the side of the line the label sits on ("left" puts it to the right of the line).
function verticalLine(x, color, label, anchor = "left") {
  return {
    shape: {
      type: "line", xref: "x", x0: x, x1: x, yref: "paper", y0: 0, y1: 1,
      line: { color, width: 2, dash: "dash" },
    },
    annotation: {
      // inside the plot's top edge: above it sits the legend
      xref: "x", x, yref: "paper", y: 1, yanchor: "top", xanchor: anchor,
      text: anchor === "left" ? ` ${label}` : `${label} `, showarrow: false, font: { color, size: 11 }, bgcolor: "rgba(255,255,255,0.7)",
    },
  };
}

function withLines(layout, lines) {
  layout.shapes = lines.map((l) => l.shape);
  layout.annotations = lines.map((l) => l.annotation);
  return layout;
}

// ------------------------------------------------------------------ sensitivity

export function sensitivitySpec(table) {
  const keys = ["fp32", "weights_only", "activations_only", "fully_quantized"]
    .filter((k) => isNumber(table[k]));
  const names = {
    fp32: "FP32", weights_only: "weights only", activations_only: "activations only",
    fully_quantized: "fully quantized",
  };
  const colors = {
    fp32: COLORS.fp32, weights_only: COLORS.enabled, activations_only: COLORS.disabled,
    fully_quantized: COLORS.quantized,
  };
  return {
    data: [{
      type: "bar",
      x: keys.map((k) => `${table.labels[k]} (${names[k]})`),
      y: keys.map((k) => table[k]),
      marker: { color: keys.map((k) => colors[k]) },
      text: keys.map((k) => Number(table[k].toPrecision(4)).toString()),
      textposition: "auto",
      hovertemplate: "%{x}: %{y:.5g}<extra></extra>",
    }],
    layout: sensitivityLayout(),
  };
}

function sensitivityLayout() {
  const layout = baseLayout("Eval score: FP32, weights-only, activations-only and fully quantized", "eval score", {
    showlegend: false, height: 340,
  });
  layout.xaxis.tickangle = 0;
  return layout;
}

// ------------------------------------------------------------------ per layer

export function perLayerSpec(table, title, color) {
  const layout = baseLayout(title, "eval score", { showlegend: false });
  const levels = [];
  if (isNumber(table.fp32)) {
    levels.push(horizontalLine(table.fp32, COLORS.fp32, `FP32 ${Number(table.fp32.toPrecision(4))}`));
  }
  if (isNumber(table.fully_quantized)) {
    const line = horizontalLine(table.fully_quantized, COLORS.quantized,
      `fully quantized ${Number(table.fully_quantized.toPrecision(4))}`);
    line.annotation.yanchor = "top";
    levels.push(line);
  }
  withLines(layout, levels);
  return {
    data: [{
      type: "scatter",
      mode: "lines+markers",
      x: table.rows.map((r) => r.layer),
      y: table.rows.map((r) => r.score),
      customdata: table.rows.map((r) => r.class),
      line: { color },
      marker: { size: 7 },
      hovertemplate: "%{x} (%{customdata})<br>score %{y:.5g}<extra></extra>",
    }],
    layout,
  };
}

// ------------------------------------------------------------------ SQNR / MSE

export function sqnrSpec(table) {
  const rows = table.rows;
  const x = rows.map((r) => r.layer);
  // Bit-exact outputs (at the cap) would squash the axis: they are left out of the lines.
  const drawn = (value) => (isNumber(value) && value < table.max_sqnr_db ? value : null);
  const layout = baseLayout(
    "Per-layer SQNR: accumulated (whole model quantized) and isolated (only that layer)",
    "SQNR (dB)",
  );
  return {
    data: [
      {
        type: "scatter", mode: "lines+markers", name: "accumulated (whole model quantized)", x,
        y: rows.map((r) => drawn(r.sqnr_accumulated_db)),
        line: { color: COLORS.accumulated }, marker: { size: 6 },
        hovertemplate: "%{x}<br>accumulated %{y:.2f} dB<extra></extra>",
      },
      {
        type: "bar", name: "isolated (only this layer quantized)", x,
        y: rows.map((r) => drawn(r.sqnr_isolated_db)),
        marker: { color: COLORS.isolated, opacity: 0.55 },
        hovertemplate: "%{x}<br>isolated %{y:.2f} dB<extra></extra>",
      },
    ],
    layout,
  };
}

export function stepSpec(table) {
  const rows = table.rows;
  return {
    data: [{
      type: "bar",
      x: rows.map((r) => r.layer),
      y: rows.map((r) => r.accumulated_step_db),
      marker: { color: COLORS.step },
      hovertemplate: "%{x}<br>drop %{y:.2f} dB<extra></extra>",
    }],
    layout: baseLayout(
      "Drop of the accumulated SQNR at each layer (inputs' SQNR minus the layer's)",
      "dB lost",
      { showlegend: false, height: 320 },
    ),
  };
}

export function mseSpec(table) {
  const rows = table.rows.filter((r) => isNumber(r.mse) && r.mse > 0);
  return {
    data: [{
      type: "scatter", mode: "lines+markers",
      x: rows.map((r) => r.layer), y: rows.map((r) => r.mse),
      line: { color: COLORS.mse }, marker: { size: 6 },
      hovertemplate: "%{x}<br>MSE %{y:.4g}<extra></extra>",
    }],
    layout: baseLayout("Per-layer MSE, FP32 vs quantized model (mean per element)", "MSE", {
      showlegend: false, yType: "log",
    }),
  };
}

// ------------------------------------------------------------------ ranges

function floatingBars(labels, mins, maxs, name, color, observedMin, observedMax) {
  const traces = [{
    type: "bar", name, x: labels,
    y: maxs.map((hi, i) => hi - mins[i]),
    base: mins,
    marker: { color },
    customdata: mins.map((lo, i) => [lo, maxs[i]]),
    hovertemplate: "%{x}<br>min %{customdata[0]:.4g}<br>max %{customdata[1]:.4g}<extra>encoding</extra>",
  }];
  if (observedMin && observedMax) {
    traces.push({
      type: "scatter", mode: "markers", name: "observed min/max",
      x: labels.concat(labels), y: observedMin.concat(observedMax),
      marker: { color: COLORS.observed, symbol: "line-ew-open", size: 14, line: { width: 2 } },
      hovertemplate: "%{x}<br>observed %{y:.4g}<extra></extra>",
    });
  }
  return traces;
}

export function activationRangesSpec(rows) {
  return {
    data: floatingBars(
      rows.map((r) => r.layer), rows.map((r) => r.min), rows.map((r) => r.max),
      "encoding [min, max]", COLORS.range,
      rows.map((r) => r.observed_min), rows.map((r) => r.observed_max),
    ),
    layout: baseLayout("Activation encodings: [min, max] per layer output", "value"),
  };
}

export function weightRangesSpec(rows) {
  return {
    data: floatingBars(
      rows.map(weightLabel), rows.map((r) => r.min), rows.map((r) => r.max),
      "encoding [min, max] (all channels)", COLORS.weightRange,
      rows.map((r) => r.observed_min), rows.map((r) => r.observed_max),
    ),
    layout: baseLayout("Weight encodings: [min, max] per kernel (envelope of its channels)", "value"),
  };
}

export function channelRangesSpec(row) {
  const mins = row.channel_min || [row.min];
  const maxs = row.channel_max || [row.max];
  const labels = mins.map((_, i) => i);
  const layout = baseLayout(
    `${weightLabel(row)}: encoding [min, max] of each of ${mins.length} channels`,
    "value",
    { xType: "linear", xTitle: "output channel", showlegend: false },
  );
  return {
    data: floatingBars(labels, mins, maxs, "encoding [min, max]", COLORS.weightRange),
    layout,
  };
}

// ------------------------------------------------------------------ histograms

export function histogramSpec(hist, title, options = {}) {
  const counts = hist.counts;
  const total = counts.reduce((sum, c) => sum + c, 0) || 1;
  const x = counts.map((_, i) => hist.lo + (i + 0.5) * hist.width);
  const y = counts.map((c) => c / total);
  const top = hist.lo + counts.length * hist.width;
  const lines = [];
  if (isNumber(hist.encoding_min)) {
    lines.push(verticalLine(hist.encoding_min, COLORS.encodingMin, "encoding min"));
  }
  if (isNumber(hist.encoding_max)) {
    lines.push(verticalLine(hist.encoding_max, COLORS.encodingMax, "encoding max", "right"));
  }
  const low = Math.min(hist.lo, isNumber(hist.encoding_min) ? hist.encoding_min : hist.lo);
  const high = Math.max(top, isNumber(hist.encoding_max) ? hist.encoding_max : top);
  const pad = 0.04 * (high - low || 1);
  const layout = baseLayout(title, "share of values", {
    xType: "linear", xTitle: "value", showlegend: Boolean(options.quantized), yType: options.log ? "log" : "linear",
    height: options.height || 360,
  });
  layout.xaxis.range = [low - pad, high + pad];
  layout.bargap = 0;
  withLines(layout, lines);
  const data = [{
    type: "bar", x, y, width: hist.width, name: "float",
    marker: { color: COLORS.histogram, line: { width: 0 } },
    hovertemplate: "%{x:.4g}: %{y:.3%}<extra>float</extra>",
  }];
  if (options.quantized) {
    const q = options.quantized;
    const qTotal = q.counts.reduce((sum, c) => sum + c, 0) || 1;
    data.push({
      type: "scatter", mode: "lines", name: "quantized", line: { color: COLORS.quantized, width: 1.5, shape: "hvh" },
      x: q.counts.map((_, i) => q.lo + (i + 0.5) * q.width),
      y: q.counts.map((c) => c / qTotal),
      hovertemplate: "%{x:.4g}: %{y:.3%}<extra>quantized</extra>",
    });

  }
  return { data, layout };
}

// One channel of a weight row's per-channel histograms, as a histogram spec input.
export function channelHistogram(row, channel) {
  const c = row.channels;
  return {
    lo: c.lo[channel],
    width: c.width[channel],
    counts: c.counts[channel],
    encoding_min: c.encoding_min[channel],
    encoding_max: c.encoding_max[channel],
  };
}

// ------------------------------------------------------------------ weight SQNR

export function weightSqnrSpec(table) {
  const rows = table.rows;
  return {
    data: [{
      type: "bar",
      x: rows.map(weightLabel),
      y: rows.map((r) => r.sqnr_db),
      customdata: rows.map((r) => [r.bitwidth, r.per_channel_encoding ? "per channel" : "per tensor"]),
      marker: { color: COLORS.weightSqnr },
      hovertemplate: "%{x}<br>%{y:.2f} dB<br>%{customdata[0]}-bit, %{customdata[1]}<extra></extra>",
    }],
    layout: baseLayout("Weight SQNR: quantized kernel vs float kernel", "SQNR (dB)", {
      showlegend: false,
    }),
  };
}

export function channelSqnrSpec(row) {
  const values = row.channel_sqnr_db;
  return {
    data: [{
      type: "bar",
      x: values.map((_, i) => i),
      y: values,
      marker: { color: COLORS.weightSqnr },
      hovertemplate: "channel %{x}<br>%{y:.2f} dB<extra></extra>",
    }],
    layout: baseLayout(`${weightLabel(row)}: SQNR of each of ${values.length} output channels`, "SQNR (dB)", {
      showlegend: false, xType: "linear", xTitle: "output channel", height: 320,
    }),
  };
}
