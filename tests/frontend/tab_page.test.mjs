// Unit tests of frontend/common/tab_page.js's pure helpers. Run by
// tests/frontend/test_js_units.py: node --test.
import assert from "node:assert/strict";
import { test } from "node:test";

import { newestRun, runDescription } from "../../frontend/common/tab_page.js";

const run = (name, ...times) => ({ name, kinds: Object.fromEntries(times.map((t, i) => [`k${i}`, { wall_time: t }])) });

test("single-run tabs (CLE, Compression) open on the run written to last, not the last by name", () => {
  const runs = [run("a_new", 10, 300), run("z_old", 200), run("m_mid", 250)];
  assert.equal(newestRun(runs).name, "a_new");
});

test("a run's description carries the server's label when there is one", () => {
  assert.equal(runDescription("PTQ run", { label: "W8A8, CLE" }), "PTQ run: W8A8, CLE");
  assert.equal(runDescription("sweep", { label: "" }), "sweep");
});
