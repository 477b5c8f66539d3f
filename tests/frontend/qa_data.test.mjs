// Unit tests of frontend/quant_analyzer/qa_data.js (pure: no DOM). Run by
// tests/frontend/test_js_units.py: node --test. The findings are also checked
// against Python's ranking on a real analysis in tests/test_report.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  VIEWS, findings, layerRows, normalizeTables, progressText, quantizedHistogram, rankRows,
  runKind, sensitivityVerdict, suspects,
} from "../../frontend/quant_analyzer/qa_data.js";

const SQNR = {
  samples: 64, data: "calibration data", max_sqnr_db: 200,
  rows: [
    { layer: "conv1", class: "Conv2D", quantized: true, sqnr_isolated_db: 42, sqnr_accumulated_db: 40, accumulated_step_db: 1 },
    { layer: "conv2", class: "Conv2D", quantized: true, sqnr_isolated_db: 12, sqnr_accumulated_db: 15, accumulated_step_db: 25 },
    { layer: "dense", class: "Dense", quantized: true, sqnr_isolated_db: 28, sqnr_accumulated_db: 14, accumulated_step_db: 1 },
    { layer: "flatten", class: "Flatten", quantized: false, sqnr_isolated_db: 5, sqnr_accumulated_db: 14 },
  ],
};

test("VIEWS lists each view once with the payload kinds it shows", () => {
  const ids = VIEWS.map((v) => v.id);
  assert.equal(new Set(ids).size, ids.length);
  assert.deepEqual(VIEWS.find((v) => v.id === "sqnr").kinds, ["per_layer_sqnr"]);
});

test("rankRows: worst first, rows without a number dropped", () => {
  const rows = [{ v: 3 }, { v: null }, { v: 1 }, { v: NaN }, { v: 2 }];
  assert.deepEqual(rankRows(rows, (r) => r.v, false).map((e) => e.value), [1, 2, 3]);
  assert.deepEqual(rankRows(rows, (r) => r.v, true).map((e) => e.value), [3, 2, 1]);
  assert.deepEqual(rankRows(undefined, (r) => r.v, true), []);
});

test("findings rank an older payload's rows here: quantized layers only, worst first", () => {
  const found = findings({ per_layer_sqnr: SQNR }, 2);
  const isolated = found.find((f) => f.id === "sqnr_isolated");
  assert.deepEqual(isolated.items.map((i) => i.layer), ["conv2", "dense"]);
  assert.equal(isolated.items[0].text, "12.0 dB");
  assert.equal(isolated.decisive, true);
  const step = found.find((f) => f.id === "sqnr_step");
  assert.deepEqual(step.items.map((i) => i.text), ["25.0 dB lost", "1.0 dB lost"]);
  assert.equal(step.decisive, true);
  assert.equal(step.note, undefined);
  const tied = { ...SQNR, rows: SQNR.rows.map((r) => ({ ...r, sqnr_isolated_db: r.layer === "conv1" ? 30 : 12 })) };
  const first = findings({ per_layer_sqnr: tied })[0];
  assert.equal(first.decisive, false);
  assert.equal(first.note, "The first layers tie.");
});

test("findings follow the ranking the analyzer carries (worst_layers), not their own", () => {
  const carried = {
    ...SQNR,
    worst_layers: {
      sqnr_isolated: { count: 3, decisive: true, all_equal: false, layers: [{ layer: "dense", value: 28 }] },
      sqnr_step: { count: 3, decisive: false, all_equal: true, layers: [{ layer: "conv1", value: 1 }] },
    },
  };
  const found = findings({ per_layer_sqnr: carried });
  assert.deepEqual(found[0].items.map((i) => i.layer), ["dense"]);
  assert.deepEqual(found[1].items, []);
  assert.match(found[1].note, /^Every layer measures the same \(1\): nothing stands out\.$/);
});

test("suspects: layers worst by the most decisive layer-level measures", () => {
  const list = [
    { id: "sqnr_isolated", title: "A", decisive: true, items: [{ layer: "conv2" }] },
    { id: "weight_sqnr", title: "B", decisive: true, items: [{ layer: "conv2" }] },
    { id: "enabled", title: "C", decisive: true, items: [{ layer: "dense" }] },
    { id: "disabled", title: "D", decisive: false, items: [{ layer: "dense" }] },
    { id: "mse", title: "E", decisive: true, items: [{ layer: "dense" }] },
  ];
  assert.deepEqual(suspects(list), [
    { layer: "conv2", measures: ["A", "B"] },
    { layer: "dense", measures: ["C"] },
  ]);
});

