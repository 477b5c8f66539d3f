"""The smallest address-space limit (`ulimit -v`) at which PTQ returns the model, with
and without logging, found by bisection in fresh subprocesses, both modes stepped
interleaved (one step of each per round) so machine load hits both alike.

A run "returns" when the child prints MODEL_RETURNED (PTQ gave the model back;
logging may have degraded with a warning); any other end (MemoryError, SIGSEGV,
glibc's "cannot allocate memory for thread-local data" abort) is a failure.
Bisection assumes a run that returns under a limit returns under any larger one.

Models: "case" (../shared/cases/23: 4 Conv2D(64) at 32x32, 512 samples) and
"mobilenet" (keras.applications.MobileNetV2, alpha 0.35, 96x96, weights=None,
256 samples).

    python benchmarks/memory_limit.py --model case --low 1.0 --high 4.0
    # case  no logging 1.62 GiB  logging 1.70 GiB  ratio 1.049

The ratio logging / no logging is the figure to keep within 1.10.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import os, sys; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, mct_logger
model_kind, log = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
if model_kind == "case":
    x = rng.random((512, 32, 32, 3), dtype=np.float32)
    inp = keras.Input((32, 32, 3)); h = inp
    for i in range(4):
        h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name=f"c{i}")(h)
    m = keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h)),
                    name="ul")
else:
    x = rng.random((256, 96, 96, 3), dtype=np.float32)
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
mct_logger.set_log_folder(None if log == "none" else log)
q, info = mct_logger.keras_post_training_quantization(m, x)
print("MODEL_RETURNED", flush=True)
'''


def returns(model: str, logging: bool, gib: float, folder: str, timeout: int) -> tuple:
    """(returned, how it ended) of one PTQ child under `ulimit -v` = `gib` GiB."""
    script = os.path.join(folder, "child.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(CHILD)
    log = tempfile.mkdtemp(dir=folder) if logging else "none"
    kib = int(gib * (1 << 20))
    try:
        p = subprocess.run(["bash", "-c", f"ulimit -v {kib}; exec {sys.executable} {script} "
                            f"{model} {log}"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    ok = "MODEL_RETURNED" in p.stdout
    last = (p.stderr.strip().splitlines() or [""])[-1][:120]
    return ok, f"rc={p.returncode} {'' if ok else last}"


def bisect(model: str, low: float, high: float, tolerance: float, timeout: int) -> dict:
    """{mode: smallest GiB that returned}, both modes stepped in turn."""
    folder = tempfile.mkdtemp(prefix="mct_memory_limit_")
    bounds = {mode: [low, high] for mode in (False, True)}
    while any(hi - lo > tolerance * hi for lo, hi in bounds.values()):
        for logging, (lo, hi) in bounds.items():
            if hi - lo <= tolerance * hi:
                continue
            mid = round((lo + hi) / 2, 3)
            ok, how = returns(model, logging, mid, folder, timeout)
            print(f"  {model} {'logging' if logging else 'no logging'} {mid:.3f} GiB: "
                  f"{'returned' if ok else 'lost'} {how}", flush=True)
            bounds[logging] = [lo, mid] if ok else [mid, hi]
    return {logging: hi for logging, (lo, hi) in bounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("case", "mobilenet"), default="case")
    parser.add_argument("--low", type=float, default=0.5, help="GiB at which PTQ fails")
    parser.add_argument("--high", type=float, default=4.0, help="GiB at which PTQ returns")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative bracket width")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per child")
    args = parser.parse_args()
    found = bisect(args.model, args.low, args.high, args.tolerance, args.timeout)
    print(f"{args.model}  no logging {found[False]:.3f} GiB  logging {found[True]:.3f} GiB  "
          f"ratio {found[True] / found[False]:.3f}", flush=True)


if __name__ == "__main__":
    main()
