// The QuantAnalyzer views over tensors and their channels: encoding min/max
// ranges, statistics histograms and weight SQNR. Each `build*(panel, tables,
// Plotly, context)` fills its panel, fetches a layer's per-channel fields
// through `context.loadDetail(kind, row)`, and returns `{ focus(layer) }`.

import { chartBox, h, select } from "../common/dom.js";
import { weightLabel } from "../common/format.js";
import { plot } from "../common/plot.js";
import {
  activationRangesSpec,
  channelHistogram,
  channelRangesSpec,
  channelSqnrSpec,
  histogramSpec,
  weightRangesSpec,
  weightSqnrSpec,
} from "./qa_charts.js";
import { quantizedHistogram } from "./qa_data.js";
import { missing, showFailure } from "./qa_view_notes.js";

export function buildRanges(panel, tables, Plotly, context) {
  const table = tables.min_max_ranges;
  panel.append(h("h2", {}, "Encoding min/max ranges"));
  if (!table) {
    return missing(panel, "The min/max analysis did not run.");
  }
  panel.append(h("p", { class: "qa-explain" },
    "Bars: the encoding's [min, max] (the grid's ends). Ticks: the values observed in calibration; " +
    "a tick beyond a bar's end means clipping."));
  if (table.activations.length) {
    const chart = chartBox();
    panel.append(chart);
    plot(Plotly, chart, activationRangesSpec(table.activations));
  }
  let chooser = null;
  if (table.weights.length) {
    const chart = chartBox();
    panel.append(chart);
    plot(Plotly, chart, weightRangesSpec(table.weights));
    const channels = chartBox();
    const drawChannels = (index) => context.loadDetail("min_max_ranges", table.weights[index])
      .then((row) => plot(Plotly, channels, channelRangesSpec(row)))
      .catch((error) => showFailure(channels, error));
    chooser = select(
      table.weights.map((r, i) => ({ value: String(i), label: weightLabel(r) })),
      (value) => drawChannels(Number(value)),
      "weight tensor",
    );
    panel.append(h("div", { class: "qa-controls" }, h("label", {}, "Channels of ", chooser)), channels);
    drawChannels(0);
  }
  return {
    focus(layer) {
      const index = table.weights.findIndex((r) => r.layer === layer);
      if (chooser && index >= 0) {
        chooser.value = String(index);
        chooser.dispatchEvent(new Event("change"));
      }
    },
  };
}

