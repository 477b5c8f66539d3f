// The QuantAnalyzer dashboard: headline findings first, then one view per
// analysis. Used by the offline report (tables embedded in the page) and by
// the TensorBoard tab (tables read from the plugin's routes):
//
//   renderQuantAnalyzer(rootElement, tables, Plotly, options)
//
// `tables` maps payload kinds to tables as mct_logger writes them (a
// QuantAnalyzer run's, or a PTQ run's "layer_table"). `options`:
//   loadDetail(kind, row) -> Promise of the row with its per-channel fields
//     (the tab fetches them one layer at a time; default: the row itself);
//   graphHref(row) -> the link to the layer's graph in TensorBoard, or null;
//   openLink(href): follows such a link (default: in the top window);
//   view: the view shown first.
// Charts are drawn when their view is first shown (hidden elements have no size).

import {
  VIEWS,
  findings,
  formatBytes,
  formatDb,
  formatNumber,
  THRESHOLDS,
  isNumber,
  layerRows,
  normalizeTables,
  progressText,
  quantizedHistogram,
  sensitivityVerdict,
  suspects,
  weightLabel,
} from "./qa_data.js";
import {
  COLORS,
  activationRangesSpec,
  channelHistogram,
  channelRangesSpec,
  channelSqnrSpec,
  histogramSpec,
  mseSpec,
  perLayerSpec,
  plot,
  sensitivitySpec,
  sqnrSpec,
  stepSpec,
  weightRangesSpec,
  weightSqnrSpec,
} from "./qa_charts.js";

// ------------------------------------------------------------------ DOM helpers

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key === "class") {
      element.className = value;
    } else if (key.startsWith("on")) {
      element.addEventListener(key.slice(2), value);
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) {
      continue;
    }
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function note(text, kind = "info") {
  return h("p", { class: `qa-note qa-note-${kind}` }, text);
}

function chartBox(extraClass = "") {
  return h("div", { class: `qa-chart ${extraClass}`.trim() });
}

// A table whose columns sort on click. columns: [{ key, label, format, numeric }].
export function dataTable(columns, rows, options = {}) {
  let sortKey = options.sortKey || null;
  let descending = false;
  const body = h("tbody");
  const headers = columns.map((column) =>
    h("th", {
      scope: "col",
      class: column.numeric ? "qa-num" : "",
      title: "Sort",
      onclick: () => {
        descending = sortKey === column.key ? !descending : false;
        sortKey = column.key;
        fill();
      },
    }, column.label),
  );
  function fill() {
    const sorted = rows.slice();
    if (sortKey) {
      const column = columns.find((c) => c.key === sortKey);
      sorted.sort((a, b) => compare(a[sortKey], b[sortKey], column.numeric) * (descending ? -1 : 1));
    }
    body.replaceChildren(
      ...sorted.map((row) =>
        h("tr", { class: options.rowClass ? options.rowClass(row) : "" }, columns.map((column) =>
          h("td", { class: column.numeric ? "qa-num" : "" },
            column.format ? column.format(row[column.key], row) : String(row[column.key] ?? "")),
        )),
      ),
    );
    headers.forEach((th, i) => {
      th.dataset.sorted = columns[i].key === sortKey ? (descending ? "desc" : "asc") : "";
    });
  }
  fill();
  return h("div", { class: "qa-table-wrap" },
    h("table", { class: "qa-table" }, h("thead", {}, h("tr", {}, headers)), body));
}

function compare(a, b, numeric) {
  if (numeric) {
    const x = isNumber(a) ? a : Infinity;
    const y = isNumber(b) ? b : Infinity;
    return x - y;
  }
  return String(a ?? "").localeCompare(String(b ?? ""));
}

function select(options, onChange, label) {
  const element = h("select", { "aria-label": label, onchange: () => onChange(element.value) },
    options.map((o) => h("option", { value: o.value }, o.label)));
  return element;
}

// ------------------------------------------------------------------ the dashboard

