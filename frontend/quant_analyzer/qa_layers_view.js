// The QuantAnalyzer's "Layers" view: every layer in graph order, one row
// each, flagged where it crosses a threshold (THRESHOLDS), sortable and
// filterable, with a link to the layer's node in TensorBoard's Graphs tab.
//
//   const view = buildLayers(panel, tables, Plotly, context);  view.focus("conv2d_3")

import { dataTable, h } from "../common/dom.js";
import { formatBytes, formatDb, formatNumber, isNumber } from "../common/format.js";
import { THRESHOLDS, layerRows } from "./qa_data.js";
import { missing } from "./qa_view_notes.js";

const LAYER_COLUMNS = [
  { key: "class", label: "class" },
  { key: "note", label: "note" },
  { key: "weight_bits", label: "W bits", numeric: true, format: bits },
  { key: "weight_per_channel", label: "per-channel", format: (v) => (v === undefined || v === null ? "" : v ? "yes" : "no") },
  { key: "activation_bits", label: "A bits", numeric: true, format: bits },
  { key: "encoding_min", label: "act. min", numeric: true, format: (v) => formatNumber(v, 4) },
  { key: "encoding_max", label: "act. max", numeric: true, format: (v) => formatNumber(v, 4) },
  { key: "weight_min", label: "weight min", numeric: true, format: (v) => formatNumber(v, 4) },
  { key: "weight_max", label: "weight max", numeric: true, format: (v) => formatNumber(v, 4) },
  { key: "memory_before", label: "memory FP32", numeric: true, format: formatBytes },
  { key: "memory_after", label: "memory quantized", numeric: true, format: formatBytes },
  { key: "sqnr_isolated_db", label: "SQNR isolated", numeric: true, format: formatDb },
  { key: "sqnr_accumulated_db", label: "SQNR accumulated", numeric: true, format: formatDb },
  { key: "accumulated_step_db", label: "SQNR drop here", numeric: true, format: formatDb },
  { key: "weight_sqnr_db", label: "weight SQNR", numeric: true, format: formatDb },
  { key: "adaround_loss_nearest", label: "AdaRound: loss nearest", numeric: true, format: (v) => formatNumber(v, 4) },
  { key: "adaround_loss", label: "AdaRound: loss learned", numeric: true, format: (v) => formatNumber(v, 4) },
  { key: "adaround_flipped", label: "AdaRound: rounded away from nearest", numeric: true, format: percent },
  { key: "mse_accumulated", label: "MSE", numeric: true, format: (v) => formatNumber(v, 3) },
  { key: "cosine", label: "cosine", numeric: true, format: (v) => (isNumber(v) ? v.toFixed(5) : "n/a") },
  { key: "score_enabled", label: "score, only this quantized", numeric: true, format: (v) => formatNumber(v, 5) },
  { key: "score_disabled", label: "score, this in float", numeric: true, format: (v) => formatNumber(v, 5) },
];

function percent(value) {
  return isNumber(value) ? `${(100 * value).toFixed(1)}%` : "";
}

function bits(value) {
  return isNumber(value) ? String(value) : "float";
}

export function buildLayers(panel, tables, Plotly, context) {
  const rows = layerRows(tables);
  panel.append(h("h2", {}, "Every layer"));
  if (!rows.length) {
    return missing(panel, "This run has no per-layer table.");
  }
  const flagged = rows.filter((r) => r.severity > 0).length;
  panel.append(h("p", { class: "qa-explain" },
    `${rows.filter((r) => r.quantized !== false).length} quantized layers in graph order; ${flagged} flagged. Click a header to sort, type to filter. ` +
    "Flags: ", h("span", { class: "qa-flag qa-flag-2" }, "bad"), " ",
    h("span", { class: "qa-flag qa-flag-1" }, "suspect"), ". Thresholds:"));
  panel.append(h("ul", { class: "qa-thresholds" },
    Object.values(THRESHOLDS).map((t) => h("li", {}, t.text))));
  const columns = [
    {
      key: "layer", label: "layer",
      format: (value, row) => {
        const href = context.graphHref(row);
        return href
          ? h("a", {
            href, target: "_top", class: "qa-graph-link",
            title: `Open the Graphs tab on this run (node ${row.graph_node || value})`,
            onclick: (event) => {
              event.preventDefault();
              context.openLink(href);
            },
          }, value)
          : value;
      },
    },
    { key: "severity", label: "flags", numeric: true,
      format: (value, row) => (row.flags.length
        ? h("span", { class: `qa-flag qa-flag-${value}`, title: row.flags.map((f) => f.text).join("; ") },
          row.flags.map((f) => f.text).join("; "))
        : "") },
    ...LAYER_COLUMNS.filter((c) => rows.some((r) => r[c.key] !== undefined && r[c.key] !== null)),
  ];
  const filter = h("input", { type: "search", placeholder: "filter by layer or class", "aria-label": "filter layers" });
  const onlyFlagged = h("input", { type: "checkbox", "aria-label": "flagged only" });
  const withFloat = h("input", { type: "checkbox", "aria-label": "layers without quantizers" });
  const floatCount = rows.filter((r) => r.quantized === false).length;
  const holder = h("div", {});
  const draw = () => {
    const text = filter.value.trim().toLowerCase();
    const shown = rows.filter((r) =>
      (withFloat.checked || r.quantized !== false) &&
      (!onlyFlagged.checked || r.severity > 0) &&
      (!text || r.layer.toLowerCase().includes(text) || String(r.class || "").toLowerCase().includes(text)));
    holder.replaceChildren(dataTable(columns, shown, {
      rowClass: (r) => (r.severity ? `qa-row-flag-${r.severity}` : ""),
    }));
  };
  filter.addEventListener("input", draw);
  onlyFlagged.addEventListener("change", draw);
  withFloat.addEventListener("change", draw);
  panel.append(h("div", { class: "qa-controls" }, filter, h("label", {}, onlyFlagged, " flagged only"),
    floatCount ? h("label", {}, withFloat, ` also the ${floatCount} layers without quantizers (why: the note column)`) : null),
  holder);
  draw();
  return {
    focus(layer) {
      filter.value = layer;
      draw();
    },
  };
}
