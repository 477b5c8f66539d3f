// Entry point of the "Compression" TensorBoard tab (tb_plugin's compression
// plugin): TensorBoard imports this module in the tab's iframe and calls
// render(). Redraws on TensorBoard's reloads and, while a sweep runs, every
// few seconds.

import { renderSingleRunTab } from "../common/tab_page.js";
import { renderCompression } from "./compression_dashboard.js";
import { sweepProgress } from "./compression_data.js";

export function render() {
  return renderSingleRunTab("compression", {
    describe: (run) => ("selection" in run.kinds ? "compressed" : "sweep"),
    empty: "No compression run yet: call mct_logger.compress_model() after mct_logger.set_log_folder().",
    live: (body) => Boolean(body.tables.eval_scores && sweepProgress(body.tables.eval_scores)),
    draw: (target, body, Plotly) => renderCompression(target, body.tables, Plotly),
  });
}
