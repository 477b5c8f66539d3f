"""PTQ wall time per stage: MobileNetV2 (alpha 0.35, 96x96), 256 random samples in batches of 32.

For reference, MCT 2.6.1 (TF 2.15) takes about 15.6 s for this job on the project's
2-core machines. Run: python benchmarks/ptq_speed.py [--repeats 3]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import mct_logger  # noqa: E402
from mobilenet_job import mobilenet_job  # noqa: E402

MCT_SECONDS = 15.6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, data = mobilenet_job()
    config = mct_logger.QuantizationConfig(batch_size=32)
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, info = mct_logger.keras_post_training_quantization(model, data, config)
        runs.append((time.perf_counter() - start, info.stage_seconds))
    total, stages = min(runs, key=lambda r: r[0])
    print(f"\n{'stage':<28}{'seconds':>10}")
    for stage, seconds in stages.items():
        print(f"{stage:<28}{seconds:>10.2f}")
    print(f"{'total (fastest of ' + str(args.repeats) + ')':<28}{total:>10.2f}")
    print(f"{'all runs':<28}{', '.join(f'{t:.2f}' for t, _ in runs):>10}")
    print(f"ratio to MCT 2.6.1 ({MCT_SECONDS} s): {total / MCT_SECONDS:.2f} (aim < 0.33)")


if __name__ == "__main__":
    main()
