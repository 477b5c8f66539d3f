// Loads the plotly.js bundle shipped in the `plotly` wheel, once, as a classic
// <script> (the bundle is UMD, not an ES module). When the page already holds
// it (the offline report inlines it), nothing is fetched.

let pending = null;

export function loadPlotly(url = "plotly.min.js") {
  if (globalThis.Plotly) {
    return Promise.resolve(globalThis.Plotly);
  }
  if (pending === null) {
    pending = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.async = true;
      script.onload = () => {
        if (globalThis.Plotly) {
          resolve(globalThis.Plotly);
        } else {
          reject(new Error(`${url} loaded but did not define Plotly`));
        }
      };
      script.onerror = () => {
        pending = null;
        reject(new Error(`Could not load the chart library from ${url}`));
      };
      document.head.appendChild(script);
    });
  }
  return pending;
}
