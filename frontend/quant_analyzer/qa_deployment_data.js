// Pure functions over the "deployment" payload (a LiteRT int8 export checked
// against the simulation, mct_logger.export): the headline agreement, the
// facts line, the three SQNR curves along the network, and the rows with the
// flagged nodes first. No DOM and no chart library.
//
//   deploymentHeadline(table)   // "sim → LiteRT: cosine 0.99998, top-1 100.0% ..."
//   sqnrCurves(table)           // { layers, curves: [{ id, name, values }] }
//   flaggedFirst(table)         // rows: flagged (worst loss first), then graph order

import { formatBytes, formatDb, formatNumber, isNumber } from "../common/format.js";

// At or above this SQNR the int8 values are identical (what is left is float
// rounding of the dequantization): shown as "bit-exact", left out of the chart.
export const EXACT_DB = 120;

export const CURVES = [
  { id: "sqnr_float_sim_db", name: "float → simulated" },
  { id: "sqnr_float_litert_db", name: "float → LiteRT" },
  { id: "sqnr_sim_litert_db", name: "simulated → LiteRT" },
];

function percent(value) {
  return isNumber(value) ? `${(100 * value).toFixed(1)}%` : "n/a";
}

// One line per model output: simulation vs LiteRT agreement.
export function deploymentHeadline(table) {
  return (table.outputs || []).map((out) => {
    const parts = [`cosine ${isNumber(out.cosine_sim_litert) ? out.cosine_sim_litert.toFixed(5) : "n/a"}`];
    if (isNumber(out.top1_sim_litert)) {
      parts.push(`top-1 agreement ${percent(out.top1_sim_litert)}`);
    }
    if (isNumber(out.within_one_step)) {
      parts.push(`${percent(out.within_one_step)} of elements within one output step`);
    }
    parts.push(`SQNR ${formatDb(out.sqnr_sim_litert_db)}`);
    return { node: out.node, text: `simulated → LiteRT: ${parts.join(", ")}` };
  });
}

// The loss of LiteRT against the simulation at a row, in dB (positive: LiteRT worse).
export function lossDb(row) {
  return isNumber(row.sqnr_float_sim_db) && isNumber(row.sqnr_float_litert_db)
    ? row.sqnr_float_sim_db - row.sqnr_float_litert_db : null;
}

export function deploymentFacts(table) {
  const counts = table.op_counts || {};
  const int8 = Object.values(counts.int8 || {}).reduce((a, b) => a + b, 0);
  const floats = (counts.float_ops || []).length;
  const facts = [
    `${table.io_dtype} I/O`,
    `.tflite ${formatBytes(table.size_bytes)} int8 vs ${formatBytes(table.float_size_bytes)} float` +
      (isNumber(table.size_bytes) && table.float_size_bytes > 0
        ? ` (${formatNumber(table.size_bytes / table.float_size_bytes, 3)}×)` : ""),
    `${int8} int8 op${int8 === 1 ? "" : "s"}, ${floats} float op${floats === 1 ? "" : "s"}, ` +
      `${counts.conversions ?? 0} quantize/dequantize`,
    `${(table.rows || []).length} nodes compared on ${table.num_samples} samples`,
  ];
  const flagged = (table.flagged || []).length;
  facts.push(flagged ? `${flagged} flagged (LiteRT loses > 1 dB vs the simulation)` : "no node flagged");
  if ((table.unmatched || []).length) {
    facts.push(`${table.unmatched.length} unmatched`);
  }
  return facts;
}

// The three SQNR curves along the network (graph order); non-numbers and
// bit-exact values (>= EXACT_DB) become null gaps, counted in `exact`.
export function sqnrCurves(table) {
  const rows = table.rows || [];
  const shown = (v) => (isNumber(v) && v < EXACT_DB ? v : null);
  return {
    layers: rows.map((r) => r.layer),
    flagged: rows.map((r) => Boolean(r.flagged)),
    curves: CURVES.map((c) => ({ id: c.id, name: c.name, values: rows.map((r) => shown(r[c.id])) })),
    exact: rows.filter((r) => isNumber(r.sqnr_sim_litert_db) && r.sqnr_sim_litert_db >= EXACT_DB).length,
  };
}

// An SQNR for the table: "bit-exact" at or above EXACT_DB.
export function formatParityDb(value) {
  return isNumber(value) && value >= EXACT_DB ? "bit-exact" : formatDb(value);
}

// Rows with the flagged ones first (in the payload's "flagged" order, worst loss
// first), then the others in graph order.
export function flaggedFirst(table) {
  const rows = table.rows || [];
  const order = new Map((table.flagged || []).map((layer, i) => [layer, i]));
  const flagged = rows.filter((r) => order.has(r.layer))
    .sort((a, b) => order.get(a.layer) - order.get(b.layer));
  return [...flagged, ...rows.filter((r) => !order.has(r.layer))];
}

// int8 op counts as table rows, most frequent first.
export function opCountRows(table) {
  const int8 = (table.op_counts || {}).int8 || {};
  return Object.entries(int8).map(([op, count]) => ({ op, count }))
    .sort((a, b) => b.count - a.count || a.op.localeCompare(b.op));
}
