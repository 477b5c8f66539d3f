// Unit tests of frontend/compression/compression_data.js (pure: no DOM). Run
// by tests/frontend/test_js_units.py: node --test.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  chosenLayers, formatCount, formatScore, ratioLabel, scoreRows, sweepProgress, verdict,
} from "../../frontend/compression/compression_data.js";

const SCORES = {
  status: "running", candidates: [0.25, 0.5, 0.75], cost_metric: "mac",
  evaluations_done: 4, evaluations_total: 6, evaluation_seconds: 8,
  rows: [
    { layer: "conv1", class: "Conv2D", macs: 1000, params: 10, settings: [2, 4, null], scores: [0.5, 0.9, null] },
    { layer: "conv2", class: "Conv2D", macs: 2000, params: 20, settings: [3, 6, 9], scores: [0.4, null, null] },
    { layer: "dense", class: "Dense", macs: 300, params: 30, settings: [1, 2, 3], scores: [null, null, null] },
  ],
};

const SELECTION = {
  cost_metric: "mac", target_comp_ratio: 0.5, cost_ratio: 0.42, next_cost_ratio: 0.6,
  cost_before: { macs: 3300, params: 60 }, cost_after: { macs: 1386, params: 40 },
  score_before: 0.95, score_after: 0.9,
  rows: [{ layer: "conv1", ratio: 0.5 }, { layer: "conv2", ratio: null }, { layer: "dense", ratio: null }],
};

test("ratioLabel and formatScore", () => {
  assert.equal(ratioLabel(0.25), "25%");
  assert.equal(ratioLabel(0.333), "33.3%");
  assert.equal(ratioLabel(null), "kept");
  assert.equal(formatScore(0.123456), "0.1235");
  assert.equal(formatScore(null), "");
});

test("formatCount abbreviates with k, M and G", () => {
  assert.equal(formatCount(999), "999");
  assert.equal(formatCount(1500), "1.50k");
  assert.equal(formatCount(25_000_000), "25.0M");
  assert.equal(formatCount(3e9), "3.00G");
  assert.equal(formatCount(undefined), "n/a");
});

test("scoreRows: cells done, pending, none and chosen; layers not reached are waiting", () => {
  const { rows, waiting } = scoreRows(SCORES, SELECTION);
  assert.equal(waiting, 1);
  assert.deepEqual(rows.map((r) => r.layer), ["conv1", "conv2"]);
  assert.deepEqual(rows[0].cells.map((c) => c.state), ["done", "chosen", "none"]);
  assert.deepEqual(rows[1].cells.map((c) => c.state), ["done", "pending", "pending"]);
  assert.deepEqual(scoreRows(SCORES, null).rows[0].cells.map((c) => c.state), ["done", "done", "none"]);
});

test("chosenLayers keeps the compressed layers only", () => {
  assert.deepEqual(chosenLayers(SELECTION).map((r) => r.layer), ["conv1"]);
  assert.deepEqual(chosenLayers(undefined), []);
});

test("sweepProgress while running, null once ended", () => {
  assert.equal(sweepProgress(SCORES), "Sweep running: 4 of 6 evaluations, about 4 s left");
  assert.equal(sweepProgress({ ...SCORES, status: "complete" }), null);
});

test("verdict states the cost kept, the target, the next step and the score drop", () => {
  assert.equal(verdict(SCORES, SELECTION),
    "1 of 3 layers compressed: MACs 3.30k → 1.39k (42% kept, target 50%; the next less " +
    "compressed choice keeps 60%); score 0.9500 → 0.9000 (−0.0500).");
  assert.match(verdict(SCORES, null), /chosen once every layer has been evaluated/);
  assert.equal(verdict({ ...SCORES, status: "failed", error: "boom" }, null),
    "The sweep failed (boom): no ratios were chosen.");
});
