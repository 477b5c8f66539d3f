// Entry point of the "CLE" TensorBoard tab (tb_plugin's cle plugin):
// TensorBoard imports this module in the tab's iframe and calls render().

import { renderCle } from "./cle_dashboard.js";
import { h } from "./quant_analyzer.js";
import { watch } from "./tb_data.js";
import { mountTab, problemsBox, runPicker, showError } from "./tab_common.js";

export async function render() {
  const tab = mountTab("cle");
  const { root, picker, problems, board, source } = tab;
  const state = { selected: null, shown: "" };

  async function refresh() {
    const listing = await tab.runs();
    if (!listing) {
      return;
    }
    const names = listing.runs.map((r) => r.name);
    if (!names.includes(state.selected)) {
      state.selected = names.length ? names[names.length - 1] : null;
    }
    runPicker(picker, listing.runs, state.selected ? [state.selected] : [],
      () => "PTQ run", ([name]) => {
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
        "No CLE data yet: every PTQ run logged with mct_logger.set_log_folder() records its weight ranges."));
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
    const drawn = await tab.draw((target, Plotly) => renderCle(target, body.tables, Plotly, {
      loadDetail: (kind, row) => source.detail(body.run, body.fingerprint, kind, row),
    }));
    if (!drawn) {
      return;
    }
    state.shown = body.fingerprint;
    root.dataset.ready = "true";
    root.dataset.runs = body.run;
  }

  await refresh();
  // Poll only while the folder has no run yet (the Rust data server may still be loading it).
  watch(refresh, () => !state.selected);
}
