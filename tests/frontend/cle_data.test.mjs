// Unit tests of frontend/cle/cle_data.js (pure: no DOM). Run by
// tests/frontend/test_js_units.py: node --test.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  SPREAD_LIMIT, channelMarks, formatRatio, rankedLayers, spreadRatio, verdict,
} from "../../frontend/cle/cle_data.js";

function stats(spread, outliers = [], dead = []) {
  return { spread_score: spread, outlier_channels: outliers, dead_channels: dead, range: [1, 2, 3, 4] };
}

const RANGES = {
  cle_applied: false,
  layers: [
    { node: "conv1", kernel: "kernel", before: stats(0.5), after: null },
    { node: "sep", kernel: "depthwise_kernel", before: stats(3.2, [1, 2], [0]), after: null },
    { node: "dense", kernel: "kernel", before: null, after: null },
  ],
};

test("spreadRatio and formatRatio turn a log10 spread score into a ratio", () => {
  assert.equal(spreadRatio(2), 100);
  assert.equal(spreadRatio(null), null);
  assert.equal(formatRatio(2), "100×");
  assert.equal(formatRatio(3.5), "3.2e+3×");
  assert.equal(formatRatio(undefined), "n/a");
  assert.equal(SPREAD_LIMIT, 2);
});

test("rankedLayers: widest spread first, labelled, counting outliers and dead channels", () => {
  const ranked = rankedLayers(RANGES);
  assert.deepEqual(ranked.map((l) => l.label), ["sep/depthwise_kernel", "conv1", "dense"]);
  assert.equal(ranked[0].outliers, 2);
  assert.equal(ranked[0].dead, 1);
  assert.equal(ranked[0].spread_after, null);
  assert.equal(ranked[2].spread_before, null);
  assert.deepEqual(rankedLayers(undefined), []);
});

test("verdict without CLE names the widest layer over 100x and the config to try", () => {
  const text = verdict({ weight_ranges: RANGES });
  assert.match(text, /^1 layer has channel ranges spread over 100x \(widest: sep\/depthwise_kernel, 1\.6e\+3×\)/);
  assert.match(text, /cross_layer_equalization=True/);
  const calm = { cle_applied: false, layers: [RANGES.layers[0]] };
  assert.match(verdict({ weight_ranges: calm }), /unlikely to help/);
  assert.equal(verdict({}), "No weight ranges were logged for this run.");
});

test("verdict with CLE applied reports the widest spread before and after", () => {
  const applied = {
    cle_applied: true,
    layers: [{ node: "conv1", kernel: "kernel", before: stats(3), after: stats(1) }],
  };
  const text = verdict({
    weight_ranges: applied,
    weight_quantization: { rows: [{ per_channel: true }] },
  });
  assert.match(text, /went from 1\.0e\+3× to 10×\. No layer is over 100x any more\./);
  assert.match(text, /quantized per channel here/);
});

test("channelMarks marks dead before outlier channels", () => {
  assert.deepEqual(channelMarks({ range: [1, 2, 3, 4], outlier_channels: [1, 3], dead_channels: [3] }),
    ["", "outlier", "", "dead"]);
  assert.deepEqual(channelMarks({}), []);
});
