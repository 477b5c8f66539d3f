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

import { h, note } from "../common/dom.js";
import { formatBytes, isNumber } from "../common/format.js";
import { VIEWS, findings, layerRows, normalizeTables, progressText, suspects } from "./qa_data.js";
import { buildLayers } from "./qa_layers_view.js";
import { buildMse, buildPerLayer, buildSensitivity, buildSqnr } from "./qa_score_views.js";
import { buildHistograms, buildRanges, buildWeights } from "./qa_tensor_views.js";

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
