// Entry point of the "CLE" TensorBoard tab (tb_plugin's cle plugin):
// TensorBoard imports this module in the tab's iframe and calls render().

import { renderSingleRunTab } from "../common/tab_page.js";
import { renderCle } from "./cle_dashboard.js";

export function render() {
  return renderSingleRunTab("cle", {
    describe: () => "PTQ run",
    empty: "No CLE data yet: every PTQ run logged with mct_logger.set_log_folder() records its weight ranges.",
    draw: (target, body, Plotly, source) => renderCle(target, body.tables, Plotly, {
      loadDetail: (kind, row) => source.detail(body.run, body.fingerprint, kind, row),
    }),
  });
}
