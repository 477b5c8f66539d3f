"""The QuantAnalyzer and CLE tabs under load: route latency and time to first chart.

Two log folders:

- real: MobileNetV2 (alpha 0.35, 96x96, weights=None) quantized by PTQ (CLE on)
  and analyzed by QuantAnalyzer (score: output cosine vs the float model on 32
  random samples), both logged with `set_log_folder`;
- synthetic: 600 layers of 1024 channels, every payload kind at full size,
  written with the library's own payload writer (no model needed).

For each folder a real `tensorboard --logdir` (the default loader, or
`--load_fast`) serves the plugins. Each route is requested once cold (the
first read parses the payload), then `--repeats` times, the routes
interleaved, and `--alone` times each on its own, after the plugin's one-second
listing of the folder expired (what a lone request pays: under the Rust data
server every non-empty listing is a gRPC call of about 40 ms). Time to first chart: from
`page.goto` of the tab in headless Chromium (Debian's) to the first animation
frame after the first plotly chart entered the plugin's frame (the chart
painted), median of 3 fresh browser contexts, with an empty cache and when
the tab is opened again in the same context (plotly.min.js then comes from
the browser's cache: the plugin serves it with a week's max-age, and our
modules with an ETag); also when Playwright, polling from outside, saw it
(later while the page is still busy drawing the rest).

Aims (issues 9 and 27): p50 <= 50 ms per data route, first chart <= 2 s.

Run: python benchmarks/dashboards.py [--repeats 30] [--load-fast true] [--only synthetic]
     python benchmarks/dashboards.py --logdir LOGS   (e.g. mct-logger demo's folder)
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tests.helpers import CHROMIUM, tensorboard_server  # noqa: E402


def real_logs(folder: str, samples: int = 128) -> None:
    import keras

    import mct_logger
    from benchmarks.mobilenet_job import mobilenet_job

    model, data = mobilenet_job(samples)
    probe = data[:32]
    reference = model.predict(probe, verbose=0).astype(np.float64)

    def cosine(m):
        out = np.asarray(m.predict(probe, verbose=0), np.float64)
        return float(np.mean(np.sum(out * reference, -1) /
                             (np.linalg.norm(out, axis=-1) * np.linalg.norm(reference, axis=-1))))

    try:
        mct_logger.set_log_folder(folder, run_name="mobilenet_ptq")
        mct_logger.keras_post_training_quantization(
            model, data, mct_logger.QuantizationConfig(cross_layer_equalization=True))
        mct_logger.set_log_folder(folder, run_name="mobilenet_analyzer")
        analyzer = mct_logger.QuantAnalyzer(
            model, lambda m: m.predict(data[:64], verbose=0), cosine)
        analyzer.analyze(results_dir=os.path.join(folder, "qa_results"))
    finally:
        mct_logger.set_log_folder(None)
    keras.backend.clear_session()


def synthetic_logs(folder: str, layers: int = 600, channels: int = 1024, bins: int = 16) -> None:
    """Every payload kind of a 600-layer, 1024-channel model, written as the library writes them."""
    from mct_logger.tensorboard.events import EventWriter
    from mct_logger.tb_plugin.summary import payload_summary

    rng = np.random.default_rng(0)
    names = [f"block_{i // 3}/conv_{i % 3}" for i in range(layers)]

    def per_channel(scale=1.0):
        return np.round(rng.normal(0, scale, channels), 5).tolist()

    rows = [{"layer": n, "class": "Conv2D", "quantized": True, "inputs": [names[i - 1]] if i else [],
             "sqnr_accumulated_db": 40 - i * 0.04, "sqnr_isolated_db": 40 + rng.normal(),
             "accumulated_step_db": 0.04, "mse_accumulated": 1e-4, "mse_isolated": 1e-5,
             "cosine_accumulated": 0.999} for i, n in enumerate(names)]
    qa = {
        "summary": {"model": "synthetic_600", "status": "complete", "config": {"weight_bits": 8,
                    "activation_bits": 8}, "layers": [{"layer": n, "class": "Conv2D"} for n in names],
                    "evaluations_total": 2 * layers + 3, "evaluations_done": 2 * layers + 3},
        "sensitivity": {"labels": {"fp32": "W32A32", "weights_only": "W8A32",
                                   "activations_only": "W32A8"},
                        "fp32": 0.9, "weights_only": 0.89, "activations_only": 0.85, "complete": True},
        "per_layer_quant_enabled": {"fp32": 0.9, "layers_total": layers, "complete": True,
                                    "rows": [{"layer": n, "class": "Conv2D", "score": 0.9 - rng.uniform(0, 0.02)}
                                             for n in names]},
        "per_layer_quant_disabled": {"fp32": 0.9, "layers_total": layers, "complete": True,
                                     "rows": [{"layer": n, "class": "Conv2D", "score": 0.85 + rng.uniform(0, 0.02)}
                                              for n in names]},
        "per_layer_sqnr": {"samples": 256, "batches": 8, "data": "synthetic", "max_sqnr_db": 200,
                           "rows": rows},
        "per_layer_mse_loss": {"samples": 256, "batches": 8, "normalization": "mean",
                               "rows": [{"layer": n, "mse": 1e-4} for n in names]},
        "min_max_ranges": {
            "activations": [{"layer": n, "key": f"{n}_output_0", "min": 0.0, "max": 6.0, "bitwidth": 8,
                             "is_symmetric": False, "per_channel": False, "scale": 6 / 255, "offset": 0,
                             "observed_min": 0.0, "observed_max": 6.2} for n in names],
            "weights": [{"layer": n, "kernel": "kernel", "key": f"{n}_kernel", "min": -1.0, "max": 1.0,
                         "bitwidth": 8, "is_symmetric": True, "per_channel": True,
                         "channel_min": per_channel(), "channel_max": per_channel(),
                         "observed_min": -1.0, "observed_max": 1.0} for n in names],
        },
        "histograms": {
            "activations": [{"layer": n, "lo": 0.0, "width": 0.05, "counts": rng.integers(0, 99, 128).tolist(),
                             "encoding_min": 0.0, "encoding_max": 6.0, "per_channel_encoding": False}
                            for n in names],
            "weights": [{"layer": n, "kernel": "kernel", "lo": -1.0, "width": 0.01,
                         "counts": rng.integers(0, 99, 200).tolist(), "encoding_min": -1.0,
                         "encoding_max": 1.0, "per_channel_encoding": True,
                         "channels": {"lo": per_channel(), "width": [0.01] * channels,
                                      "counts": rng.integers(0, 20, (channels, bins)).tolist(),
                                      "encoding_min": per_channel(), "encoding_max": per_channel()}}
                        for n in names],
        },
        "weight_sqnr": {"rows": [{"layer": n, "kernel": "kernel", "class": "Conv2D", "bitwidth": 8,
                                  "per_channel_encoding": True, "sqnr_db": 45.0, "channels": channels,
                                  "channel_sqnr_db": per_channel(3)} for n in names]},
    }
    stats = {"min": per_channel(), "max": per_channel(), "mean": per_channel(), "range": per_channel(),
             "relative_range": per_channel(), "dead_channels": [], "outlier_channels": [3, 7],
             "tukey_fence": 4.0, "spread_score": 1.5}
    cle = {
        "weight_ranges": {"cle_applied": True, "reason": None, "layers": [
            {"node": n, "kernel": "kernel", "layer_class": "Conv2D", "channels": channels,
             "before": dict(stats, spread_score=float(rng.uniform(0, 3))),
             "after": dict(stats, spread_score=float(rng.uniform(0, 1)))} for n in names]},
        "scale_factors": {"cle_applied": True, "iterations": 20, "converged": True, "not_equalized": {},
                          "relu6_replaced": [], "float_score_before": None, "float_score_after": None,
                          "sets": [{"members": names[i:i + 2], "kind": "conv-conv", "links": [],
                                    "activations": ["relu"], "scale_factors": [per_channel()]}
                                   for i in range(0, layers - 1, 2)]},
        "high_bias_fold": {"cle_applied": True, "folds": [], "skipped": []},
        "weight_quantization": {"rows": [
            {"layer": n, "kernel": "kernel", "class": "Conv2D", "bitwidth": 8, "per_channel": True,
             "sqnr_db": 45.0, "channels": channels, "channel_sqnr_db": per_channel(3),
             "encoding_min": -1.0, "encoding_max": 1.0,
             "histogram": {"lo": -1.0, "width": 2 / 96, "float": rng.integers(0, 999, 96).tolist(),
                           "quantized": rng.integers(0, 999, 96).tolist()}} for n in names]},
    }
    with EventWriter(os.path.join(folder, "synthetic_analyzer", "quant_analyzer")) as writer:
        for kind, table in qa.items():
            writer.add_summary(payload_summary("quant_analyzer", kind, kind, table))
    with EventWriter(os.path.join(folder, "synthetic_ptq", "02_cross_layer_equalization")) as writer:
        for kind, table in cle.items():
            writer.add_summary(payload_summary("cle", kind, kind, table))


def get(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})) as r:
        size = len(r.read())
    return time.perf_counter() - start, size


def wait_loaded(base: str, plugin: str, runs: int) -> dict:
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}data/plugin/{plugin}/runs") as r:
                listing = json.loads(r.read())
            if len(listing["runs"]) >= runs:
                return listing
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"TensorBoard did not list {runs} {plugin} runs in time")


def percentiles(times: list) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times) * 1e3, times[max(0, int(round(0.95 * len(times))) - 1)] * 1e3


def route_table(base: str, routes: dict, repeats: int, alone: int) -> list:
    """Per route: cold ms, p50/p95 of back-to-back requests (a page's burst, which
    shares one listing of the folder), p50/p95 of requests made alone (each
    after the listing expired), and the response size."""
    from mct_logger.tb_plugin.dashboard import LISTING_SECONDS

    cold = {name: get(base + path) for name, path in routes.items()}
    burst = {name: [] for name in routes}
    for _ in range(repeats):
        for name, path in routes.items():  # interleaved
            burst[name].append(get(base + path)[0])
    single = {name: [] for name in routes}
    for _ in range(alone):
        for name, path in routes.items():
            time.sleep(LISTING_SECONDS + 0.05)
            single[name].append(get(base + path)[0])
    return [(name, cold[name][0] * 1e3, *percentiles(burst[name]), *percentiles(single[name]),
             cold[name][1]) for name in routes]


# Installed in every frame of the page: in the plugin's frame it records the
# wall time of the first animation frame after the first plotly chart entered
# the document, i.e. when that chart is painted.
FIRST_CHART_PROBE = """
if (location.href.includes('plugin_entry')) {
  new MutationObserver((_, observer) => {
    if (document.querySelector('.js-plotly-plot .main-svg')) {
      observer.disconnect();
      requestAnimationFrame(() => {
        window.__firstChartPainted = performance.timeOrigin + performance.now();
      });
    }
  }).observe(document, { subtree: true, childList: true });
}
"""


def first_chart_seconds(base: str, tab: str, tries: int = 3) -> tuple[float, ...]:
    """Medians over fresh browser contexts of (seconds from navigation start to the
    first chart painted in the tab's frame with an empty cache, the same when the
    tab is opened again in that context (plotly.min.js cached, our modules
    revalidated by ETag), seconds until Playwright saw the first one from outside,
    seconds from switching to the tab in a TensorBoard already open on another
    tab (its own start-up, about 1.5 s of script on 2 cores, already done) to the
    first chart painted)."""
    from playwright.sync_api import sync_playwright

    painted, warm, seen, switched = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            for _ in range(tries):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.add_init_script(FIRST_CHART_PROBE)
                for visit in (painted, warm):
                    page = context.new_page()
                    start = time.perf_counter()
                    page.goto(f"{base}#{tab}")
                    frame_locator = page.frame_locator(
                        f'iframe[src*="plugin_entry.html?name={tab}"]')
                    frame_locator.locator(".js-plotly-plot .main-svg").first.wait_for(
                        timeout=120_000)
                    if visit is painted:
                        seen.append(time.perf_counter() - start)
                    frame = next(f for f in page.frames if "plugin_entry" in f.url)
                    frame.wait_for_function("() => window.__firstChartPainted !== undefined")
                    origin = page.evaluate("() => performance.timeOrigin")
                    visit.append((frame.evaluate("() => window.__firstChartPainted") - origin)
                                 / 1e3)
                    page.close()
                page = context.new_page()
                page.goto(f"{base}#scalars")
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(2000)
                start = page.evaluate(f"""() => {{
                    const t = performance.timeOrigin + performance.now();
                    location.hash = "#{tab}";
                    return t; }}""")
                page.frame_locator(f'iframe[src*="plugin_entry.html?name={tab}"]').locator(
                    ".js-plotly-plot .main-svg").first.wait_for(timeout=120_000)
                frame = next(f for f in page.frames if "plugin_entry" in f.url)
                frame.wait_for_function("() => window.__firstChartPainted !== undefined")
                switched.append((frame.evaluate("() => window.__firstChartPainted") - start) / 1e3)
                page.close()
                context.close()
        finally:
            browser.close()
    return (statistics.median(painted), statistics.median(warm), statistics.median(seen),
            statistics.median(switched))


def measure(label: str, folder: str, repeats: int, alone: int, load_fast: str) -> None:
    with tensorboard_server(folder, load_fast) as base:
        qa = wait_loaded(base, "quant_analyzer", 1)
        cle = wait_loaded(base, "cle", 1)
        qa_run = next(r["name"] for r in qa["runs"] if "per_layer_sqnr" in r["kinds"])
        cle_run = cle["runs"][0]["name"]
        tables = json.loads(urllib.request.urlopen(
            f"{base}data/plugin/quant_analyzer/tables?run={urllib.parse.quote(qa_run)}").read())["tables"]
        weight = tables["weight_sqnr"]["rows"][len(tables["weight_sqnr"]["rows"]) // 2]
        cle_layer = json.loads(urllib.request.urlopen(
            f"{base}data/plugin/cle/tables?run={urllib.parse.quote(cle_run)}").read()
        )["tables"]["weight_ranges"]["layers"][0]["node"]
        q = urllib.parse.quote
        routes = {
            "QA /runs": "data/plugin/quant_analyzer/runs",
            "QA /tables": f"data/plugin/quant_analyzer/tables?run={q(qa_run)}",
            "QA /detail weight_sqnr": f"data/plugin/quant_analyzer/detail?run={q(qa_run)}&kind=weight_sqnr"
                                      f"&layer={q(weight['layer'])}",
            "QA /detail histograms": f"data/plugin/quant_analyzer/detail?run={q(qa_run)}&kind=histograms"
                                     f"&layer={q(weight['layer'])}&kernel=kernel",
            "CLE /runs": "data/plugin/cle/runs",
            "CLE /tables": f"data/plugin/cle/tables?run={q(cle_run)}",
            "CLE /detail weight_ranges": f"data/plugin/cle/detail?run={q(cle_run)}&kind=weight_ranges"
                                         f"&layer={q(cle_layer)}",
            "static qa_tab.js": "data/plugin/quant_analyzer/static/quant_analyzer/qa_tab.js",
            "static plotly.min.js": "data/plugin/quant_analyzer/static/plotly.min.js",
        }
        rows = route_table(base, routes, repeats, alone)
        qa_chart = first_chart_seconds(base, "quant_analyzer")
        cle_chart = first_chart_seconds(base, "cle")
    print(f"\n## {label} (--load_fast={load_fast}; {repeats} requests per route back to back, "
          f"{alone} alone)\n")
    print("| route | cold ms | burst p50 ms | burst p95 ms | alone p50 ms | alone p95 ms | bytes (gzip) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, cold, p50, p95, a50, a95, size in rows:
        print(f"| {name} | {cold:.1f} | {p50:.1f} | {p95:.1f} | {a50:.1f} | {a95:.1f} | {size:,} |")
    print("\nTime to the tab's first chart painted, median of 3 browser contexts: "
          "TensorBoard loaded on the tab, empty cache / opened again (plotly cached) / "
          "[until Playwright saw the first from outside the busy page] / switched to from "
          "another tab of an open TensorBoard (empty cache): "
          f"QuantAnalyzer tab {qa_chart[0]:.2f} s / {qa_chart[1]:.2f} s [{qa_chart[2]:.2f} s] / "
          f"{qa_chart[3]:.2f} s, CLE tab {cle_chart[0]:.2f} s / {cle_chart[1]:.2f} s "
          f"[{cle_chart[2]:.2f} s] / {cle_chart[3]:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="back-to-back requests per route")
    parser.add_argument("--alone", type=int, default=10,
                        help="requests per route each made after the folder listing expired")
    parser.add_argument("--load-fast", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--only", choices=["real", "synthetic"], default=None)
    parser.add_argument("--logdir", default=None,
                        help="measure this log folder instead (e.g. the demo's: mct-logger demo)")
    args = parser.parse_args()
    if args.logdir:
        measure(f"{args.logdir}", args.logdir, args.repeats, args.alone, args.load_fast)
        return
    with tempfile.TemporaryDirectory() as root:
        if args.only in (None, "real"):
            real = os.path.join(root, "real")
            start = time.perf_counter()
            real_logs(real)
            print(f"MobileNetV2 PTQ + QuantAnalyzer logged in {time.perf_counter() - start:.1f} s")
            measure("MobileNetV2 0.35/96: PTQ (CLE) + QuantAnalyzer", real, args.repeats, args.alone,
                    args.load_fast)
        if args.only in (None, "synthetic"):
            synthetic = os.path.join(root, "synthetic")
            synthetic_logs(synthetic)
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(synthetic) for f in fs)
            print(f"\nSynthetic 600-layer, 1024-channel folder: {size / 2**20:.1f} MiB")
            measure("Synthetic: 600 layers x 1024 channels", synthetic, args.repeats, args.alone,
                    args.load_fast)


if __name__ == "__main__":
    main()
