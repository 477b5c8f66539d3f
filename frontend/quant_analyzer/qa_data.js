// Pure functions over the QuantAnalyzer payload tables: rankings, headline
// findings and the layer table's flags (number formatting is common/format.js).
// No DOM and no chart library, so the offline report and the TensorBoard tab
// compute the same findings.
//
// `tables` maps a payload kind ("per_layer_sqnr", "sensitivity"...) to its
// table, exactly as mct_logger.analyzer writes it.

import { formatDb, formatNumber, isNumber, weightLabel } from "../common/format.js";
import { evaluationProgress } from "../common/progress.js";

export const VIEWS = [
  { id: "layers", title: "Layers", kinds: ["layer_table", "per_layer_sqnr", "min_max_ranges"] },
  { id: "sensitivity", title: "Sensitivity", kinds: ["sensitivity"] },
  {
    id: "per-layer",
    title: "Per-layer quantizers",
    kinds: ["per_layer_quant_enabled", "per_layer_quant_disabled"],
  },
  { id: "sqnr", title: "SQNR", kinds: ["per_layer_sqnr"] },
  { id: "mse", title: "MSE", kinds: ["per_layer_mse_loss"] },
  { id: "ranges", title: "Min/max ranges", kinds: ["min_max_ranges"] },
  { id: "histograms", title: "Histograms", kinds: ["histograms"] },
  { id: "weights", title: "Weight SQNR", kinds: ["weight_sqnr"] },
  { id: "deployment", title: "Deployment", kinds: ["deployment"] },
];

// A measure's ranking as the analyzer publishes it in its table ("worst_layers",
// computed once by mct_logger.analyzer.worst_layers; the TensorBoard plugin ranks
// older logs' tables again with the same rules): { count, entries: [{ row, value }]
// (worst first), decisive, allEqual, ties, headline, rule }. A table without it is
// not ranked here (never ranked by a second copy of the rules).
function ranking(table, id, rows) {
  const carried = table.worst_layers && table.worst_layers[id];
  if (!carried) {
    return { count: 0, entries: [], decisive: false, allEqual: false, ties: 0, headline: false,
      rule: null, unranked: true };
  }
  const entries = carried.layers
    .map((entry) => ({
      row: (rows || []).find((row) => row.layer === entry.layer &&
        (entry.kernel === undefined || row.kernel === entry.kernel)),
      value: entry.value,
    }))
    .filter((entry) => entry.row);
  return {
    count: carried.count, entries, decisive: carried.decisive, allEqual: carried.all_equal,
    ties: carried.ties ?? 0, headline: carried.headline ?? true, rule: carried.rule ?? null,
  };
}

// A finding's worst layers past its stated rule, or a plain sentence saying none
// is; a tie says how many layers share the first value (it names no layer first).
function finish(finding, ranked, k, toItem) {
  finding.headline = ranked.headline;
  finding.rule = ranked.rule;
  finding.items = [];
  finding.decisive = false;
  if (ranked.unranked) {
    finding.note = "Not ranked: this table carries no ranking.";
    return finding;
  }
  if (ranked.headline && ranked.count === 0) {
    finding.note = "No layer crosses it.";
    return finding;
  }
  if (ranked.allEqual) {
    finding.note = `All ${ranked.count} layers${ranked.headline ? " past the threshold" : ""} ` +
      `measure the same (${formatNumber(ranked.entries[0].value, 6)}): none stands out.`;
    return finding;
  }
  finding.items = ranked.entries.slice(0, k).map(toItem);
  finding.decisive = ranked.decisive;
  if (ranked.ties > 1) {
    finding.note = `${ranked.ties} layers tie at ${formatNumber(ranked.entries[0].value, 6)}.`;
  }
  if (!ranked.headline) {
    finding.note = "For reference (no threshold: it depends on each output's scale).";
  } else if (ranked.rule) {
    finding.rule = ranked.rule;
  }
  return finding;
}

