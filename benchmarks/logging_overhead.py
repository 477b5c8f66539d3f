"""Cost of logging: the PTQ speed job with and without set_log_folder, interleaved.

MobileNetV2 (alpha 0.35, 96x96, weights=None), 256 random samples in batches of 32,
default config. For reference, MCT 2.6.1 on this job: 15.6 s without logging,
19.8 s with (ratio 1.27), 14 MB of logs.
Run: python benchmarks/logging_overhead.py [--repeats 3]
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import mct_logger  # noqa: E402
from mobilenet_job import mobilenet_job  # noqa: E402
from mct_logger.tensorboard import events  # noqa: E402
from mct_logger.tensorboard import similarity_plots  # noqa: E402

MCT_WITH_LOGGING = 19.8
MCT_LOG_MB = 14.0


def folder_megabytes(path: str) -> float:
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
    return total / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, data = mobilenet_job()
    mct_logger.keras_post_training_quantization(model, data[:32])  # warm-up: imports, tracing

    without, with_logging, similarity, images, sizes = [], [], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        mct_logger.keras_post_training_quantization(model, data)
        without.append(time.perf_counter() - start)

        folder = tempfile.mkdtemp(prefix="mct_logs_")
        mct_logger.set_log_folder(folder)
        try:
            start = time.perf_counter()
            _, info = mct_logger.keras_post_training_quantization(model, data)
            with_logging.append(time.perf_counter() - start)
        finally:
            mct_logger.set_log_folder(None)
        sizes.append(folder_megabytes(folder))
        shutil.rmtree(folder)
        result = info.stage_results["similarity_analysis"]
        start = time.perf_counter()  # the images' rendering, as the listener does it
        plot = similarity_plots.SamplePlot(result)
        for sample in range(result.num_samples):
            plot.png(sample)
        events.figure_png(similarity_plots.summary_figure(result))
        images.append(time.perf_counter() - start)
        similarity.append(info.stage_seconds["similarity_analysis"])

    best_without, best_with = min(without), min(with_logging)
    print(f"\n{'':34}{'seconds':>10}")
    print(f"{'PTQ without logging (fastest)':34}{best_without:>10.2f}")
    print(f"{'PTQ with set_log_folder (fastest)':34}{best_with:>10.2f}")
    print(f"{'ratio with / without':34}{best_with / best_without:>10.2f}")
    print(f"{'similarity stage (compute)':34}{min(similarity):>10.2f}")
    print(f"{'similarity images (render 21)':34}{min(images):>10.2f}")
    print(f"{'log folder size (MB)':34}{min(sizes):>10.2f}")
    print(f"all runs without: {', '.join(f'{t:.2f}' for t in without)}; "
          f"with: {', '.join(f'{t:.2f}' for t in with_logging)}")
    print(f"vs MCT with logging ({MCT_WITH_LOGGING} s): {best_with / MCT_WITH_LOGGING:.2f} (aim < 0.4); "
          f"log size vs MCT ({MCT_LOG_MB} MB): {min(sizes) / MCT_LOG_MB:.2f} (aim < 7 MB)")


if __name__ == "__main__":
    main()
