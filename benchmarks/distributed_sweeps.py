"""QuantAnalyzer sweeps on Ray workers vs in process, on a two-node Ray cluster.

MobileNetV2 (alpha 0.35, 96x96, weights=None, seeded), W8A8; the analyzer's
4 + 2 x layers evaluations with an `eval_callback` whose cost is mostly waiting,
standing in for a GPU or a remote evaluation: a fixed sleep (default 0.5 s)
plus a real evaluation (`predict`, then the agreement of the top-1 class with
the float model's on 16 images the callback makes itself, inside whichever
process runs it).

Runs, in one process, on one `ray.cluster_utils.Cluster` of two nodes (each
with `--cpus-per-node` logical CPUs; the evaluations mostly wait, so logical
CPUs may exceed the cores):

- local: `evaluators.Local()`;
- Ray with 1, 2 and 4 workers (`evaluators.Ray(address=cluster, num_workers=N)`);
- a kill: a child process runs the analysis on 2 workers and is SIGKILLed once
  half the evaluations are recorded; the analysis then resumes (`resume=True`)
  on 2 workers, evaluating only the missing half.

Prints wall time, speedup over local, the steady speedup once the workers are
up (local seconds per evaluation over Ray's, after Ray's first result: the
issue's "while evaluations dominate", aim >= 0.8 x N), Ray's start-up (cluster
start, and each sweep's time to its first result: workers importing TensorFlow
and rebuilding the simulation, then one evaluation; aim < 10 s), and checks
every Ray run's tables equal the local run's.

Run: python benchmarks/distributed_sweeps.py [--sleep 0.5] [--workers 1 2 4]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# On a shared machine Ray's memory monitor kills workers for other processes' memory
# (a worker OOM-killed is retried, but it muddles the timings): off for this run.
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")

import numpy as np  # noqa: E402

SLEEP = 0.5
TABLES = ("sensitivity.json", "per_layer_quant_enabled.json", "per_layer_quant_disabled.json")
_cache = {}


def build_model(fresh_names: bool = True):
    import keras

    if fresh_names:  # the same automatic names (input_layer...) in every analysis
        keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, 96, 96, 3)).astype("float32")


def calibrate(model):
    model.predict(images(64, 1), batch_size=32, verbose=0)


def evaluate(model):
    """Sleep, then top-1 agreement with the float model on 16 images; the images and
    the reference labels are made here, in the process that evaluates."""
    import keras

    time.sleep(float(os.environ.get("MCT_BENCH_SLEEP", SLEEP)))
    if "labels" not in _cache:
        _cache["x"] = images(16, 2)
        _cache["labels"] = np.argmax(keras.ops.convert_to_numpy(
            build_model(fresh_names=False)(_cache["x"], training=False)), -1)
    # predict traces once per model: the masks are variables, so never again
    out = model.predict(_cache["x"], batch_size=16, verbose=0)
    return float(np.mean(np.argmax(out, -1) == _cache["labels"]))


def analyze(results_dir, evaluator=None, resume=False):
    from mct_logger import QuantAnalyzer

    analyzer = QuantAnalyzer(build_model(), calibrate, evaluate, evaluator=evaluator)
    started = time.perf_counter()
    result = analyzer.analyze(None, results_dir=results_dir, resume=resume)
    return result, time.perf_counter() - started


def evaluation_seconds(result) -> float:
    """Seconds from the first evaluation's start (Ray start-up included) to the end."""
    with open(os.path.join(result.results_dir, "summary.json")) as f:
        return json.load(f)["evaluation_seconds"]


def tables(folder) -> dict:
    return {n: json.loads(open(os.path.join(folder, n)).read()) for n in TABLES}


def child(address: str, results_dir: str) -> None:
    """The run that gets killed: 2 Ray workers on the cluster at `address`."""
    from mct_logger import evaluators

    analyze(results_dir, evaluators.Ray(address=address, num_workers=2))