test("sensitivityVerdict says which side costs more", () => {
  const labels = { weights_only: "W8", activations_only: "A8", fully_quantized: "W8A8" };
  assert.match(sensitivityVerdict({ fp32: 0.9, weights_only: 0.89, activations_only: 0.7, labels }),
    /more sensitive to activation quantization \(A8 loses 0\.2, W8 0\.01\)/);
  assert.match(sensitivityVerdict({ fp32: 0.9, weights_only: 0.6, activations_only: 0.89, labels }),
    /more sensitive to weight quantization/);
  assert.match(sensitivityVerdict({ fp32: 0.9, weights_only: 0.895, activations_only: 0.897, labels, fully_quantized: 0.89 }),
    /cost about the same\. Fully quantized \(W8A8\): 0\.89, 0\.01 below FP32\./);
  assert.equal(sensitivityVerdict(null), "The sensitivity analysis did not finish.");
  assert.equal(sensitivityVerdict({ fp32: 1, weights_only: null, activations_only: 1, labels }),
    "The sensitivity analysis did not finish.");
});

const LAYER_TABLE = {
  samples: 32,
  rows: [
    { layer: "conv1", class: "Conv2D", quantized: true, sqnr_isolated_db: 41, sqnr_accumulated_db: 40,
      cosine: 0.9999, encoding_min: -1, encoding_max: 2, activation_bits: 8,
      weight_min: -0.5, weight_max: 0.4, weight_bits: 8, weight_per_channel: true },
    { layer: "dense", class: "Dense", quantized: true, sqnr_isolated_db: 18, sqnr_accumulated_db: 15,
      cosine: 0.995, encoding_min: 0, encoding_max: 6, activation_bits: 8 },
    { layer: "flatten", class: "Flatten", quantized: false },
  ],
};

test("normalizeTables shows a PTQ run's layer table through the SQNR and ranges views", () => {
  const tables = normalizeTables({ layer_table: LAYER_TABLE });
  assert.deepEqual(tables.per_layer_sqnr.rows.map((r) => r.layer), ["conv1", "dense"]);
  assert.equal(tables.per_layer_sqnr.rows[1].cosine_accumulated, 0.995);
  assert.deepEqual(tables.min_max_ranges.activations.map((r) => [r.layer, r.min, r.max, r.bitwidth]),
    [["conv1", -1, 2, 8], ["dense", 0, 6, 8]]);
  assert.deepEqual(tables.min_max_ranges.weights.map((r) => r.layer), ["conv1"]);
  const analyzer = { per_layer_sqnr: SQNR };
  assert.deepEqual(normalizeTables(analyzer), analyzer);
});

test("runKind and progressText", () => {
  assert.equal(runKind({ summary: {} }), "QuantAnalyzer");
  assert.equal(runKind({ layer_table: LAYER_TABLE }), "PTQ");
  assert.equal(runKind({}), "unknown");
  assert.equal(progressText({ status: "complete" }), null);
  assert.equal(progressText({ status: "running", evaluations_done: 0, evaluations_total: 9 }),
    "Analysis running: 0 of 9 evaluations (calibrating and measuring per-layer errors first)");
});

test("layerRows flag layers against THRESHOLDS, in graph order", () => {
  const rows = layerRows({
    layer_table: LAYER_TABLE,
    weight_sqnr: { rows: [{ layer: "conv1", sqnr_db: 30 }, { layer: "conv1", sqnr_db: 50 }] },
    per_layer_quant_enabled: { fp32: 1.0, rows: [{ layer: "dense", score: 0.98 }] },
  });
  assert.deepEqual(rows.map((r) => r.layer), ["conv1", "dense", "flatten"]);
  assert.equal(rows[0].weight_sqnr_db, 30); // the worse kernel
  assert.deepEqual(rows[0].flags.map((f) => [f.key, f.severity]), [["weight_sqnr_db", 1]]);
  assert.deepEqual(rows[1].flags.map((f) => [f.key, f.severity]),
    [["sqnr_isolated_db", 2], ["sqnr_accumulated_db", 1], ["cosine", 1], ["enabled_drop", 2]]);
  assert.equal(rows[1].severity, 2);
  assert.equal(rows[2].severity, 0);
});

test("quantizedHistogram moves each bin's count to its grid point, clipped at the ends", () => {
  // bins of width 1 over [0, 8), centres 0.5 ... 7.5; a 2-bit grid over [2, 5]: points 2, 3, 4, 5.
  // Centres below 2 clip to 2, above 5 to 5; 2.5 -> 3, 3.5 -> 4, 4.5 -> 5 (halves round up).
  const hist = { lo: 0, width: 1, counts: [1, 1, 1, 1, 1, 1, 1, 1], encoding_min: 2, encoding_max: 5 };
  const q = quantizedHistogram(hist, 2);
  assert.deepEqual(q.counts, [0, 0, 2, 1, 1, 4, 0, 0]);
  assert.equal(q.counts.reduce((a, b) => a + b), 8);
  assert.equal(quantizedHistogram({ ...hist, encoding_max: 2 }, 2), null);
  assert.equal(quantizedHistogram(hist, null), null);
});
