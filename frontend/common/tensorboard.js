// TensorBoard access for the tabs: the plugin's routes (relative URLs only:
// the iframe's <base> points at /data/plugin/<name>/, so --path_prefix works),
// TensorBoard's reload notifications and links to its Graphs tab. Not pure (it
// fetches and talks to the host page), unlike the tabs' *_data.js modules.
//
//   const source = new PluginSource();
//   const { runs, problems } = await source.runs();
//   const { tables } = await source.tables(runs[0].name);
//   onDataReloaded(() => redraw());

export async function fetchJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  if (body === null) {
    throw new Error(`${url} did not return JSON.`);
  }
  return body;
}

// The routes of tb_plugin.dashboard, with per-layer detail rows cached per run version.
export class PluginSource {
  constructor(base = ".") {
    this.base = base;
    this.details = new Map();
  }

  runs() {
    return fetchJson(`${this.base}/runs`);
  }

  tables(run) {
    return fetchJson(`${this.base}/tables?run=${encodeURIComponent(run)}`);
  }

  // The whole row (per-channel fields included) of `row` in table `kind` of `run`.
  detail(run, fingerprint, kind, row) {
    const layer = row.layer ?? row.node ?? (row.members || [])[0];
    const key = JSON.stringify([run, fingerprint, kind, layer, row.kernel ?? null]);
    if (!this.details.has(key)) {
      const params = new URLSearchParams({ run, kind, layer });
      if (row.kernel) {
        params.set("kernel", row.kernel);
      }
      const pending = fetchJson(`${this.base}/detail?${params}`).then((body) => body.row);
      pending.catch(() => this.details.delete(key));
      this.details.set(key, pending);
    }
    return this.details.get(key);
  }
}

// TensorBoard's plugin host protocol (webapp/plugins/plugin_api_host): the
// guest hands the parent a MessagePort; messages are JSON strings
// {type, id, payload, error, isReply}. The host broadcasts
// "experimental.DataReloaded" after each reload of its data (the reload
// button and the auto-reload timer). Calls `callback` on each.
export function onDataReloaded(callback) {
  if (window.parent === window || typeof MessageChannel === "undefined") {
    return () => {};
  }
  const channel = new MessageChannel();
  const listener = (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (!message || message.isReply) {
      return;
    }
    if (message.type === "experimental.DataReloaded") {
      callback();
    }
    // Every request from the host gets a reply, as the protocol expects.
    channel.port1.postMessage(JSON.stringify({
      type: message.type, id: message.id, payload: null, error: null, isReply: true,
    }));
  };
  channel.port1.addEventListener("message", listener);
  channel.port1.start();
  window.parent.postMessage("experimental.bootstrap", "*", [channel.port2]);
  return () => channel.port1.close();
}

// Redraws on TensorBoard's reloads and, while `isLive()` says a run is still
// being written, every `seconds` too (the host reloads every 30 s at most).
export function watch(refresh, isLive, seconds = 3) {
  let busy = false;
  const run = async () => {
    if (busy) {
      return;
    }
    busy = true;
    try {
      await refresh();
    } finally {
      busy = false;
    }
  };
  const stop = onDataReloaded(run);
  const timer = setInterval(() => {
    if (isLive() && document.visibilityState !== "hidden") {
      run();
    }
  }, seconds * 1000);
  return () => {
    stop();
    clearInterval(timer);
  };
}

// The href that opens TensorBoard's Graphs tab on a TensorBoard run (for a new
// window; the Graphs dashboard has no URL key for a node).
export function graphsHref(tbRun) {
  return `../../../#graphs&run=${encodeURIComponent(tbRun)}`;
}

// Opens TensorBoard's Graphs tab, in TensorBoard's own window, on `tbRun`.
// The dashboard takes its run from the URL hash, but its run menu resets to
// the first run when the run list arrives (TensorBoard 2.21), so once the list
// is there the menu is set to `tbRun`. That starts a second graph load beside
// the first run's, and TensorBoard's loader draws whichever finishes last: on a
// busy machine the first run's graph can land after `tbRun`'s and stay drawn
// under a menu that says `tbRun`. So the drawn run (the loader's last finished
// load) is checked too, `tbRun`'s load is asked for again while another run's
// graph is drawn, and the watch ends once menu and graph have agreed for
// `settleMs` (long enough for a load started with `tbRun`'s to finish).
export function openGraphsOn(tbRun, seconds = 60, settleMs = 5000) {
  const top = window.top;
  top.location.hash = `#graphs&run=${encodeURIComponent(tbRun)}`;
  const deadline = Date.now() + seconds * 1000;
  let settledSince = null; // menu and drawn graph on tbRun since then
  let otherSince = null; // menu on tbRun, another run's graph drawn since then
  const tick = () => {
    const dashboard = top.document.querySelector("tf-graph-dashboard");
    const root = dashboard && (dashboard.shadowRoot || dashboard);
    const controls = root && root.querySelector("tf-graph-controls");
    const loader = root && root.querySelector("tf-graph-dashboard-loader");
    const datasets = controls && controls.datasets;
    if (datasets && datasets.length) {
      const index = datasets.findIndex((dataset) => dataset.name === tbRun);
      if (index < 0) {
        return; // no graph logged for that run: the dashboard shows its first
      }
      const drawn = loader && loader._graphRunTag ? loader._graphRunTag.run : null;
      const now = Date.now();
      if (controls._selectedRunIndex !== index) {
        controls.set("_selectedRunIndex", index);
        settledSince = otherSince = null;
      } else if (drawn !== null && drawn !== tbRun) {
        // another run's load finished last: once tbRun's own load has had 2 s to
        // land, ask for it again (a load asked for now finishes after the other)
        settledSince = null;
        otherSince = otherSince === null ? now : otherSince;
        if (now - otherSince > 2000 && loader.selection && loader.selection.run === tbRun) {
          loader.selection = { ...loader.selection };
          otherSince = now;
        }
      } else if (drawn === null) {
        settledSince = otherSince = null;
      } else if (settledSince === null) {
        settledSince = now;
        otherSince = null;
      } else if (now - settledSince > settleMs) {
        return;
      }
    }
    if (Date.now() < deadline) {
      setTimeout(tick, 100);
    }
  };
  tick();
}
