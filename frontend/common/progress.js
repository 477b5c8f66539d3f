// "N of M evaluations, about T left": the progress line of a long run that
// publishes its evaluation count as it goes (the QuantAnalyzer's summary, the
// compression sweep's score table). Pure functions, no DOM.
//
//   evaluationProgress(table, "Sweep running", "(sampling activations first)")

// `status` "running" -> the line; anything else -> null. Evaluations reused from
// an earlier run (`evaluations_reused`) count as done but not in the time left,
// which is the time per evaluation of this run times those still to do.
export function evaluationProgress(status, label, preparing) {
  if (!status || status.status !== "running") {
    return null;
  }
  const done = status.evaluations_done ?? 0;
  const total = status.evaluations_total;
  const fresh = done - (status.evaluations_reused ?? 0);
  let text = `${label}: ${done} of ${total ?? "?"} evaluations`;
  if (fresh > 0 && Number.isFinite(total) && Number.isFinite(status.evaluation_seconds)) {
    const left = (status.evaluation_seconds / fresh) * (total - done);
    text += `, about ${formatDuration(left)} left`;
  } else {
    text += ` ${preparing}`;
  }
  return text;
}

// "<label> interrupted at N of M evaluations (no progress since 20:31:05; process
// 123 on host stopped)": a run that stopped without finishing, marked by itself
// (SIGTERM, Ctrl-C) or by the server (its process is gone or stopped beating,
// `interrupted`). null for any other status.
export function interruptedText(status, label) {
  if (!status || status.status !== "interrupted") {
    return null;
  }
  const done = status.evaluations_done ?? 0;
  const total = status.evaluations_total ?? "?";
  const found = status.interrupted || {};
  const since = Number.isFinite(found.heartbeat ?? status.heartbeat)
    ? `no progress since ${formatClock(found.heartbeat ?? status.heartbeat)}` : null;
  const why = found.reason || status.error || null;
  const detail = [since, why].filter(Boolean).join("; ");
  return `${label} interrupted at ${done} of ${total} evaluations${detail ? ` (${detail})` : ""}`;
}

// A Unix time as the browser's local time, with the date when not today.
export function formatClock(seconds) {
  const when = new Date(seconds * 1000);
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return when.toDateString() === new Date().toDateString()
    ? time : `${when.toLocaleDateString()} ${time}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return "?";
  }
  if (seconds < 90) {
    return `${Math.max(1, Math.round(seconds))} s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min`;
  }
  return `${(seconds / 3600).toFixed(1)} h`;
}
