// The notes a QuantAnalyzer view shows in place of what it could not draw: an
// analysis that did not run, a table cut short, a layer's channels that did
// not load.

import { note } from "../common/dom.js";

export function showFailure(element, error) {
  element.replaceChildren(note(`Could not load this layer's channels: ${error && error.message ? error.message : error}`, "warning"));
}

export function missing(panel, text) {
  panel.append(note(text, "warning"));
  return {};
}

export function incomplete(table, total) {
  return table.complete === false
    ? note(`Interrupted: ${table.rows.length} of ${total} layers evaluated.`, "warning")
    : null;
}