export function buildHistograms(panel, tables, Plotly, context) {
  const table = tables.histograms;
  panel.append(h("h2", {}, "Statistics histograms"));
  if (!table) {
    return missing(panel, "The histogram analysis did not run.");
  }
  panel.append(h("p", { class: "qa-explain" },
    "The values each quantizer saw (activations: over the calibration data; weights: the kernel), " +
    "float (bars) and quantized (the same values rounded to the encoding's grid, line), " +
    "with the encoding's min and max. Mass outside the lines is clipped; a grid much wider than the mass " +
    "wastes levels."));
  const entries = [
    ...table.activations.map((row) => ({ kind: "activation", row, label: `${row.layer} (output)` })),
    ...table.weights.map((row) => ({ kind: "weight", row, label: `${weightLabel(row)} (weights)` })),
  ];
  if (!entries.length) {
    return missing(panel, "No quantizer has a histogram.");
  }
  const whole = chartBox();
  const perChannel = chartBox();
  const channelInput = h("input", { type: "number", min: 0, value: 0, step: 1, "aria-label": "channel" });
  const channelLabel = h("label", { class: "qa-channel" }, "channel ", channelInput);
  const logBox = h("input", { type: "checkbox", "aria-label": "log scale" });
  let current = 0;
  const chooser = select(entries.map((e, i) => ({ value: String(i), label: e.label })), (value) => {
    current = Number(value);
    channelInput.value = 0;
    draw();
  }, "tensor");
  channelInput.addEventListener("change", () => drawChannel());
  logBox.addEventListener("change", () => draw());
  panel.append(
    h("div", { class: "qa-controls" },
      h("label", {}, "Tensor ", chooser), channelLabel, h("label", {}, logBox, " log scale")),
    whole, perChannel,
  );

  function draw() {
    const entry = entries[current];
    const title = entry.kind === "activation"
      ? `${entry.row.layer}: output values in calibration`
      : `${weightLabel(entry.row)}: all kernel values`;
    const bitwidth = entry.row.bitwidth ?? bitsOf(entry);
    plot(Plotly, whole, histogramSpec(entry.row, title, {
      log: logBox.checked, quantized: quantizedHistogram(entry.row, bitwidth),
    }));
    const channels = entry.kind === "weight" ? (entry.row.channel_count ?? weightChannels(entry.row)) : 0;
    channelLabel.hidden = channels === 0;
    perChannel.hidden = channels === 0;
    if (channels) {
      channelInput.max = channels - 1;
      drawChannel();
    } else {
      Plotly.purge(perChannel);
    }
  }

  function bitsOf(entry) {
    const ranges = tables.min_max_ranges;
    const list = ranges ? (entry.kind === "activation" ? ranges.activations : ranges.weights) : [];
    const match = list.find((r) => r.layer === entry.row.layer && (entry.kind === "activation" || r.kernel === entry.row.kernel));
    return match ? match.bitwidth : null;
  }

  function weightChannels(row) {
    const weights = tables.weight_sqnr ? tables.weight_sqnr.rows : [];
    const match = weights.find((r) => r.layer === row.layer && r.kernel === row.kernel);
    return match ? match.channels : (row.channels ? row.channels.counts.length : 0);
  }

  function drawChannel() {
    const entry = entries[current];
    if (entry.kind !== "weight") {
      return;
    }
    context.loadDetail("histograms", entry.row).then((row) => {
      const count = row.channels.counts.length;
      const channel = Math.min(Math.max(0, Math.round(Number(channelInput.value) || 0)), count - 1);
      channelInput.value = channel;
      const hist = channelHistogram(row, channel);
      plot(Plotly, perChannel, histogramSpec(
        hist,
        `${weightLabel(row)}: output channel ${channel} of ${count}` +
          (row.per_channel_encoding ? " (its own encoding)" : " (per-tensor encoding)"),
        { log: logBox.checked, height: 300, quantized: quantizedHistogram(hist, bitsOf(entry)) },
      ));
    }).catch((error) => showFailure(perChannel, error));
  }

  draw();
  return {
    focus(layer) {
      let index = entries.findIndex((e) => e.row.layer === layer && e.kind === "activation");
      if (index < 0) {
        index = entries.findIndex((e) => e.row.layer === layer);
      }
      if (index >= 0) {
        chooser.value = String(index);
        chooser.dispatchEvent(new Event("change"));
      }
    },
  };
}

export function buildWeights(panel, tables, Plotly, context) {
  const table = tables.weight_sqnr;
  panel.append(h("h2", {}, "Weight SQNR"));
  if (!table) {
    return missing(panel, "The weight comparison did not run.");
  }
  if (!table.rows.length) {
    return missing(panel, "No layer has quantized weights.");
  }
  panel.append(h("p", { class: "qa-explain" },
    "SQNR of each quantized kernel against its float values, for the whole kernel and per output " +
    "channel. A channel far below the others has a range its grid does not fit."));
  const chart = chartBox();
  panel.append(chart);
  plot(Plotly, chart, weightSqnrSpec(table));
  const channels = chartBox();
  const drawChannels = (index) => context.loadDetail("weight_sqnr", table.rows[index])
    .then((row) => plot(Plotly, channels, channelSqnrSpec(row)))
    .catch((error) => showFailure(channels, error));
  const chooser = select(
    table.rows.map((r, i) => ({ value: String(i), label: weightLabel(r) })),
    (value) => drawChannels(Number(value)),
    "weight tensor",
  );
  panel.append(h("div", { class: "qa-controls" }, h("label", {}, "Channels of ", chooser)), channels);
  drawChannels(0);
  return {
    focus(layer) {
      const index = table.rows.findIndex((r) => r.layer === layer);
      if (index >= 0) {
        chooser.value = String(index);
        chooser.dispatchEvent(new Event("change"));
      }
    },
  };
}