// The headline findings: for each measure, its worst layers (k of them, at most
// the 10 a table carries).
// Each finding: { id, view, title, explanation, items: [{ layer, label, value, text }],
// decisive, note }.
export function findings(tables, k = 5) {
  const result = [];
  const sqnr = tables.per_layer_sqnr;
  if (sqnr) {
    result.push(finish({
      id: "sqnr_isolated",
      view: "sqnr",
      title: "Lowest isolated SQNR",
      explanation:
        "Only this layer quantized, fed the float input: where the quantization noise comes from.",
    }, ranking(sqnr, "sqnr_isolated", sqnr.rows), k,
    ({ row, value }) => item(row.layer, value, formatDb(value))));
    result.push(finish({
      id: "sqnr_step",
      view: "sqnr",
      title: "Sharpest drop of the accumulated SQNR",
      explanation:
        "Whole model quantized: how many dB the SQNR loses at this layer compared with its " +
        "inputs, counted at most 49.9 dB (what an 8-bit grid gives), so a lossless layer never ranks.",
    }, ranking(sqnr, "sqnr_step", sqnr.rows), k,
    ({ row, value }) => item(row.layer, value, `${value.toFixed(1)} dB lost`)));
  }
  const enabled = tables.per_layer_quant_enabled;
  if (enabled) {
    result.push(finish({
      id: "enabled",
      view: "per-layer",
      title: "Lowest score with only this layer quantized",
      explanation: "Quantizing this layer alone costs the most. Score (change vs FP32).",
    }, ranking(enabled, "enabled", enabled.rows), k,
    ({ row, value }) => item(row.layer, value, scoreText(value, enabled.fp32))));
  }
  const disabled = tables.per_layer_quant_disabled;
  if (disabled) {
    result.push(finish({
      id: "disabled",
      view: "per-layer",
      title: "Highest score with this layer left in float",
      explanation: "Keeping this layer in float recovers the most. Score (change vs FP32).",
    }, ranking(disabled, "disabled", disabled.rows), k,
    ({ row, value }) => item(row.layer, value, scoreText(value, disabled.fp32))));
  }
  const mse = tables.per_layer_mse_loss;
  if (mse) {
    result.push(finish({
      id: "mse",
      view: "mse",
      title: "Largest MSE (per element)",
      explanation:
        "Whole model quantized. MSE depends on each output's scale: compare layers by SQNR.",
    }, ranking(mse, "mse", mse.rows), k,
    ({ row, value }) => item(row.layer, value, formatNumber(value, 3))));
  }
  const weights = tables.weight_sqnr;
  if (weights) {
    result.push(finish({
      id: "weight_sqnr",
      view: "weights",
      title: "Lowest weight SQNR",
      explanation: "Quantized kernel against the float kernel.",
    }, ranking(weights, "weight_sqnr", weights.rows), k,
    ({ row, value }) => item(row.layer, value, formatDb(value), weightLabel(row))));
  }
  const ranges = tables.min_max_ranges;
  if (ranges) {
    result.push(finish({
      id: "widest_range",
      view: "ranges",
      title: "Widest activation encodings",
      explanation: "A wide range means a coarse grid for the values that matter.",
    }, ranking(ranges, "widest_range", ranges.activations), k,
    ({ row, value }) =>
      item(row.layer, value, `[${formatNumber(row.min, 3)}, ${formatNumber(row.max, 3)}]`)));
  }
  return result;
}

function item(layer, value, text, label = layer) {
  return { layer, label, value, text };
}

// The score with enough digits to show its change from FP32 (0.99997, not "1"),
// and the change itself.
function scoreText(score, fp32) {
  if (!isNumber(fp32)) {
    return formatNumber(score);
  }
  const change = score - fp32;
  const sign = change >= 0 ? "+" : "−";
  return `${formatScoreBeside(score, change)} (${sign}${formatNumber(Math.abs(change), 3)})`;
}

export function formatScoreBeside(score, change) {
  const scale = Math.max(Math.abs(score), 1e-300);
  const digits = change !== 0 && isNumber(change)
    ? Math.min(12, Math.max(4, Math.ceil(Math.log10(scale / Math.abs(change))) + 2)) : 4;
  return formatNumber(score, digits);
}