def recorded(path) -> int:
    try:
        with open(path) as f:
            scores = json.load(f).get("scores", {})
    except (OSError, ValueError):
        return 0
    return sum(len(v) for v in scores.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=SLEEP)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("ADDRESS", "RESULTS_DIR"))
    args = parser.parse_args()
    os.environ["MCT_BENCH_SLEEP"] = str(args.sleep)
    if args.child:
        child(*args.child)
        return
    import ray
    from ray.cluster_utils import Cluster

    from mct_logger import evaluators
    from mct_logger.evaluators.ray_workers import LOCAL_SYSTEM_CONFIG

    folder = tempfile.mkdtemp(prefix="distributed_sweeps_")
    local, local_seconds = analyze(os.path.join(folder, "local"))
    total = 4 + 2 * len(local.layers)
    print(f"MobileNetV2 0.35 96x96: {len(local.layers)} quantized layers, {total} evaluations, "
          f"eval_callback = {args.sleep} s sleep + top-1 on 16 images")

    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": args.cpus_per_node, "include_dashboard": False,
        "_system_config": LOCAL_SYSTEM_CONFIG})  # workers at normal priority
    cluster.add_node(num_cpus=args.cpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    cluster_seconds = time.perf_counter() - started

    local_eval = evaluation_seconds(local)
    local_per_eval = local_eval / total
    rows = [("local", local_seconds, 1.0, local_eval, 1.0, None, None, "-")]
    for n in args.workers:
        evaluator = evaluators.Ray(address=cluster.address, num_workers=n)
        out = os.path.join(folder, f"ray{n}")
        result, seconds = analyze(out, evaluator)
        same = tables(out) == tables(os.path.join(folder, "local"))
        assert result.status == "complete"
        phase = evaluation_seconds(result)
        first = evaluator.last_sweep["first_result_seconds"]
        # after the first result every worker is up: seconds per evaluation from there
        steady = local_per_eval / ((phase - first) / max(total - 1, 1))
        rows.append((f"Ray, {n} worker(s)", seconds, local_seconds / seconds, phase,
                     local_eval / phase, first, steady, "yes" if same else "NO"))

    # a driver killed halfway, then resumed
    out = os.path.join(folder, "killed")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sleep",
                             str(args.sleep), "--child", cluster.address, out])
    record = os.path.join(out, "evaluations.json")
    while recorded(record) < total // 2 and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = recorded(record)
    evaluator = evaluators.Ray(address=cluster.address, num_workers=2)
    result, resume_seconds = analyze(out, evaluator, resume=True)
    same = tables(out) == tables(os.path.join(folder, "local"))
    rows.append((f"resume after SIGKILL ({done_before} of {total} kept), 2 workers",
                 resume_seconds, None, evaluation_seconds(result), None,
                 evaluator.last_sweep["first_result_seconds"], None, "yes" if same else "NO"))

    print(f"\nRay two-node cluster start + connect: {cluster_seconds:.1f} s")
    print("wall: the whole analyze (calibration and the analyses without evaluations, which "
          "run on the driver, included); evaluations: from the sweep's start (Ray start-up "
          "included) to its end")
    print("steady: local seconds per evaluation over Ray's after its first result "
          "(every worker up)")
    print(f"{'run':<50} {'wall s':>7} {'speedup':>8} {'evals s':>8} {'speedup':>8} "
          f"{'1st result s':>12} {'steady':>7} {'same tables':>11}")

    def num(v, unit=""):
        return "" if v is None else f"{v:.2f}{unit}" if unit else f"{v:.1f}"

    for name, seconds, speedup, phase, phase_speedup, first, steady, same in rows:
        print(f"{name:<50} {seconds:7.1f} {num(speedup, 'x'):>8} {phase:8.1f} "
              f"{num(phase_speedup, 'x'):>8} {num(first):>12} {num(steady, 'x'):>7} "
              f"{same:>11}")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
