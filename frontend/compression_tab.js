// Entry point of the "Compression" TensorBoard tab (tb_plugin's compression
// plugin): TensorBoard imports this module in the tab's iframe and calls
// render(). Redraws on TensorBoard's reloads and, while a sweep runs, every
// few seconds.

import { renderCompression } from "./compression_dashboard.js";
import { sweepProgress } from "./compression_data.js";
import { h } from "./quant_analyzer.js";
import { watch } from "./tb_data.js";
import { mountTab, problemsBox, runPicker, showError } from "./tab_common.js";

export async function render() {
  const tab = mountTab("compression");
  const { root, picker, problems, board, source } = tab;
  const state = { selected: null, shown: "", live: false, runs: [] };

  async function refresh() {
    const listing = await tab.runs();
    if (!listing) {
      return;
    }
    state.runs = listing.runs;
    const names = listing.runs.map((r) => r.name);
    if (!names.includes(state.selected)) {
      state.selected = names.length ? names[names.length - 1] : null;
    }
    runPicker(picker, listing.runs, state.selected ? [state.selected] : [],
      (run) => ("selection" in run.kinds ? "compressed" : "sweep"), ([name]) => {
        state.selected = name;
        draw();
      }, false);
    problems.replaceChildren(problemsBox(listing.problems));
    const run = listing.runs.find((r) => r.name === state.selected);
    if ((run ? run.fingerprint : "") !== state.shown) {
      await draw();
    }
  }

  async function draw() {
    if (!state.selected) {
      board.replaceChildren(h("p", { class: "qa-note qa-note-info" },
        "No compression run yet: call mct_logger.compress_model() after mct_logger.set_log_folder()."));
      root.dataset.ready = "true";
      return;
    }
    let body;
    try {
      body = await source.tables(state.selected);
    } catch (error) {
      showError(board, error);
      return;
    }
    problems.replaceChildren(problemsBox(body.problems));
    state.live = Boolean(body.tables.eval_scores && sweepProgress(body.tables.eval_scores));
    const scroll = window.scrollY;
    const drawn = await tab.draw((target, Plotly) => renderCompression(target, body.tables, Plotly));
    if (!drawn) {
      return;
    }
    window.scrollTo(0, scroll);
    state.shown = body.fingerprint;
    root.dataset.ready = "true";
    root.dataset.runs = body.run;
  }

  await refresh();
  // Poll while a sweep runs, and while the folder has no run yet (the Rust
  // data server may still be loading it).
  watch(refresh, () => state.live || !state.runs.length);
}
