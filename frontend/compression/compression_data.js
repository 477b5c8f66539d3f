// Pure functions over the "compression" payload tables (eval_scores and
// selection, as tb_plugin/metadata.py documents them): the score table's
// rows, the progress line, the chosen ratios and the verdict. No DOM, no charts.

import { isNumber } from "../common/format.js";
import { evaluationProgress } from "../common/progress.js";

// "Sweep running: N of M evaluations, about T left", or null once it ended.
export function sweepProgress(scores) {
  return evaluationProgress(scores, "Sweep running", "(the first evaluation is running)");
}

export function ratioLabel(ratio) {
  return isNumber(ratio) ? `${Math.round(ratio * 1000) / 10}%` : "kept";
}

// Rows of the score table that have at least one score (the sweep reached
// them), with per-candidate cells: {ratio, score, setting, state}, state one
// of "done", "pending", "none" (no candidate: that ratio saves nothing) and
// "chosen" for the ratio the selection picked. `waiting`: layers not reached yet.
export function scoreRows(scores, selection) {
  const chosen = new Map(((selection && selection.rows) || []).map((r) => [r.layer, r.ratio]));
  const rows = [];
  let waiting = 0;
  for (const row of scores.rows) {
    if (!row.scores.some(isNumber)) {
      waiting += 1;
      continue;
    }
    const cells = scores.candidates.map((ratio, i) => {
      const setting = row.settings[i];
      const score = row.scores[i];
      let state = setting === null ? "none" : isNumber(score) ? "done" : "pending";
      if (state === "done" && chosen.get(row.layer) === ratio) {
        state = "chosen";
      }
      return { ratio, score, setting, state };
    });
    rows.push({ layer: row.layer, class: row.class, macs: row.macs, params: row.params, cells });
  }
  return { rows, waiting };
}

// The layers the selection compressed, in graph order, with their cost kept.
export function chosenLayers(selection) {
  return ((selection && selection.rows) || []).filter((r) => isNumber(r.ratio));
}

export function formatCount(value) {
  if (!isNumber(value)) {
    return "n/a";
  }
  const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) {
    if (Math.abs(value) >= size) {
      return `${(value / size).toFixed(value >= 10 * size ? 1 : 2)}${unit}`;
    }
  }
  return String(value);
}

export function formatScore(value) {
  return isNumber(value) ? value.toFixed(4) : "";
}

// One sentence: what the selection did and what it cost.
export function verdict(scores, selection) {
  if (!selection) {
    if (scores.status === "running") {
      return "The ratios are chosen once every layer has been evaluated at every candidate ratio.";
    }
    return `The sweep ${scores.status}${scores.error ? ` (${scores.error})` : ""}: no ratios were chosen.`;
  }
  const metric = selection.cost_metric === "mac" ? "MACs" : "parameters";
  const key = selection.cost_metric === "mac" ? "macs" : "params";
  const kept = chosenLayers(selection).length;
  const drop = selection.score_before - selection.score_after;
  return `${kept} of ${selection.rows.length} layers compressed: ${metric} ` +
    `${formatCount(selection.cost_before[key])} → ${formatCount(selection.cost_after[key])} ` +
    `(${ratioLabel(selection.cost_ratio)} kept, target ${ratioLabel(selection.target_comp_ratio)}` +
    `${nextStep(selection, kept)}); ` +
    `score ${formatScore(selection.score_before)} → ${formatScore(selection.score_after)}` +
    (isNumber(drop) ? ` (${drop >= 0 ? "−" : "+"}${Math.abs(drop).toFixed(4)}).` : ".");
}

// Why the kept cost is below the target: the next less compressed choice misses it.
function nextStep(selection, kept) {
  if (!isNumber(selection.next_cost_ratio)) {
    return kept === 0 ? "; the uncompressed model meets it" : "";
  }
  return selection.target_comp_ratio - selection.cost_ratio > 0.01
    ? `; the next less compressed choice keeps ${ratioLabel(selection.next_cost_ratio)}` : "";
}