// Layers ranked worst by the most measures (the measures that count the
// layer-level tests: SQNR, enable/disable, weight SQNR; MSE and ranges depend
// on scale and are left out).
const SUSPECT_MEASURES = new Set(["sqnr_isolated", "sqnr_step", "enabled", "disabled", "weight_sqnr"]);

export function suspects(findingList) {
  const byLayer = new Map();
  for (const finding of findingList) {
    if (!SUSPECT_MEASURES.has(finding.id) || !finding.decisive || finding.items.length === 0) {
      continue;
    }
    const { layer } = finding.items[0];
    if (!byLayer.has(layer)) {
      byLayer.set(layer, []);
    }
    byLayer.get(layer).push(finding.title);
  }
  return [...byLayer.entries()]
    .map(([layer, measures]) => ({ layer, measures }))
    .sort((a, b) => b.measures.length - a.measures.length);
}

// One sentence on whether weights or activations hurt more.
export function sensitivityVerdict(table) {
  if (!table || !isNumber(table.fp32)) {
    return "The sensitivity analysis did not finish.";
  }
  const { fp32, weights_only: w, activations_only: a, labels } = table;
  if (!isNumber(w) || !isNumber(a)) {
    return "The sensitivity analysis did not finish.";
  }
  const dropW = fp32 - w;
  const dropA = fp32 - a;
  const scale = Math.max(Math.abs(fp32), 1e-12);
  const full = table.fully_quantized;
  const total = isNumber(full)
    ? ` Fully quantized (${labels.fully_quantized}): ${formatScoreBeside(full, fp32 - full)}, ` +
      (fp32 === full ? "the same as FP32." : `${formatNumber(fp32 - full, 3)} below FP32.`)
    : "";
  return sideVerdict(dropW, dropA, scale, labels) + total;
}

function sideVerdict(dropW, dropA, scale, labels) {
  if (Math.abs(dropW - dropA) <= 0.01 * scale) {
    return (
      `Weights (${labels.weights_only}) and activations (${labels.activations_only}) ` +
      "cost about the same."
    );
  }
  if (dropA > dropW) {
    return (
      `The model is more sensitive to activation quantization (${labels.activations_only} ` +
      `loses ${formatNumber(dropA, 3)}, ${labels.weights_only} ${formatNumber(dropW, 3)}): ` +
      "weight-side fixes such as CLE or AdaRound will help less than better activation ranges."
    );
  }
  return (
    `The model is more sensitive to weight quantization (${labels.weights_only} loses ` +
    `${formatNumber(dropW, 3)}, ${labels.activations_only} ${formatNumber(dropA, 3)}): ` +
    "try per-channel weights, cross-layer equalization or more weight bits."
  );
}

// ------------------------------------------------------------------ PTQ runs

// The tables of a run as the views read them. A PTQ run logs one
// "layer_table"; its SQNR and encoding ranges are shown through the same
// views as an analyzer run's "per_layer_sqnr" and "min_max_ranges".
export function normalizeTables(tables) {
  const result = { ...tables };
  const layers = tables.layer_table;
  if (!layers) {
    return result;
  }
  if (!result.per_layer_sqnr) {
    const rows = layers.rows.filter((r) => r.quantized);
    result.per_layer_sqnr = {
      worst_layers: layers.worst_layers,
      samples: layers.samples,
      data: "representative data (the PTQ run's similarity stage)",
      max_sqnr_db: 200,
      rows: rows.map((r) => ({
        layer: r.layer,
        class: r.class,
        quantized: r.quantized,
        sqnr_accumulated_db: r.sqnr_accumulated_db,
        sqnr_isolated_db: r.sqnr_isolated_db,
        accumulated_step_db: r.accumulated_step_db ?? null,
        cosine_accumulated: r.cosine,
      })),
    };
  }
  if (!result.min_max_ranges) {
    result.min_max_ranges = {
      worst_layers: layers.worst_layers,
      activations: layers.rows.filter((r) => isNumber(r.encoding_min)).map((r) => ({
        layer: r.layer, min: r.encoding_min, max: r.encoding_max, bitwidth: r.activation_bits,
      })),
      weights: layers.rows.filter((r) => isNumber(r.weight_min)).map((r) => ({
        layer: r.layer, kernel: "kernel", min: r.weight_min, max: r.weight_max,
        bitwidth: r.weight_bits, per_channel: r.weight_per_channel,
      })),
    };
  }
  return result;
}

