// Pure functions over the QuantAnalyzer payload tables: rankings, headline
// findings and number formatting. No DOM and no chart library, so the offline
// report and the TensorBoard tab compute the same findings.
//
// `tables` maps a payload kind ("per_layer_sqnr", "sensitivity"...) to its
// table, exactly as mct_logger.analyzer writes it.

export const VIEWS = [
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
];

export function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

export function formatNumber(value, digits = 4) {
  if (!isNumber(value)) {
    return "n/a";
  }
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e5 || magnitude < 1e-3)) {
    return value.toExponential(2);
  }
  return String(Number(value.toPrecision(digits)));
}

export function formatDb(value) {
  if (!isNumber(value)) {
    return "n/a";
  }
  const text = value.toFixed(1);
  return `${text === "-0.0" ? "0.0" : text} dB`;
}

// The name a weight row is shown under: the layer, plus the kernel when the
// layer has more than the usual one (separable convolutions).
export function weightLabel(row) {
  return row.kernel === "kernel" ? row.layer : `${row.layer}/${row.kernel}`;
}

// Rows sorted worst first by `valueOf`, rows without a number dropped.
export function rankRows(rows, valueOf, worstIsHigh) {
  const known = (rows || [])
    .map((row) => ({ row, value: valueOf(row) }))
    .filter((entry) => isNumber(entry.value));
  known.sort((a, b) => (worstIsHigh ? b.value - a.value : a.value - b.value));
  return known;
}

function nearlyEqual(a, b) {
  return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
}

// A finding's worst layers, unless every layer measures the same: a ranking of
// ties would name an arbitrary layer. `decisive` is false when the first two tie.
function finish(finding, ranked, k, toItem) {
  if (ranked.length > 1 && nearlyEqual(ranked[0].value, ranked[ranked.length - 1].value)) {
    finding.items = [];
    finding.note = `Every layer measures the same (${formatNumber(ranked[0].value, 6)}): nothing stands out.`;
    finding.decisive = false;
    return finding;
  }
  finding.items = ranked.slice(0, k).map(toItem);
  finding.decisive = ranked.length === 1 ||
    (ranked.length > 1 && !nearlyEqual(ranked[0].value, ranked[1].value));
  if (ranked.length > 1 && !finding.decisive) {
    finding.note = "The first layers tie.";
  }
  return finding;
}

// The headline findings: for each measure, its worst layers (k of them).
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
    }, rankRows(sqnr.rows.filter((row) => row.quantized), (row) => row.sqnr_isolated_db, false), k,
    ({ row, value }) => item(row.layer, value, formatDb(value))));
    result.push(finish({
      id: "sqnr_step",
      view: "sqnr",
      title: "Sharpest drop of the accumulated SQNR",
      explanation:
        "Whole model quantized: how many dB the SQNR loses at this layer compared with its inputs.",
    }, rankRows(sqnr.rows, (row) => row.accumulated_step_db, true).filter(({ value }) => value > 0), k,
    ({ row, value }) => item(row.layer, value, `−${value.toFixed(1)} dB`)));
  }
  const enabled = tables.per_layer_quant_enabled;
  if (enabled) {
    result.push(finish({
      id: "enabled",
      view: "per-layer",
      title: "Lowest score with only this layer quantized",
      explanation: "Quantizing this layer alone costs the most. Score (change vs FP32).",
    }, rankRows(enabled.rows, (row) => row.score, false), k,
    ({ row, value }) => item(row.layer, value, scoreText(value, enabled.fp32))));
  }
  const disabled = tables.per_layer_quant_disabled;
  if (disabled) {
    result.push(finish({
      id: "disabled",
      view: "per-layer",
      title: "Highest score with this layer left in float",
      explanation: "Keeping this layer in float recovers the most. Score (change vs FP32).",
    }, rankRows(disabled.rows, (row) => row.score, true), k,
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
    }, rankRows(mse.rows, (row) => row.mse, true), k,
    ({ row, value }) => item(row.layer, value, formatNumber(value, 3))));
  }
  const weights = tables.weight_sqnr;
  if (weights) {
    result.push(finish({
      id: "weight_sqnr",
      view: "weights",
      title: "Lowest weight SQNR",
      explanation: "Quantized kernel against the float kernel.",
    }, rankRows(weights.rows, (row) => row.sqnr_db, false), k,
    ({ row, value }) => item(row.layer, value, formatDb(value), weightLabel(row))));
  }
  const ranges = tables.min_max_ranges;
  if (ranges) {
    result.push(finish({
      id: "widest_range",
      view: "ranges",
      title: "Widest activation encodings",
      explanation: "A wide range means a coarse grid for the values that matter.",
    }, rankRows(ranges.activations, (row) => row.max - row.min, true), k,
    ({ row, value }) =>
      item(row.layer, value, `[${formatNumber(row.min, 3)}, ${formatNumber(row.max, 3)}]`)));
  }
  return result;
}

function item(layer, value, text, label = layer) {
  return { layer, label, value, text };
}

function scoreText(score, fp32) {
  if (!isNumber(fp32)) {
    return formatNumber(score);
  }
  const change = score - fp32;
  const sign = change >= 0 ? "+" : "−";
  return `${formatNumber(score)} (${sign}${formatNumber(Math.abs(change), 3)})`;
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
