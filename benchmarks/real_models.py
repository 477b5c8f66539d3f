"""PTQ on real-size models against the floor, with and without logging, and peak memory.

Per model (Keras applications, random weights, seeded random inputs in [-1, 1]):

- floor: a freshly built model's first `model.predict` over the calibration data,
  tracing included (PTQ traces too);
- PTQ without logging, and PTQ with `set_log_folder` (every view), per stage;
- their ratios (PTQ / floor, logging / PTQ), peak RSS and the log folder size.

Every measurement runs in its own Python process (model built there, then the
timed part), so peak RSS is that measurement's own: the parent reads it with
`os.wait4` (the child's `ru_maxrss`, what `resource.getrusage(RUSAGE_CHILDREN)`
sums over children). The three kinds of run are interleaved repeat by repeat
(A/B/C, then B/C/A, ...), and the table shows medians. The calibration data is
a zero-argument callable that generates each batch from its own seed, so
nothing but the pipeline decides whether samples are held in memory: the
peak-memory ratio of 1024 vs 128 samples (MobileNetV2 1.0) tells whether it does.

Results go to a JSON-lines file as they come (one line per measurement); a run
given the same file resumes, skipping what is there.

Run:
    python benchmarks/real_models.py                        # all models, 3 repeats
    python benchmarks/real_models.py --models mobilenetv2_035_96 --repeats 3
    python benchmarks/real_models.py --table-only            # the table from the file
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = {
    # name: (application, kwargs, input side, calibration samples)
    "mobilenetv2_035_96": ("MobileNetV2", {"alpha": 0.35}, 96, 256),
    "mobilenetv2_100_224": ("MobileNetV2", {"alpha": 1.0}, 224, 128),
    "mobilenetv2_100_224_1024": ("MobileNetV2", {"alpha": 1.0}, 224, 1024),
    "resnet50_224": ("ResNet50", {}, 224, 128),
    "efficientnetb0_224": ("EfficientNetB0", {}, 224, 128),
}
MODES = ("floor", "ptq", "ptq_logging")
BATCH = 32
DEFAULT_OUT = "/tmp/mct_real_models.jsonl"


# ---------------------------------------------------------------- one measurement (child)


def calibration_data(side: int, samples: int):
    """A zero-argument callable returning an iterator of (BATCH, side, side, 3) batches,
    each generated from its own seed (the same data on every call)."""
    import numpy as np

    def batches():
        for start in range(0, samples, BATCH):
            n = min(BATCH, samples - start)
            rng = np.random.default_rng(start)
            yield rng.uniform(-1, 1, (n, side, side, 3)).astype("float32")

    return batches


def measure(name: str, mode: str) -> dict:
    """Builds the model, then times `mode`; returns the figures (child process)."""
    import resource

    import keras

    import mct_logger

    app, kwargs, side, samples = MODELS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, app)(
        input_shape=(side, side, 3), weights=None, **kwargs)
    data = calibration_data(side, samples)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"model": name, "mode": mode, "samples": samples,
              "parameters": int(model.count_params())}
    if mode == "floor":
        start = time.perf_counter()
        model.predict(((batch,) for batch in data()), verbose=0)  # Keras takes (x,) tuples
        result["seconds"] = time.perf_counter() - start
    else:
        config = mct_logger.QuantizationConfig(batch_size=BATCH, num_calibration_samples=samples)
        folder = tempfile.mkdtemp(prefix="mct_real_models_") if mode == "ptq_logging" else None
        mct_logger.set_log_folder(folder)
        try:
            start = time.perf_counter()
            _, info = mct_logger.keras_post_training_quantization(model, data, config)
            result["seconds"] = time.perf_counter() - start
        finally:
            mct_logger.set_log_folder(None)
        result["stage_seconds"] = info.stage_seconds
        result["listener_seconds"] = info.listener_seconds
        if folder is not None:
            result["log_megabytes"] = sum(
                os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(folder) for f in files) / 1e6
            shutil.rmtree(folder, ignore_errors=True)
    result["rss_before_timed_mb"] = rss_before / 1024
    return result


# ---------------------------------------------------------------- the driver (parent)


def run_child(name: str, mode: str, timeout: float) -> dict:
    """One measurement in a fresh process; adds its peak RSS from `os.wait4`."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", name, mode, out.name],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                return {"model": name, "mode": mode, "error": f"timeout after {timeout:.0f} s"}
            time.sleep(0.2)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read()
        if process.returncode != 0:
            return {"model": name, "mode": mode, "error": stderr.strip().splitlines()[-1:]}
        result = json.load(out)
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_all(models, repeats: int, path: str, timeout: float) -> None:
    done = {(r["model"], r["mode"], r["repeat"]) for r in load(path) if "error" not in r}
    for name in models:
        for repeat in range(repeats):
            order = MODES[repeat % len(MODES):] + MODES[:repeat % len(MODES)]  # A/B/C, B/C/A...
            for mode in order:
                if (name, mode, repeat) in done:
                    continue
                result = run_child(name, mode, timeout)
                result["repeat"] = repeat
                with open(path, "a") as f:
                    f.write(json.dumps(result) + "\n")
                print(f"{name:<26}{mode:<13}repeat {repeat}: "
                      + (f"{result['seconds']:.1f} s, peak {result['peak_rss_mb']:.0f} MB"
                         if "seconds" in result else f"ERROR {result['error']}"), flush=True)


