// Unit tests of frontend/quant_analyzer/qa_data.js (pure: no DOM). Run by
// tests/frontend/test_js_units.py: node --test. The findings are also checked
// against Python's ranking on a real analysis in tests/test_report.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  VIEWS, findings, layerRows, normalizeTables, progressText, quantizedHistogram,
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

test("findings never rank a table without the analyzer's ranking (one copy of the rules)", () => {
  const found = findings({ per_layer_sqnr: SQNR }, 2);
  for (const finding of found) {
    assert.deepEqual(finding.items, []);
    assert.equal(finding.note, "Not ranked: this table carries no ranking.");
  }
});

const RULE = "isolated SQNR below 30 dB (8 bits give about 40 dB)";

test("findings follow the ranking the analyzer carries, with its rule", () => {
  const carried = {
    ...SQNR,
    worst_layers: {
      sqnr_isolated: { count: 2, ranked: 3, decisive: true, all_equal: false, ties: 1, headline: true,
        rule: RULE, layers: [{ layer: "conv2", value: 12 }, { layer: "dense", value: 28 }] },
      sqnr_step: { count: 0, ranked: 3, decisive: false, all_equal: false, ties: 0, headline: true,
        rule: "accumulated SQNR dropping by more than 3 dB", layers: [] },
    },
  };
  const found = findings({ per_layer_sqnr: carried });
  assert.deepEqual(found[0].items.map((i) => i.layer), ["conv2", "dense"]);
  assert.equal(found[0].items[0].text, "12.0 dB");
  assert.equal(found[0].rule, RULE);
  assert.deepEqual(found[1].items, []);
  assert.equal(found[1].note, "No layer crosses it.");
  assert.equal(found[1].rule, "accumulated SQNR dropping by more than 3 dB");
});

test("a tie past the threshold says how many layers share it and names no first", () => {
  const tied = {
    rows: [1, 2, 3, 4, 5].map((k) => ({ layer: `conv${k}`, kernel: "kernel", sqnr_db: 20 })),
    worst_layers: { weight_sqnr: { count: 5, ranked: 5, decisive: false, all_equal: true, ties: 5,
      headline: true, rule: "weight SQNR below 35 dB",
      layers: [1, 2, 3, 4, 5].map((k) => ({ layer: `conv${k}`, kernel: "kernel", value: 20 })) } },
  };
  const [finding] = findings({ weight_sqnr: tied });
  assert.deepEqual(finding.items, []);
  assert.equal(finding.note, "All 5 layers past the threshold measure the same (20): none stands out.");
  assert.deepEqual(suspects([finding]), []);
  const two = structuredClone(tied);
  Object.assign(two.worst_layers.weight_sqnr, { count: 3, all_equal: false, ties: 2 });
  two.worst_layers.weight_sqnr.layers[2].value = 30;
  const [partial] = findings({ weight_sqnr: two });
  assert.equal(partial.note, "2 layers tie at 20.");
  assert.equal(partial.decisive, false);
});

test("a score shows the digits its change from FP32 needs", () => {
  const enabled = {
    fp32: 1.0, fully_quantized: 0.99, rows: [{ layer: "a", score: 0.999975 }],
    worst_layers: { enabled: { count: 1, ranked: 1, decisive: true, all_equal: false, ties: 1,
      headline: true, rule: "r", layers: [{ layer: "a", value: 0.999975 }] } },
  };
  const [finding] = findings({ per_layer_quant_enabled: enabled });
  assert.equal(finding.items[0].text, "0.999975 (−2.50e-5)");
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

test("score axes: the eval set's 1/N resolution found, constants get a tight range", async () => {
  const { scoreRange, scoreResolution } = await import("../../frontend/quant_analyzer/qa_charts.js");
  assert.equal(scoreResolution([448 / 449, 447 / 449, 1]), 1 / 449);
  assert.equal(scoreResolution([0.93, 0.9312345]), null);  // not counts
  assert.equal(scoreResolution([1, 1]), null);
  const [low, high] = scoreRange([1, 1, 1]);
  assert.ok(low > 0.99 && high < 1.01, `${low}..${high}`);
  const spanned = scoreRange([0.99, 0.995, 1.0], 1 / 449);
  assert.ok(spanned[0] < 0.99 && spanned[1] > 1.0);
});

test("layerRows carries a PTQ run's AdaRound columns; runs without them have none", () => {
  const layerTable = {
    samples: 20, adaround: true,
    rows: [
      { layer: "conv", class: "Conv2D", quantized: true, adaround_loss_nearest: 0.02,
        adaround_loss: 0.01, adaround_flipped: 0.12 },
      { layer: "flat", class: "Flatten", quantized: false, adaround_loss_nearest: null,
        adaround_loss: null, adaround_flipped: null },
    ],
  };
  const rows = layerRows({ layer_table: layerTable });
  assert.equal(rows[0].adaround_loss, 0.01);
  assert.equal(rows[0].adaround_flipped, 0.12);
  assert.equal(rows[1].adaround_loss, null);
  const plain = layerRows({ layer_table: { samples: 20, rows: [{ layer: "conv", quantized: true }] } });
  assert.equal(plain[0].adaround_loss, undefined);
});
