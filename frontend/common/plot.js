// Drawing a chart: the tabs' shared palette and plotly.js config, and `plot`,
// which draws a `{ data, layout }` spec (built by a tab's *_charts.js) into an
// element with that config. The chart library itself is loaded by
// plotly_loader.js and passed in as `Plotly`.
//
//   plot(Plotly, element, { data: [{ type: "bar", x, y }], layout: {} })

export const COLORS = {
  fp32: "#7f7f7f",
  enabled: "#1f77b4",
  disabled: "#ff7f0e",
  accumulated: "#d62728",
  isolated: "#1f77b4",
  step: "#9467bd",
  mse: "#8c564b",
  range: "#4c78a8",
  weightRange: "#72b7b2",
  observed: "#222222",
  histogram: "#4c78a8",
  encodingMin: "#2ca02c",
  encodingMax: "#d62728",
  weightSqnr: "#54a24b",
  quantized: "#e45756",
  before: "#9d9d9d",
  after: "#4c78a8",
  outlier: "#d62728",
  dead: "#111111",
};

export const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["lasso2d", "select2d"],
};

export function plot(Plotly, element, spec) {
  return Plotly.newPlot(element, spec.data, spec.layout, PLOT_CONFIG);
}