def _median(rows, key, sub=None):
    values = [r[key] if sub is None else r[key].get(sub, 0.0) for r in rows if key in r]
    return statistics.median(values) if values else float("nan")


def table(path: str) -> str:
    rows = [r for r in load(path) if "error" not in r]
    lines = []
    head = (f"{'model':<26}{'n':>5}{'runs':>6}{'floor s':>9}{'PTQ s':>8}{'+log s':>8}"
            f"{'PTQ/floor':>10}{'log/PTQ':>9}{'log/floor':>10}"
            f"{'RSS floor':>10}{'RSS PTQ':>9}{'RSS log':>9}{'log MB':>8}")
    lines += [head, "-" * len(head)]
    medians = {}
    for name in MODELS:
        by_mode = {m: [r for r in rows if r["model"] == name and r["mode"] == m] for m in MODES}
        if not any(by_mode.values()):
            continue
        f, p, g = (_median(by_mode[m], "seconds") for m in MODES)
        rss = [_median(by_mode[m], "peak_rss_mb") for m in MODES]
        medians[name] = rss
        runs = "/".join(str(len(by_mode[m])) for m in MODES)
        lines.append(
            f"{name:<26}{MODELS[name][3]:>5}{runs:>6}{f:>9.1f}{p:>8.1f}{g:>8.1f}"
            f"{p / f:>10.2f}{g / p:>9.2f}{g / f:>10.2f}"
            f"{rss[0]:>10.0f}{rss[1]:>9.0f}{rss[2]:>9.0f}"
            f"{_median(by_mode['ptq_logging'], 'log_megabytes'):>8.1f}")
    lines.append("(seconds and peak RSS in MB: medians; runs = floor/PTQ/+log measurements)")
    for name in MODELS:
        for mode in ("ptq", "ptq_logging"):
            picked = [r for r in rows if r["model"] == name and r["mode"] == mode]
            if not picked:
                continue
            stages = list(picked[0]["stage_seconds"])
            parts = []
            for stage in stages:
                work = _median(picked, "stage_seconds", stage)
                listen = _median(picked, "listener_seconds", stage)
                parts.append(f"{stage} {work:.1f}" + (f"+{listen:.1f}" if listen >= 0.05 else ""))
            lines.append(f"  {name} {mode} stages (work+listeners, s): " + ", ".join(parts))
    if "mobilenetv2_100_224" in medians and "mobilenetv2_100_224_1024" in medians:
        small, large = medians["mobilenetv2_100_224"], medians["mobilenetv2_100_224_1024"]
        lines.append("peak RSS 1024 vs 128 samples (MobileNetV2 1.0, 224): " + ", ".join(
            f"{m} {b / a:.2f}" for m, a, b in zip(MODES, small, large)))
    return "\n".join(lines)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        result = measure(sys.argv[2], sys.argv[3])
        with open(sys.argv[4], "w") as f:
            json.dump(result, f)
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from: {', '.join(MODELS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON-lines results (resumed)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if not args.table_only:
        run_all(models, args.repeats, args.out, args.timeout)
    print(table(args.out))


if __name__ == "__main__":
    main()
