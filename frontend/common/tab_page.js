// DOM pieces the TensorBoard tabs share: the stylesheet link, the run
// picker, the box listing payloads that could not be read, error messages,
// and the page of a tab that shows one run at a time.

import { loadPlotly } from "./plotly_loader.js";
import { h } from "./dom.js";
import { PluginSource, watch } from "./tensorboard.js";

// The page of a tab: a run picker, a box for unreadable payloads, the board
// the dashboard is drawn on, the plugin's routes, and the chart library,
// which loads while the first tables are fetched (`plotly()` awaits it).
export function mountTab(id) {
  useStylesheet("static/common/dashboard.css");
  const root = h("main", { id, class: "qa-tab-page" });
  const picker = h("div", { class: "qa-run-picker" });
  const problems = h("div", {});
  const board = h("div", { class: "qa-board" });
  root.append(picker, problems, board);
  document.body.append(root);
  const ready = loadPlotly("static/plotly.min.js");
  ready.catch((error) => showError(board, error));
  // Numbers the fetches made for drawing: only the newest may draw. A slower
  // fetch for an earlier run selection, finishing after the current one, would
  // otherwise draw stale runs over the view the picker names.
  let newest = 0;
  return {
    root, picker, problems, board,
    source: new PluginSource("."),
    // The chart library, or null when it failed to load (the board says why).
    plotly: () => ready.catch(() => null),
    // Fetches what a draw shows: `await tab.fetchForDraw(() => source.tables(run))`.
    // Resolves to null when the fetch failed (the board says why) or when a later
    // fetchForDraw began meanwhile (the later one draws; this one is stale).
    async fetchForDraw(load) {
      const ticket = ++newest;
      try {
        const value = await load();
        return ticket === newest ? value : null;
      } catch (error) {
        if (ticket === newest) {
          showError(board, error);
        }
        return null;
      }
    },
    // Shows a note on the board instead of a dashboard (no run to draw); a fetch
    // still under way for an earlier selection no longer draws over it.
    note(text) {
      newest += 1;
      board.replaceChildren(h("p", { class: "qa-note qa-note-info" }, text));
      delete root.dataset.runs;
      root.dataset.ready = "true";
    },
    // Draws a dashboard on a fresh element in the board (in the page, since plotly
    // sizes a chart from its element): `await drawer(element, Plotly)`, right
    // after the fetchForDraw it shows. Returns false when the chart library or the
    // drawing failed (the board says why), or when a later fetch or draw
    // replaced this one meanwhile.
    async draw(drawer) {
      const ticket = newest;
      const Plotly = await this.plotly();
      if (!Plotly || ticket !== newest) {
        return false;
      }
      const target = h("div", {});
      board.replaceChildren(target);
      try {
        await drawer(target, Plotly);
      } catch (error) {
        showError(board, error);
        return false;
      }
      return board.contains(target);
    },
    // Lists the runs; on failure the board says why and the result is null.
    async runs() {
      try {
        return await this.source.runs();
      } catch (error) {
        showError(board, error);
        return null;
      }
    },
  };
}

export function useStylesheet(href) {
  if (!document.querySelector(`link[href="${href}"]`)) {
    document.head.append(h("link", { rel: "stylesheet", href }));
  }
}

// The run written to last (its newest payload), not the last by name.
export function newestRun(runs) {
  const wallTime = (run) => Math.max(...Object.values(run.kinds).map((k) => k.wall_time));
  return runs.reduce((a, b) => (wallTime(b) > wallTime(a) ? b : a));
}

// What a run is, then what tells it apart (the server's `label`: config, CLE,
// search or recommend, compression scheme and target).
export function runDescription(kind, run) {
  return run.label ? `${kind}: ${run.label}` : kind;
}

// Checkboxes, one per run; `describe(run)` labels it. Several may be checked
// (`multiple`), else they act as radio buttons.
export function runPicker(container, runs, selected, describe, onChange, multiple = true) {
  const chosen = new Set(selected);
  const boxes = runs.map((run) => {
    const input = h("input", {
      type: multiple ? "checkbox" : "radio", name: "run", value: run.name,
      checked: chosen.has(run.name),
    });
    input.addEventListener("change", () => {
      const picked = multiple
        ? boxes.filter((b) => b.input.checked).map((b) => b.input.value)
        : [input.value];
      onChange(picked);
    });
    return { input, label: h("label", { class: "qa-run", title: run.tb_runs.join("\n") },
      input, " ", h("span", { class: "qa-run-name" }, run.name), " ",
      h("span", { class: "qa-run-kind" }, describe(run))) };
  });
  container.replaceChildren(
    h("span", { class: "qa-run-title" }, multiple ? "Runs (pick two or more to compare):" : "Run:"),
    ...boxes.map((b) => b.label),
  );
}

export function problemsBox(problems) {
  if (!problems || !problems.length) {
    return "";
  }
  return h("div", { class: "qa-note qa-note-warning qa-problems", role: "alert" },
    h("strong", {}, `${problems.length} payload${problems.length > 1 ? "s" : ""} could not be read and ` +
      `${problems.length > 1 ? "are" : "is"} not shown:`),
    h("ul", {}, problems.map((p) => h("li", {}, `${p.run} / ${p.tag}: ${p.reason}`))));
}

export function showError(element, error) {
  element.replaceChildren(h("p", { class: "qa-note qa-note-warning", role: "alert" },
    `This tab could not be drawn: ${error && error.message ? error.message : error}`));
  const root = element.closest("main");
  if (root) {
    root.dataset.ready = "error";
  }
}

// A tab that shows one run at a time (the newest first, picked with radio
// buttons) and redraws when that run's payloads change: on TensorBoard's
// reloads and, while `live(body)` says the run is still being written (or the
// folder has no run yet: the Rust data server may still be loading it), every
// few seconds.
//
//   renderSingleRunTab("cle", { describe: (run) => "PTQ run", empty: "No data yet.",
//     draw: (target, body, Plotly, source) => renderCle(target, body.tables, Plotly) })
export async function renderSingleRunTab(id, options) {
  const tab = mountTab(id);
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
      state.selected = names.length ? newestRun(listing.runs).name : null;
    }
    runPicker(picker, listing.runs, state.selected ? [state.selected] : [], options.describe,
      ([name]) => {
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
      tab.note(options.empty);
      return;
    }
    const body = await tab.fetchForDraw(() => source.tables(state.selected));
    if (!body) {
      return; // failed (the board says why), or a newer selection is being drawn
    }
    problems.replaceChildren(problemsBox(body.problems));
    state.live = Boolean(options.live && options.live(body));
    const scroll = window.scrollY;
    const drawn = await tab.draw((target, Plotly) => options.draw(target, body, Plotly, source));
    if (!drawn) {
      return; // failed (the board says why), or another selection replaced it
    }
    window.scrollTo(0, scroll);
    state.shown = body.fingerprint;
    root.dataset.ready = "true";
    root.dataset.runs = body.run;
  }

  await refresh();
  watch(refresh, () => state.live || !state.runs.length);
}
