// The CLE dashboard of one run: the verdict first, then layers ranked by
// channel-range spread, one layer's channels before and after equalization,
// the equalized sets' scale factors, high-bias folds, ReLU6 replacements, and
// weights before vs after quantization.
//
//   await renderCle(root, tables, Plotly, { loadDetail(kind, row) -> Promise(row) })
//
// The verdict and the first chart are drawn, and painted, before the long tables
// and the per-layer charts: a 600-layer model's page shows its answer first.
// The returned promise resolves once every chart is drawn.

import {
  channelRangesSpec,
  channelSqnrSpec,
  relativeRangesSpec,
  scaleFactorsSpec,
  spreadSpec,
  weightHistogramSpec,
  weightSqnrSpec,
} from "./cle_charts.js";
import { formatRatio, rankedLayers, verdict } from "./cle_data.js";
import { dataTable, h, note, section } from "../common/dom.js";
import { formatDb, formatNumber, weightLabel } from "../common/format.js";
import { plot } from "../common/plot.js";

function chart() {
  return h("div", { class: "qa-chart" });
}

function failure(element, error) {
  element.replaceChildren(note(`Could not load this layer: ${error && error.message ? error.message : error}`, "warning"));
}

function chooser(options, onChange, label) {
  const element = h("select", { "aria-label": label, onchange: () => onChange(Number(element.value)) },
    options.map((text, i) => h("option", { value: String(i) }, text)));
  return element;
}

// Lets the browser paint what is drawn so far (a frame, or 50 ms when the tab is
// hidden and frames do not come).
function painted() {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 50);
    requestAnimationFrame(() => setTimeout(() => {
      clearTimeout(timer);
      resolve();
    }, 0));
  });
}