export function renderQuantAnalyzer(root, rawTables, Plotly, options = {}) {
  const tables = normalizeTables(rawTables);
  const context = {
    loadDetail: options.loadDetail || ((kind, row) => Promise.resolve(row)),
    graphHref: options.graphHref || (() => null),
    openLink: options.openLink || ((href) => window.open(href, "_top")),
  };
  root.classList.add("qa-root");
  root.replaceChildren();
  const summary = tables.summary || {};
  const state = { focus: null, built: new Map(), panels: new Map(), tabs: new Map() };

  root.append(header(summary, tables));
  const found = findings(tables);
  const flagged = new Set(layerRows(tables).filter((r) => r.severity > 0).map((r) => r.layer));
  root.append(findingsSection(found, flagged, (view, layer) => activate(view, layer)));

  const nav = h("nav", { class: "qa-tabs", role: "tablist" });
  const panels = h("div", { class: "qa-panels" });
  for (const view of VIEWS) {
    const tab = h("button", {
      class: "qa-tab", role: "tab", type: "button", "data-view": view.id,
      onclick: () => activate(view.id),
    }, view.title);
    if (!view.kinds.some((kind) => tables[kind])) {
      tab.classList.add("qa-tab-missing");
    }
    const panel = h("section", { class: "qa-panel", role: "tabpanel", "data-view": view.id, hidden: true });
    nav.append(tab);
    panels.append(panel);
    state.tabs.set(view.id, tab);
    state.panels.set(view.id, panel);
  }
  root.append(nav, panels);

  const builders = {
    layers: buildLayers,
    sensitivity: buildSensitivity,
    "per-layer": buildPerLayer,
    sqnr: buildSqnr,
    mse: buildMse,
    ranges: buildRanges,
    histograms: buildHistograms,
    weights: buildWeights,
  };

  function activate(viewId, layer = null) {
    if (!state.panels.has(viewId)) {
      viewId = firstView;
    }
    for (const [id, panel] of state.panels) {
      panel.hidden = id !== viewId;
      state.tabs.get(id).setAttribute("aria-selected", String(id === viewId));
    }
    const panel = state.panels.get(viewId);
    if (!state.built.has(viewId)) {
      state.built.set(viewId, builders[viewId](panel, tables, Plotly, context) || {});
    } else {
      for (const chart of panel.querySelectorAll(".js-plotly-plot")) {
        Plotly.Plots.resize(chart);
      }
    }
    const view = state.built.get(viewId);
    if (layer && view.focus) {
      view.focus(layer);
    }
    root.dataset.view = viewId;
  }

  const firstView = (VIEWS.find((v) => v.id !== "layers" && v.kinds.some((k) => tables[k])) ||
    VIEWS[0]).id;
  activate(options.view && state.panels.has(options.view) ? options.view : firstView);
  return { activate, findings: found, view: () => root.dataset.view };
}

function header(summary, tables) {
  const config = summary.config || {};
  const status = summary.status || (tables.layer_table ? "complete" : "unknown");
  const facts = [];
  if (config.weight_bits) {
    facts.push(`W${config.weight_bits}A${config.activation_bits}`);
    facts.push(`weights ${config.weight_per_channel ? "per channel" : "per tensor"}, ` +
      `${config.weight_symmetric ? "symmetric" : "asymmetric"}, ${config.weight_observer}`);
    facts.push(`activations ${config.activation_symmetric ? "symmetric" : "asymmetric"}, ` +
      `${config.activation_observer}`);
  }
  if (summary.layers) {
    facts.push(`${summary.layers.length} quantized layers`);
  }
  const layerTable = tables.layer_table;
  if (layerTable) {
    const quantized = layerTable.rows.filter((r) => r.quantized).length;
    facts.push(`PTQ run: ${quantized} of ${layerTable.rows.length} layers quantized`);
    if (isNumber(layerTable.memory_before) && layerTable.memory_before > 0) {
      facts.push(`memory ${formatBytes(layerTable.memory_before)} → ${formatBytes(layerTable.memory_after)} ` +
        `(${(100 * layerTable.memory_after / layerTable.memory_before).toFixed(1)}%)`);
    }
  }
  const folded = Object.keys(summary.batch_norms_folded || {}).length;
  if (folded) {
    facts.push(`${folded} batch norm${folded > 1 ? "s" : ""} folded (FP32 baseline)`);
  }
  const model = summary.model || (layerTable && layerTable.model);
  const box = h("header", { class: "qa-header" },
    h("h1", {}, "QuantAnalyzer", model ? h("span", { class: "qa-model" }, model) : null),
    h("p", { class: "qa-facts" }, facts.join(" · ")),
  );
  const progress = progressText(summary);
  if (progress) {
    box.append(h("p", { class: "qa-note qa-note-info qa-progress", role: "status" }, progress,
      " — the tables below fill in as evaluations finish."));
  } else if (status !== "complete") {
    box.append(note(
      `Analysis ${status} after ${summary.evaluations_done ?? 0} of ` +
      `${summary.evaluations_total ?? "?"} evaluations: showing the results finished so far.` +
      (summary.error ? ` (${summary.error})` : ""),
      "warning",
    ));
  }
  return box;
}

