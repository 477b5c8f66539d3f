// Entry point of the offline QuantAnalyzer report (index.html): the tables are
// embedded in the page as JSON and the chart library is inlined, so the file
// opens from disk with no server.

import { loadPlotly } from "../common/plotly_loader.js";
import { renderQuantAnalyzer } from "./qa_dashboard.js";

function showError(root, error) {
  const box = document.createElement("p");
  box.className = "qa-note qa-note-warning";
  box.textContent = `The report could not be drawn: ${error && error.message ? error.message : error}`;
  root.append(box);
}

export function main() {
  const root = document.getElementById("quant-analyzer");
  const source = document.getElementById("quant-analyzer-data");
  let tables;
  try {
    tables = JSON.parse(source.textContent).tables;
  } catch (error) {
    showError(root, error);
    return;
  }
  loadPlotly("plotly.min.js")
    .then((Plotly) => {
      const view = location.hash.slice(1);
      const dashboard = renderQuantAnalyzer(root, tables, Plotly);
      if (view) {
        dashboard.activate(view);
      }
      window.addEventListener("hashchange", () => dashboard.activate(location.hash.slice(1)));
      root.dataset.ready = "true";
    })
    .catch((error) => showError(root, error));
}

main();