// What kind of run a set of tables comes from, for labels.
export function runKind(tables) {
  if (tables.summary || tables.per_layer_quant_enabled || tables.sensitivity) {
    return "QuantAnalyzer";
  }
  return tables.layer_table ? "PTQ" : "unknown";
}

// ------------------------------------------------------------------ progress

// "N of M evaluations, about T left" for an analysis still running, else null.
export function progressText(summary) {
  return evaluationProgress(summary, "Analysis running",
    "(calibrating and measuring per-layer errors first)");
}

// ------------------------------------------------------------------ the layer table

// What a good and a bad value is, stated in the page next to the table.
// 8-bit uniform quantization of a tensor whose grid fits it gives about 40 dB
// (about 6 dB per bit); below 20 dB the error is a tenth of the signal.
export const THRESHOLDS = {
  sqnr_isolated_db: { bad: 20, warn: 30, unit: "dB", low: true,
    text: "isolated SQNR: below 20 dB bad, below 30 dB suspect (8-bit is about 40 dB)" },
  sqnr_accumulated_db: { bad: 10, warn: 20, unit: "dB", low: true,
    text: "accumulated SQNR: below 10 dB bad, below 20 dB suspect" },
  weight_sqnr_db: { bad: 25, warn: 35, unit: "dB", low: true,
    text: "weight SQNR: below 25 dB bad, below 35 dB suspect" },
  cosine: { bad: 0.99, warn: 0.999, low: true,
    text: "cosine: below 0.99 bad, below 0.999 suspect (it saturates near 1: prefer SQNR)" },
  enabled_drop: { bad: 0.01, warn: 0.002, low: false,
    text: "only this layer quantized: a score drop over 1% of FP32 bad, over 0.2% suspect" },
};

function severityOf(key, value) {
  const t = THRESHOLDS[key];
  if (!t || !isNumber(value)) {
    return 0;
  }
  if (t.low) {
    return value < t.bad ? 2 : value < t.warn ? 1 : 0;
  }
  return value > t.bad ? 2 : value > t.warn ? 1 : 0;
}

