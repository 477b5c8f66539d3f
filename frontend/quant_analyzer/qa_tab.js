// Entry point of the "QuantAnalyzer" TensorBoard tab (tb_plugin's
// quant_analyzer plugin): TensorBoard imports this module in the tab's iframe
// and calls render(). One run selected: the whole dashboard; two or more:
// side by side. Redraws on TensorBoard's reloads and, while an analysis is
// running, every few seconds.

import { mountTab, newestRun, problemsBox, runDescription, runPicker } from "../common/tab_page.js";
import { graphsHref, openGraphsOn, watch } from "../common/tensorboard.js";
import { renderComparison } from "./qa_compare.js";
import { renderQuantAnalyzer } from "./qa_dashboard.js";
import { normalizeTables, progressText } from "./qa_data.js";
import { placeMixedPrecision } from "./qa_mixed_precision.js";

export async function render() {
  const tab = mountTab("quant-analyzer");
  const { root, picker, problems, board, source } = tab;
  const state = { runs: [], selected: [], shown: "", live: false, view: null };

  async function refresh() {
    const listing = await tab.runs();
    if (!listing) {
      return;
    }
    state.runs = listing.runs;
    const names = new Set(listing.runs.map((r) => r.name));
    state.selected = state.selected.filter((name) => names.has(name));
    if (!state.selected.length && listing.runs.length) {
      state.selected = [defaultRun(listing.runs)];
    }
    runPicker(picker, listing.runs, state.selected, describe, (selected) => {
      state.selected = selected;
      draw();
    });
    problems.replaceChildren(problemsBox(listing.problems));
    const fingerprint = JSON.stringify(state.selected.map((name) =>
      (listing.runs.find((r) => r.name === name) || {}).fingerprint));
    if (fingerprint !== state.shown) {
      await draw();
    }
  }

  async function draw() {
    if (!state.selected.length) {
      tab.note(state.runs.length ? "Select a run above." :
        "No QuantAnalyzer data yet: log a PTQ run or a QuantAnalyzer run with mct_logger.set_log_folder().");
      return;
    }
    const entries = [];
    const selected = state.selected;
    const fetched = await tab.fetchForDraw(() => Promise.all(selected.map((name) => source.tables(name))));
    if (!fetched) {
      return; // failed (the board says why), or a newer selection is being drawn
    }
    for (const body of fetched) {
      entries.push({ name: body.run, body, tables: normalizeTables(body.tables) });
    }
    problems.replaceChildren(problemsBox(fetched.flatMap((b) => b.problems)));
    state.live = entries.some((e) => progressText(e.tables.summary) !== null);
    const previous = board.querySelector(".qa-root");
    if (previous && previous.dataset.view) {
      state.view = previous.dataset.view;
    }
    const scroll = window.scrollY;
    const drawn = await tab.draw((target, Plotly) => {
      if (entries.length > 1) {
        renderComparison(target, entries, Plotly);
        return;
      }
      const [entry] = entries;
      const graphRun = entry.body.tables.layer_table && entry.body.tables.layer_table.graph_run;
      renderQuantAnalyzer(target, entry.body.tables, Plotly, {
        view: state.view,
        loadDetail: (kind, row) => source.detail(entry.name, entry.body.fingerprint, kind, row),
        graphHref: graphRun ? () => graphsHref(`${entry.name}/${graphRun}`) : () => null,
        openLink: () => openGraphsOn(`${entry.name}/${graphRun}`),
      });
      // a recommended run: its search / recommendation tables under the header
      const header = target.querySelector(".qa-header");
      if (header) {
        placeMixedPrecision(entry.tables, Plotly, (sections) => header.after(...sections));
      }
    });
    if (!drawn) {
      return; // failed (the board says why), or another selection replaced it
    }
    window.scrollTo(0, scroll);
    state.shown = JSON.stringify(entries.map((e) => e.body.fingerprint));
    root.dataset.ready = "true";
    root.dataset.runs = selected.join(",");
  }

  await refresh();
  // Poll while an analysis runs, and while the folder has no run yet (the
  // Rust data server may still be loading it).
  watch(refresh, () => state.live || !state.runs.length);
}

function describe(run) {
  const kinds = Object.keys(run.kinds);
  const kind = kinds.includes("summary") || kinds.includes("sensitivity") ? "QuantAnalyzer"
    : kinds.includes("layer_table") ? "PTQ" : kinds.join(", ");
  return runDescription(kind, run);
}

// The newest QuantAnalyzer run, else the newest PTQ run, else the newest run.
function defaultRun(runs) {
  for (const kind of ["per_layer_sqnr", "layer_table"]) {
    const having = runs.filter((r) => kind in r.kinds);
    if (having.length) {
      return newestRun(having).name;
    }
  }
  return newestRun(runs).name;
}
