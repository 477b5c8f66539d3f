// Pure functions over the CLE payload tables (weight_ranges, scale_factors,
// high_bias_fold, weight_quantization as tb_plugin/metadata.py documents
// them): layers ranked by spread, and the verdict line. No DOM, no charts.

import { formatNumber, isNumber } from "../common/format.js";

// A layer whose largest live channel range is this many times its smallest
// (spread score = log10 of the ratio) is hard to quantize with one per-tensor grid.
export const SPREAD_LIMIT = 2; // 100x

export function spreadRatio(score) {
  return isNumber(score) ? 10 ** score : null;
}

export function formatRatio(score) {
  const ratio = spreadRatio(score);
  if (ratio === null) {
    return "n/a";
  }
  return ratio >= 1000 ? `${ratio.toExponential(1)}×` : `${formatNumber(ratio, 3)}×`;
}

// Weight layers, widest channel spread (before CLE) first.
export function rankedLayers(weightRanges) {
  const layers = (weightRanges && weightRanges.layers) || [];
  return layers
    .map((layer) => ({
      ...layer,
      label: layer.kernel === "kernel" ? layer.node : `${layer.node}/${layer.kernel}`,
      spread_before: layer.before ? layer.before.spread_score : null,
      spread_after: layer.after ? layer.after.spread_score : null,
      outliers: layer.before ? layer.before.outlier_channels.length : 0,
      dead: layer.before ? layer.before.dead_channels.length : 0,
      outliers_after: layer.after ? layer.after.outlier_channels.length : null,
    }))
    .sort((a, b) => (b.spread_before ?? -1) - (a.spread_before ?? -1));
}

// One sentence that says what to do.
export function verdict(tables) {
  const ranges = tables.weight_ranges;
  if (!ranges) {
    return "No weight ranges were logged for this run.";
  }
  const ranked = rankedLayers(ranges);
  const spread = ranked.filter((l) => (l.spread_before ?? 0) >= SPREAD_LIMIT);
  const quantization = tables.weight_quantization ? tables.weight_quantization.rows : [];
  const perChannel = quantization.length > 0 && quantization.every((r) => r.per_channel);
  const weightNote = perChannel
    ? " Weights are quantized per channel here, so the spread within a layer costs little; it matters " +
      "for per-tensor weights (weight_per_channel=False) and for the activations between the layers."
    : "";
  if (!ranges.cle_applied) {
    if (!spread.length) {
      const widest = ranked[0];
      return `No layer has channel ranges spread over 100x (widest: ${widest ? `${widest.label}, ${formatRatio(widest.spread_before)}` : "none"}): ` +
        "cross-layer equalization is unlikely to help." + weightNote;
    }
    return `${spread.length} layer${spread.length > 1 ? "s have" : " has"} channel ranges spread over 100x ` +
      `(widest: ${spread[0].label}, ${formatRatio(spread[0].spread_before)}): try ` +
      "QuantizationConfig(cross_layer_equalization=True)." + weightNote;
  }
  const before = ranked.filter((l) => isNumber(l.spread_before));
  const after = ranked.filter((l) => isNumber(l.spread_after));
  const maxBefore = before.length ? Math.max(...before.map((l) => l.spread_before)) : null;
  const maxAfter = after.length ? Math.max(...after.map((l) => l.spread_after)) : null;
  const still = after.filter((l) => l.spread_after >= SPREAD_LIMIT);
  let text = `Cross-layer equalization was applied: the widest spread went from ${formatRatio(maxBefore)} ` +
    `to ${formatRatio(maxAfter)}.`;
  text += still.length
    ? ` ${still.length} layer${still.length > 1 ? "s are" : " is"} still over 100x (${still.slice(0, 3).map((l) => l.label).join(", ")}): ` +
      "they are outside any equalized pair (see the sets below) or limited by a non-ReLU activation."
    : " No layer is over 100x any more.";
  return text + weightNote;
}

// Per channel of one layer's stats: whether it is an outlier or dead.
export function channelMarks(stats) {
  const outliers = new Set(stats.outlier_channels || []);
  const dead = new Set(stats.dead_channels || []);
  return (stats.range || []).map((_, c) => (dead.has(c) ? "dead" : outliers.has(c) ? "outlier" : ""));
}