// One row per layer with every metric the run has, in graph order, each with
// `flags` ([{ key, severity, text }]) and `severity` (0 fine, 1 suspect, 2 bad).
export function layerRows(tables) {
  const rows = new Map();
  const order = [];
  const row = (layer) => {
    if (!rows.has(layer)) {
      rows.set(layer, { layer });
      order.push(layer);
    }
    return rows.get(layer);
  };
  const rowsOf = (table, key = "rows") => (table && Array.isArray(table[key]) ? table[key] : []);
  const lt = tables.layer_table;
  for (const r of rowsOf(lt)) {
    Object.assign(row(r.layer), {
      class: r.class, quantized: r.quantized, note: r.note, graph_node: r.graph_node,
      weight_bits: r.weight_bits, weight_per_channel: r.weight_per_channel,
      weight_min: r.weight_min, weight_max: r.weight_max,
      activation_bits: r.activation_bits, encoding_min: r.encoding_min, encoding_max: r.encoding_max,
      memory_before: r.memory_before, memory_after: r.memory_after,
      sqnr_accumulated_db: r.sqnr_accumulated_db, sqnr_isolated_db: r.sqnr_isolated_db,
      accumulated_step_db: r.accumulated_step_db, cosine: r.cosine,
      // runs that learned their rounding (AdaRound): loss nearest vs learned, share flipped
      adaround_loss_nearest: r.adaround_loss_nearest, adaround_loss: r.adaround_loss,
      adaround_flipped: r.adaround_flipped,
    });
  }
  const sqnr = tables.per_layer_sqnr;
  if (!lt) {
    for (const r of rowsOf(sqnr)) {
      Object.assign(row(r.layer), {
        class: r.class, quantized: r.quantized,
        sqnr_accumulated_db: r.sqnr_accumulated_db, sqnr_isolated_db: r.sqnr_isolated_db,
        accumulated_step_db: r.accumulated_step_db, mse_accumulated: r.mse_accumulated,
        cosine: r.cosine_accumulated,
      });
    }
  }
  const ranges = tables.min_max_ranges;
  if (!lt) {
    for (const r of rowsOf(ranges, "activations")) {
      Object.assign(row(r.layer), {
        activation_bits: r.bitwidth, encoding_min: r.min, encoding_max: r.max,
      });
    }
    for (const r of rowsOf(ranges, "weights")) {
      const target = row(r.layer);
      if (target.weight_bits === undefined) {
        Object.assign(target, {
          weight_bits: r.bitwidth, weight_per_channel: r.per_channel,
          weight_min: r.min, weight_max: r.max,
        });
      }
    }
  }
  const weights = tables.weight_sqnr;
  for (const r of rowsOf(weights)) {
    const target = row(r.layer);
    target.weight_sqnr_db = isNumber(target.weight_sqnr_db)
      ? Math.min(target.weight_sqnr_db, r.sqnr_db) : r.sqnr_db;
  }
  const enabled = tables.per_layer_quant_enabled;
  for (const r of rowsOf(enabled)) {
    row(r.layer).score_enabled = r.score;
  }
  const disabled = tables.per_layer_quant_disabled;
  for (const r of rowsOf(disabled)) {
    row(r.layer).score_disabled = r.score;
  }
  const fp32 = enabled && isNumber(enabled.fp32) ? enabled.fp32 : null;
  return order.map((layer) => {
    const r = rows.get(layer);
    const flags = [];
    const check = (key, value, label) => {
      const severity = severityOf(key, value);
      if (severity) {
        flags.push({ key, severity, text: label });
      }
    };
    check("sqnr_isolated_db", r.sqnr_isolated_db, `isolated SQNR ${formatDb(r.sqnr_isolated_db)}`);
    check("sqnr_accumulated_db", r.sqnr_accumulated_db, `accumulated SQNR ${formatDb(r.sqnr_accumulated_db)}`);
    check("weight_sqnr_db", r.weight_sqnr_db, `weight SQNR ${formatDb(r.weight_sqnr_db)}`);
    check("cosine", r.cosine, `cosine ${isNumber(r.cosine) ? r.cosine.toFixed(4) : ""}`);
    if (fp32 !== null && isNumber(r.score_enabled)) {
      const drop = (fp32 - r.score_enabled) / Math.max(Math.abs(fp32), 1e-12);
      check("enabled_drop", drop, `score ${formatNumber(r.score_enabled)} with only this layer quantized`);
    }
    r.flags = flags;
    r.severity = flags.reduce((worst, f) => Math.max(worst, f.severity), 0);
    return r;
  });
}

// ------------------------------------------------------------------ histograms

// The same values rounded to an encoding's grid, counted on the histogram's
// bins: what the quantizer outputs (clipped at the grid's ends).
export function quantizedHistogram(hist, bitwidth) {
  const lo = hist.encoding_min;
  const hi = hist.encoding_max;
  if (!isNumber(lo) || !isNumber(hi) || !(hi > lo) || !isNumber(bitwidth)) {
    return null;
  }
  const scale = (hi - lo) / (2 ** bitwidth - 1);
  const counts = hist.counts.map(() => 0);
  let bottom = 0;
  let top = counts.length - 1;
  hist.counts.forEach((count, i) => {
    const x = hist.lo + (i + 0.5) * hist.width;
    const q = lo + Math.round((Math.min(Math.max(x, lo), hi) - lo) / scale) * scale;
    const bin = Math.floor((q - hist.lo) / hist.width);
    counts[Math.min(Math.max(bin, bottom), top)] += count;
  });
  return { ...hist, counts };
}