export async function renderCle(root, tables, Plotly, options = {}) {
  const pending = [];
  const loadDetail = options.loadDetail || ((kind, row) => Promise.resolve(row));
  root.classList.add("qa-root");
  root.replaceChildren();
  const ranges = tables.weight_ranges;
  const scales = tables.scale_factors;
  const folds = tables.high_bias_fold;
  const quantization = tables.weight_quantization;
  root.append(h("header", { class: "qa-header" },
    h("h1", {}, "Cross-layer equalization"),
    h("p", { class: "qa-facts" }, ranges
      ? `${ranges.cle_applied ? "CLE applied" : `CLE ${ranges.reason || "off"}`} · ` +
        `${ranges.layers.length} weight tensors`
      : "no weight ranges logged"),
    h("p", { class: "qa-verdict cle-verdict" }, verdict(tables))));

  if (ranges && ranges.layers.length) {
    const ranked = rankedLayers(ranges);
    const spread = chart();
    const ranking = section("Layers ranked by channel-range spread",
      h("p", { class: "qa-explain" },
        "Per output channel, the range of its weights (max − min). Spread: the largest live range over the " +
        "smallest (a dead channel has all weights equal and is left out). One per-tensor grid for a layer " +
        "spread 100x leaves its narrow channels a few levels. Outliers: relative ranges beyond the Tukey " +
        "fence Q3 + 1.5 IQR."),
      spread);
    root.append(ranking);
    plot(Plotly, spread, spreadSpec(ranked)); // the first chart, before the long table
    await painted();
    ranking.append(dataTable([
        { key: "label", label: "layer" },
        { key: "layer_class", label: "class" },
        { key: "channels", label: "channels", numeric: true },
        { key: "spread_before", label: "spread before", numeric: true, format: formatRatio },
        { key: "spread_after", label: "spread after", numeric: true, format: formatRatio },
        { key: "outliers", label: "outlier channels", numeric: true },
        { key: "dead", label: "dead channels", numeric: true },
      ], ranked));

    const rangesChart = chart();
    const relativeChart = chart();
    const flagged = h("p", { class: "qa-explain" });
    const draw = (index) => loadDetail("weight_ranges", ranked[index]).then((row) => {
      const layer = { ...row, label: ranked[index].label };
      plot(Plotly, rangesChart, channelRangesSpec(layer));
      plot(Plotly, relativeChart, relativeRangesSpec(layer));
      const b = layer.before || {};
      flagged.textContent = `Outlier channels: ${(b.outlier_channels || []).join(", ") || "none"}. ` +
        `Dead channels: ${(b.dead_channels || []).join(", ") || "none"}.` +
        (layer.after ? ` After CLE: outliers ${(layer.after.outlier_channels || []).join(", ") || "none"}.` : "");
    }).catch((error) => failure(rangesChart, error));
    const pick = chooser(ranked.map((l) => `${l.label} (${formatRatio(l.spread_before)})`), draw, "weight layer");
    root.append(section("Per-channel weight ranges",
      h("div", { class: "qa-controls" }, h("label", {}, "Layer ", pick)), flagged, rangesChart, relativeChart));
    pending.push(draw(0));
  } else {
    root.append(note("No weight layer: nothing to equalize.", "warning"));
  }

  if (scales) {
    const children = [];
    if (!scales.cle_applied) {
      children.push(note("CLE was off for this run: no set was equalized. " +
        "The ranges above show what it would work on.", "info"));
    } else if (!scales.sets.length) {
      children.push(note("No pair of consecutive layers could be equalized.", "warning"));
    } else {
      children.push(h("p", { class: "qa-explain" },
        `${scales.sets.length} equalized set${scales.sets.length > 1 ? "s" : ""}, ` +
        `${scales.iterations} iteration${scales.iterations === 1 ? "" : "s"} ` +
        `(${scales.converged ? "converged" : "stopped before converging"}). ` +
        "Channel c of a layer is divided by s_c and the next layer's input channel c multiplied by it " +
        "(Nagel et al., 2019), so the float output is unchanged."));
      const scaleChart = chart();
      const draw = (i) => loadDetail("scale_factors", scales.sets[i])
        .then((set) => plot(Plotly, scaleChart, scaleFactorsSpec(set)))
        .catch((error) => failure(scaleChart, error));
      const pick = chooser(scales.sets.map((s) => s.members.join(" → ")), draw, "equalized set");
      children.push(h("div", { class: "qa-controls" }, h("label", {}, "Set ", pick)), scaleChart);
      root.append(section("Scale factors", ...children));
      pending.push(draw(0));
      children.length = 0;
    }
    if (children.length) {
      root.append(section("Scale factors", ...children));
    }
    const notEqualized = Object.entries(scales.not_equalized || {});
    if (notEqualized.length) {
      root.append(section("Not equalized", dataTable(
        [{ key: "layer", label: "layer" }, { key: "reason", label: "why" }],
        notEqualized.map(([layer, reason]) => ({ layer, reason })))));
    }
    const relu6 = scales.relu6_replaced || [];
    root.append(section("ReLU6 replaced by ReLU", relu6.length
      ? dataTable([{ key: "node", label: "layer" }, { key: "form", label: "form" }], relu6)
      : note(scales.cle_applied ? "No ReLU6 was replaced." : "CLE was off: nothing replaced.")));
  }

  if (folds) {
    const moved = folds.folds.filter((f) => f.channels_folded > 0);
    const idle = folds.folds.length - moved.length;
    root.append(section("High-bias folds",
      h("p", { class: "qa-explain" },
        "After a ReLU, the part of a channel's bias above 3 σ of its pre-activation output moves into " +
        "the next layer's bias (Nagel et al., 2019)." +
        (idle ? ` ${idle} pair${idle > 1 ? "s" : ""} checked had no channel above 3 σ: nothing moved.` : "")),
      moved.length
      ? dataTable([
        { key: "source", label: "from" },
        { key: "target", label: "into" },
        { key: "activation", label: "activation" },
        { key: "channels_folded", label: "channels", numeric: true },
        { key: "total", label: "bias moved (sum)", numeric: true, format: (v) => formatNumber(v, 4) },
      ], moved)
      : note(folds.cle_applied ? "No bias was moved." : "CLE was off: no bias folded."),
    ...(folds.skipped || []).length
      ? [h("p", { class: "qa-explain" }, "Skipped: ",
        folds.skipped.map((s) => `${[].concat(s.pair).join(" → ")} (${s.reason})`).join("; "))]
      : []));
  }

  if (quantization && quantization.rows.length) {
    const rows = quantization.rows;
    const sqnr = chart();
    const channels = chart();
    const histogram = chart();
    const draw = (index) => loadDetail("weight_quantization", rows[index]).then((row) => {
      plot(Plotly, channels, channelSqnrSpec(row));
      plot(Plotly, histogram, weightHistogramSpec(row));
    }).catch((error) => failure(channels, error));
    const pick = chooser(rows.map((r) => `${weightLabel(r)} (${formatDb(r.sqnr_db)})`), draw, "quantized kernel");
    root.append(section("Weights before vs after quantization",
      h("p", { class: "qa-explain" },
        "SQNR = 10·log10(Σ w² / Σ (w − q(w))²) per kernel and per output channel; higher is better, " +
        "about 6 dB per bit. A channel far below the others has a range its grid does not fit."),
      sqnr, h("div", { class: "qa-controls" }, h("label", {}, "Kernel ", pick)), channels, histogram));
    plot(Plotly, sqnr, weightSqnrSpec(rows));
    pending.push(draw(0));
  }
  await Promise.all(pending);
  return {};
}
