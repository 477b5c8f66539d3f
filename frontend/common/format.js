// Number and unit formatting the tabs share: SQNR in dB, byte sizes, plain
// numbers ("n/a" for anything not a finite number), and the name a weight
// tensor's row is shown under. Pure functions, no DOM.
//
//   formatDb(31.26)      // "31.3 dB"
//   formatBytes(2048)    // "2.0 KB"
//   formatNumber(1e-5)   // "1.00e-5"

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

export function formatBytes(value) {
  if (!isNumber(value)) {
    return "n/a";
  }
  const units = ["B", "KB", "MB", "GB"];
  let index = 0;
  let scaled = value;
  while (Math.abs(scaled) >= 1024 && index < units.length - 1) {
    scaled /= 1024;
    index += 1;
  }
  return `${index ? scaled.toFixed(scaled >= 100 ? 0 : 1) : scaled} ${units[index]}`;
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