// The "most suspicious layer" line names a layer only when it crosses one of
// the stated thresholds (THRESHOLDS, shown in the Layers view).
function findingsSection(found, flagged, go) {
  const section = h("section", { class: "qa-findings", "aria-label": "Headline findings" });
  section.append(h("h2", {}, "Headline findings"));
  const ranked = suspects(found).filter((s) => flagged.has(s.layer));
  if (!ranked.length && found.length) {
    section.append(h("p", { class: "qa-suspect" },
      "Nothing stands out: no layer crosses the thresholds of the Layers view " +
      "(e.g. isolated SQNR below 30 dB). The rankings below are the relative order only."));
  }
  if (ranked.length) {
    const top = ranked[0];
    section.append(h("p", { class: "qa-suspect" },
      "Most suspicious layer: ",
      h("button", { class: "qa-layer-link", type: "button", onclick: () => go("sqnr", top.layer) }, top.layer),
      ` — worst by ${top.measures.length} measure${top.measures.length > 1 ? "s" : ""}: `,
      top.measures.join("; "), "."));
  }
  const grid = h("div", { class: "qa-cards" });
  for (const finding of found) {
    const list = h("ol", { class: "qa-ranking" });
    for (const entry of finding.items) {
      list.append(h("li", {},
        h("button", {
          class: "qa-layer-link", type: "button", title: entry.label,
          onclick: () => go(finding.view, entry.layer),
        }, entry.label),
        h("span", { class: "qa-value" }, entry.text)));
    }
    if (!finding.items.length && !finding.note) {
      list.append(h("li", { class: "qa-empty" }, "nothing stands out"));
    }
    grid.append(h("article", { class: "qa-card", "data-finding": finding.id },
      h("h3", {}, h("button", { class: "qa-card-title", type: "button", onclick: () => go(finding.view) }, finding.title)),
      h("p", { class: "qa-explain" }, finding.explanation),
      list,
      finding.note ? h("p", { class: "qa-card-note" }, finding.note) : null));
  }
  if (!found.length) {
    grid.append(note("No analysis finished."));
  }
  section.append(grid);
  return section;
}

function showFailure(element, error) {
  element.replaceChildren(note(`Could not load this layer's channels: ${error && error.message ? error.message : error}`, "warning"));
}

function missing(panel, text) {
  panel.append(note(text, "warning"));
  return {};
}

function incomplete(table, total) {
  return table.complete === false
    ? note(`Interrupted: ${table.rows.length} of ${total} layers evaluated.`, "warning")
    : null;
}

// ------------------------------------------------------------------ views

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
  { key: "mse_accumulated", label: "MSE", numeric: true, format: (v) => formatNumber(v, 3) },
  { key: "cosine", label: "cosine", numeric: true, format: (v) => (isNumber(v) ? v.toFixed(5) : "n/a") },
  { key: "score_enabled", label: "score, only this quantized", numeric: true, format: (v) => formatNumber(v, 5) },
  { key: "score_disabled", label: "score, this in float", numeric: true, format: (v) => formatNumber(v, 5) },
];

function bits(value) {
  return isNumber(value) ? String(value) : "float";
}

function buildLayers(panel, tables, Plotly, context) {
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

function buildSensitivity(panel, tables, Plotly) {
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

function buildPerLayer(panel, tables, Plotly) {
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

function buildSqnr(panel, tables, Plotly) {
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

function buildMse(panel, tables, Plotly) {
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

function buildRanges(panel, tables, Plotly, context) {
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

function buildHistograms(panel, tables, Plotly, context) {
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

function buildWeights(panel, tables, Plotly, context) {
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
