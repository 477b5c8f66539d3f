// Unit tests of frontend/common/format.js and frontend/common/progress.js
// (pure: no DOM). Run by tests/frontend/test_js_units.py: node --test.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  formatBytes, formatDb, formatNumber, isNumber, weightLabel,
} from "../../frontend/common/format.js";
import { evaluationProgress, formatDuration } from "../../frontend/common/progress.js";

test("isNumber takes finite numbers only", () => {
  assert.equal(isNumber(0), true);
  assert.equal(isNumber(-2.5), true);
  for (const value of [NaN, Infinity, -Infinity, null, undefined, "3", [1]]) {
    assert.equal(isNumber(value), false, String(value));
  }
});

test("formatNumber keeps `digits` significant digits, exponent outside [1e-3, 1e5)", () => {
  assert.equal(formatNumber(3.14159), "3.142");
  assert.equal(formatNumber(3.14159, 2), "3.1");
  assert.equal(formatNumber(0), "0");
  assert.equal(formatNumber(123456), "1.23e+5");
  assert.equal(formatNumber(0.0001234), "1.23e-4");
  assert.equal(formatNumber(NaN), "n/a");
  assert.equal(formatNumber(null), "n/a");
});

test("formatBytes scales by 1024 up to GB", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(2048), "2.0 KB");
  assert.equal(formatBytes(150 * 1024 * 1024), "150 MB");
  assert.equal(formatBytes(3 * 1024 ** 4), "3072 GB");
  assert.equal(formatBytes(undefined), "n/a");
});

test("formatDb rounds to 0.1 dB and never prints -0.0", () => {
  assert.equal(formatDb(31.26), "31.3 dB");
  assert.equal(formatDb(-0.01), "0.0 dB");
  assert.equal(formatDb(-3.04), "-3.0 dB");
  assert.equal(formatDb(Infinity), "n/a");
});

test("weightLabel names the kernel only when it is not the usual one", () => {
  assert.equal(weightLabel({ layer: "conv", kernel: "kernel" }), "conv");
  assert.equal(weightLabel({ layer: "sep", kernel: "depthwise_kernel" }), "sep/depthwise_kernel");
});

test("formatDuration: seconds, then minutes, then hours", () => {
  assert.equal(formatDuration(0.2), "1 s");
  assert.equal(formatDuration(89), "89 s");
  assert.equal(formatDuration(600), "10 min");
  assert.equal(formatDuration(7200), "2.0 h");
  assert.equal(formatDuration(-1), "?");
  assert.equal(formatDuration(NaN), "?");
});

test("evaluationProgress estimates the time left from this run's evaluations only", () => {
  assert.equal(evaluationProgress({ status: "complete" }, "Run", "(x)"), null);
  assert.equal(evaluationProgress(null, "Run", "(x)"), null);
  // 10 done, 4 of them reused: 6 fresh in 60 s, so 10 s each, 10 left -> 100 s
  const status = {
    status: "running", evaluations_done: 10, evaluations_total: 20, evaluations_reused: 4,
    evaluation_seconds: 60,
  };
  assert.equal(evaluationProgress(status, "Sweep running", "(first)"),
    "Sweep running: 10 of 20 evaluations, about 2 min left");
  assert.equal(evaluationProgress({ status: "running", evaluations_done: 0 }, "Analysis running", "(calibrating)"),
    "Analysis running: 0 of ? evaluations (calibrating)");
});
