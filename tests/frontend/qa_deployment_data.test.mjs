// Unit tests of frontend/quant_analyzer/qa_deployment_data.js (pure: no DOM). Run by
// tests/frontend/test_js_units.py: node --test. The payload's shape is
// tb_plugin.metadata.SHAPES["quant_analyzer"]["deployment"]; a real one is read
// back in tests/tensorboard/test_export_log.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CURVES, deploymentFacts, deploymentHeadline, flaggedFirst, formatParityDb, lossDb, opCountRows,
  sqnrCurves,
} from "../../frontend/quant_analyzer/qa_deployment_data.js";

const TABLE = {
  model: "net", path: "/tmp/net.tflite", io_dtype: "float32", size_bytes: 2048,
  float_size_bytes: 8192, num_samples: 20, graph_run: "08_litert_export",
  outputs: [{ node: "softmax", cosine_sim_litert: 0.999987, top1_sim_litert: 1, within_one_step: 0.995,
    sqnr_sim_litert_db: 41.2 }],
  op_counts: { int8: { CONV_2D: 3, ADD: 1, SOFTMAX: 1 }, float_ops: [{ op: "TANH", reason: "squash: stays float" }],
    conversions: 2, other: {} },
  rows: [
    { layer: "conv", sqnr_float_sim_db: 40, sqnr_float_litert_db: 40, sqnr_sim_litert_db: 150, flagged: false },
    { layer: "gap", sqnr_float_sim_db: 44, sqnr_float_litert_db: 41.5, sqnr_sim_litert_db: 42, flagged: true },
    { layer: "fc", sqnr_float_sim_db: 41, sqnr_float_litert_db: 36, sqnr_sim_litert_db: null, flagged: true },
  ],
  flagged: ["fc", "gap"],
  unmatched: [{ layer: "relu", reason: "fused away" }],
};

test("headline: one line per output, simulated vs LiteRT agreement", () => {
  const [line] = deploymentHeadline(TABLE);
  assert.equal(line.node, "softmax");
  assert.match(line.text, /cosine 0\.99999/);
  assert.match(line.text, /top-1 agreement 100\.0%/);
  assert.match(line.text, /99\.5% of elements within one output step/);
  assert.deepEqual(deploymentHeadline({}), []);
});

test("facts: sizes, op counts, flagged and unmatched", () => {
  const facts = deploymentFacts(TABLE).join(" | ");
  assert.match(facts, /2\.0 KiB int8 vs 8\.0 KiB float \(0\.25×\)/);
  assert.match(facts, /5 int8 ops, 1 float op, 2 quantize\/dequantize/);
  assert.match(facts, /2 flagged/);
  assert.match(facts, /1 unmatched/);
});

test("curves: three series in graph order, non-numbers as gaps", () => {
  const { layers, curves, flagged } = sqnrCurves(TABLE);
  assert.deepEqual(layers, ["conv", "gap", "fc"]);
  assert.deepEqual(curves.map((c) => c.id), CURVES.map((c) => c.id));
  assert.deepEqual(curves[2].values, [null, 42, null]);  // 150 dB: bit-exact, left out
  assert.deepEqual(flagged, [false, true, true]);
  assert.equal(sqnrCurves(TABLE).exact, 1);
  assert.equal(formatParityDb(150), "bit-exact");
  assert.equal(formatParityDb(41.25), "41.3 dB");
});

test("flagged first in the payload's order, then graph order; loss in dB", () => {
  assert.deepEqual(flaggedFirst(TABLE).map((r) => r.layer), ["fc", "gap", "conv"]);
  assert.equal(lossDb(TABLE.rows[2]), 5);
  assert.equal(lossDb({ sqnr_float_sim_db: null, sqnr_float_litert_db: 3 }), null);
});

test("op counts most frequent first", () => {
  assert.deepEqual(opCountRows(TABLE).map((r) => r.op), ["CONV_2D", "ADD", "SOFTMAX"]);
});
