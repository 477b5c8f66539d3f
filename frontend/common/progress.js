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
